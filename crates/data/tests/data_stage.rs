//! The data stage on small fixtures written by the tests: counts, formats,
//! up-to-date detection, and every bad input with its message.

use std::path::{Path, PathBuf};

use polars::prelude::*;
use tp06_artifact::hub::Hub;
use tp06_artifact::{Manifest, RunDir, Stage, StageContext};
use tp06_data::{Article, Config, DataError, DataStats, FilterMode};

fn write(dir: &Path, name: &str, content: impl AsRef<[u8]>) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, content).unwrap();
    path
}

fn jsonl(rows: &[(&str, &str)]) -> String {
    rows.iter().map(|(t, c)| serde_json::json!({"title": t, "content": c}).to_string() + "\n").collect()
}

/// A corpus with the filter's edge cases: case, NFD accents, ♀, dots, spaces,
/// a title that only starts with a name, and a duplicate.
const CORPUS: &[(&str, &str)] = &[
    ("Pikachu", "Pikachu est un Pokémon de type Électrik."),
    ("BULBIZARRE", "Bulbizarre est un Pokémon de type Plante et Poison."),
    ("E\u{301}voli", "Évoli est un Pokémon de type Normal."),
    ("Nidoran♀", "Nidoran♀ est un Pokémon de type Poison."),
    ("M. Mime", "M. Mime est un Pokémon de type Psy et Fée."),
    ("Mime Jr.", "Mime Jr. est un Pokémon bébé."),
    ("Carapuce à O", "Un objet en forme de Carapuce."),
    ("Charge", "Charge est une capacité de type Normal."),
    ("Bourg Palette", "Bourg Palette est un lieu de Kanto."),
    ("pikachu", "Un doublon du titre Pikachu."),
];

const NAMES: &str = "Pikachu\nBulbizarre\nÉvoli\nNidoran♀\nM. Mime\nMime Jr.\nCarapuce\nMew\n";

fn config(articles: &Path, names: &Path, filter: FilterMode, valid_fraction: f64) -> Config {
    Config {
        articles: tp06_artifact::Source::Local(articles.to_path_buf()),
        names: tp06_artifact::Source::Local(names.to_path_buf()),
        split: "train".into(),
        filter,
        valid_fraction,
        seed: 7,
    }
}

fn stats(manifest: &Manifest) -> DataStats {
    serde_json::from_value(manifest.stats.clone()).unwrap()
}

fn run(dir: &Path, config: &Config) -> Result<tp06_artifact::StageReport, DataError> {
    tp06_data::run(&StageContext::new(&RunDir::new(dir.join("run")), &Hub::from_env()), config)
}

#[test]
fn filter_counts_on_edge_cases() {
    let dir = tempfile::tempdir().unwrap();
    let articles = write(dir.path(), "a.jsonl", jsonl(CORPUS));
    let names = write(dir.path(), "names.txt", NAMES);

    let exact = run(dir.path(), &config(&articles, &names, FilterMode::Exact, 0.0)).unwrap();
    let s = stats(&exact.manifest);
    // Kept: Pikachu, BULBIZARRE, Nidoran♀, M. Mime, Mime Jr. (the NFD Évoli is not
    // equal to the NFC name; `pikachu` is a duplicate of `Pikachu`).
    assert_eq!((s.total, s.kept, s.excluded, s.duplicates), (10, 5, 4, 1));
    assert_eq!(s.kept_titles, ["Pikachu", "BULBIZARRE", "Nidoran♀", "M. Mime", "Mime Jr."]);
    assert_eq!(s.names_without_article, 3, "Évoli, Carapuce and Mew have no kept article");
    assert!(s.excluded_titles.contains(&"Carapuce à O".to_string()));

    let normalized = run(dir.path(), &config(&articles, &names, FilterMode::Normalized, 0.0)).unwrap();
    assert_eq!(stats(&normalized.manifest).kept, 6, "NFC matching recovers Évoli");

    let train = tp06_data::read_articles_artifact(&dir.path().join("run/data/train.parquet")).unwrap();
    assert_eq!(train.len(), 6);
    assert_eq!(train[2], Article { title: "E\u{301}voli".into(), content: CORPUS[2].1.into() });
}

#[test]
fn every_format_reads_the_same_table() {
    let dir = tempfile::tempdir().unwrap();
    let articles: Vec<Article> =
        CORPUS.iter().map(|(t, c)| Article { title: t.to_string(), content: c.to_string() }).collect();
    let parquet = dir.path().join("a.parquet");
    tp06_data::write_articles(&parquet, &articles).unwrap();
    let mut csv = String::from("id,title,content\n");
    for (i, (t, c)) in CORPUS.iter().enumerate() {
        csv += &format!("{i},\"{t}\",\"{}\"\n", c.replace('"', "\"\""));
    }
    let csv = write(dir.path(), "a.csv", csv);
    let json = write(dir.path(), "a.jsonl", jsonl(CORPUS));
    for path in [&parquet, &csv, &json] {
        assert_eq!(tp06_data::read_articles(std::slice::from_ref(path)).unwrap(), articles, "{}", path.display());
    }
    // A directory stands for its parquet files.
    let sub = dir.path().join("hub-like/default/train");
    std::fs::create_dir_all(&sub).unwrap();
    tp06_data::write_articles(&sub.join("0000.parquet"), &articles[..4]).unwrap();
    tp06_data::write_articles(&sub.join("0001.parquet"), &articles[4..]).unwrap();
    let names = write(dir.path(), "names.txt", NAMES);
    let report = run(dir.path(), &config(&dir.path().join("hub-like"), &names, FilterMode::Exact, 0.0)).unwrap();
    assert_eq!(stats(&report.manifest).total, 10);
    // Names from parquet and jsonl too.
    let names_parquet = dir.path().join("names.parquet");
    let list: Vec<String> = NAMES.lines().map(String::from).collect();
    tp06_data::write_names(&names_parquet, &list).unwrap();
    assert_eq!(tp06_data::read_names(&[names_parquet]).unwrap(), list);
}

#[test]
fn validation_split_and_up_to_date_detection() {
    let dir = tempfile::tempdir().unwrap();
    let articles = write(dir.path(), "a.jsonl", jsonl(CORPUS));
    let names = write(dir.path(), "names.txt", NAMES);
    let cfg = config(&articles, &names, FilterMode::Normalized, 0.34);

    let first = run(dir.path(), &cfg).unwrap();
    assert!(!first.up_to_date);
    let s = stats(&first.manifest);
    assert_eq!((s.train, s.valid), (4, 2));
    let outputs: Vec<_> = first.manifest.outputs.iter().map(|o| o.path.as_str()).collect();
    assert_eq!(outputs, ["train.parquet", "names.parquet", "valid.parquet"]);

    let again = run(dir.path(), &cfg).unwrap();
    assert!(again.up_to_date, "same config and inputs: nothing to do");
    assert_eq!(again.manifest, first.manifest);

    // Same seed, other run directory: identical artifacts.
    let other =
        tp06_data::run(&StageContext::new(&RunDir::new(dir.path().join("run2")), &Hub::from_env()), &cfg).unwrap();
    assert_eq!(other.manifest.outputs, first.manifest.outputs);

    // A changed input file, a changed config value, or --force: the stage runs again.
    write(dir.path(), "names.txt", format!("{NAMES}Mewtwo\n"));
    assert!(!run(dir.path(), &cfg).unwrap().up_to_date);
    let mut changed = cfg.clone();
    changed.valid_fraction = 0.0;
    let no_split = run(dir.path(), &changed).unwrap();
    assert!(!no_split.up_to_date);
    assert!(!dir.path().join("run/data/valid.parquet").exists(), "no stale validation file is left");
    let forced = tp06_data::run(
        &StageContext { force: true, ..StageContext::new(&RunDir::new(dir.path().join("run")), &Hub::from_env()) },
        &changed,
    )
    .unwrap();
    assert!(!forced.up_to_date);

    // A tampered output makes the stage stale for its readers.
    write(dir.path(), "run/data/train.parquet", b"garbage");
    let err = tp06_artifact::UpstreamCheck::require(&RunDir::new(dir.path().join("run")), Stage::Data).unwrap_err();
    assert!(err.to_string().contains("cargo xtask data"), "{err}");
}

/// Writes a parquet file from polars columns.
fn parquet_with(dir: &Path, name: &str, columns: Vec<Column>) -> PathBuf {
    let path = dir.join(name);
    let height = columns[0].len();
    let mut df = DataFrame::new(height, columns).unwrap();
    ParquetWriter::new(std::fs::File::create(&path).unwrap()).finish(&mut df).unwrap();
    path
}

/// Runs the stage on `articles` and `names` and returns its error message.
fn error_of(dir: &Path, articles: &Path, names: &Path) -> String {
    let err = run(dir, &config(articles, names, FilterMode::Exact, 0.0)).unwrap_err();
    assert!(!dir.join("run/data/manifest.json").exists(), "a failed stage leaves no manifest");
    err.to_string()
}

#[test]
fn bad_inputs_get_clear_errors() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let good = write(d, "good.jsonl", jsonl(CORPUS));
    let names = write(d, "names.txt", NAMES);
    let valid_parquet = d.join("valid.parquet");
    let articles: Vec<Article> =
        CORPUS.iter().map(|(t, c)| Article { title: t.to_string(), content: c.to_string() }).collect();
    tp06_data::write_articles(&valid_parquet, &articles).unwrap();
    let bytes = std::fs::read(&valid_parquet).unwrap();

    let cases: Vec<(&str, PathBuf, PathBuf, Vec<&str>)> = vec![
        ("missing file", d.join("nope.parquet"), names.clone(), vec!["data.articles", "cannot open", "nope.parquet"]),
        (
            "garbage parquet",
            write(d, "garbage.parquet", b"not a parquet file at all"),
            names.clone(),
            vec!["data.articles", "cannot read", "garbage.parquet"],
        ),
        (
            "truncated parquet",
            write(d, "truncated.parquet", &bytes[..bytes.len() / 2]),
            names.clone(),
            vec!["data.articles", "cannot read", "truncated.parquet"],
        ),
        (
            "unsupported extension",
            write(d, "a.xlsx", b"x"),
            names.clone(),
            vec!["data.articles", "not a supported table"],
        ),
        (
            "missing column (parquet)",
            parquet_with(
                d,
                "notitle.parquet",
                vec![Column::new("name".into(), ["a"]), Column::new("content".into(), ["b"])],
            ),
            names.clone(),
            vec!["data.articles", "no column `title`", "columns: name, content", "`title` and `content`"],
        ),
        (
            "non-string column",
            parquet_with(
                d,
                "ints.parquet",
                vec![Column::new("title".into(), [1i64, 2]), Column::new("content".into(), ["a", "b"])],
            ),
            names.clone(),
            vec!["data.articles", "column `title`", "expected strings"],
        ),
        (
            "null values",
            parquet_with(
                d,
                "nulls.parquet",
                vec![Column::new("title".into(), [Some("Pikachu"), None]), Column::new("content".into(), ["a", "b"])],
            ),
            names.clone(),
            vec!["data.articles", "null value", "row 1"],
        ),
        (
            "missing column (jsonl)",
            write(d, "notitle.jsonl", "{\"name\": \"x\", \"content\": \"y\"}\n"),
            names.clone(),
            vec!["no column `title`", "columns: name, content"],
        ),
        (
            "wrong type (jsonl)",
            write(d, "num.jsonl", "{\"title\": \"Pikachu\", \"content\": \"a\"}\n{\"title\": 3, \"content\": \"b\"}\n"),
            names.clone(),
            vec!["line 2", "`title` is a number"],
        ),
        (
            "bad json",
            write(d, "bad.jsonl", "{\"title\": \"Pikachu\", \"content\": \"a\"}\n{\"title\": \n"),
            names.clone(),
            vec!["line 2", "not valid JSON"],
        ),
        (
            "non-UTF-8 jsonl",
            write(d, "latin1.jsonl", b"{\"title\": \"Pok\xe9mon\", \"content\": \"a\"}\n"),
            names.clone(),
            vec!["line 1", "UTF-8"],
        ),
        ("empty corpus", write(d, "empty.jsonl", "\n\n"), names.clone(), vec!["data.articles", "holds no articles"]),
        ("empty names", good.clone(), write(d, "blank.txt", "\n  \n"), vec!["data.names", "holds no names"]),
        (
            "non-UTF-8 names",
            good.clone(),
            write(d, "latin1.txt", b"Pikachu\nSalam\xe8che\n"),
            vec!["data.names", "line 2", "UTF-8"],
        ),
        (
            "names without name column",
            good.clone(),
            write(d, "names.jsonl", "{\"nom\": \"Pikachu\"}\n"),
            vec!["data.names", "no column `name`", "`name`"],
        ),
        (
            "nothing kept",
            good.clone(),
            write(d, "other.txt", "Goupix\nFeunard\n"),
            vec!["no article was kept", "data.names", "\"Pikachu\"", "\"Goupix\""],
        ),
    ];
    for (label, articles, names, expected) in cases {
        let message = error_of(d, &articles, &names);
        for fragment in expected {
            assert!(message.contains(fragment), "{label}: `{fragment}` not in: {message}");
        }
        assert_eq!(message.lines().count(), 1, "{label}: one-line message: {message}");
    }
}
