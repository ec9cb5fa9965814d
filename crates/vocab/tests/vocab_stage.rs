//! The vocab stage against transformers (`fixtures/make_vocab_fixtures.py`) and
//! HF `tokenizers` (`fixtures/check_tokenizer.py`, when Python is present).

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;
use tp06_artifact::hub::Hub;
use tp06_artifact::{RunDir, Source, Stage, StageContext, UpstreamCheck};
use tp06_vocab::{AddNames, Config, Tok, VocabStats};

fn repo(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..").join(path)
}

fn fixture() -> Value {
    serde_json::from_str(&std::fs::read_to_string(repo("fixtures/vocab/demo.json")).unwrap()).unwrap()
}

fn demo_names() -> Vec<String> {
    std::fs::read_to_string(repo("data/demo/names.txt")).unwrap().lines().map(String::from).collect()
}

fn ids(value: &Value) -> Vec<u32> {
    value.as_array().unwrap().iter().map(|v| v.as_u64().unwrap() as u32).collect()
}

fn config(add_names: AddNames) -> Config {
    Config { add_names }
}

/// Runs the data stage on the demo corpus, then the vocab stage.
fn demo_run(dir: &Path, add_names: AddNames) -> (RunDir, tp06_artifact::StageReport) {
    let run = RunDir::new(dir);
    let data = tp06_data::Config {
        articles: Source::Local(repo("data/demo/articles.jsonl")),
        names: Source::Local(repo("data/demo/names.txt")),
        split: "train".into(),
        filter: tp06_data::FilterMode::Normalized,
        valid_fraction: 0.0,
        seed: 1,
    };
    tp06_data::run(&StageContext::new(&run, &Hub::from_env()), &data).unwrap();
    let report = tp06_vocab::run(
        &StageContext::new(&run, &Hub::from_env()),
        &config(add_names),
        &Source::Local(repo("data/demo/base")),
    )
    .unwrap();
    (run, report)
}

#[test]
fn base_tokenizer_ids_equal_transformers() {
    let tok = Tok::from_dir(&repo("data/demo/base")).unwrap();
    let expected = fixture();
    assert_eq!(tok.vocab_size() as u64, expected["vocab_size"].as_u64().unwrap());
    for case in expected["encodings"].as_array().unwrap() {
        let text = case["text"].as_str().unwrap();
        let ours = tok.encode(text).unwrap();
        assert_eq!(ours, ids(&case["ids"]), "{text:?}");
        assert_eq!(tok.decode(&ours, false).unwrap(), text, "byte-level round trip");
    }
    for case in expected["names"].as_array().unwrap() {
        let name = case["name"].as_str().unwrap();
        assert_eq!(tok.encode(name).unwrap(), ids(&case["start"]), "{name}");
        assert_eq!(tok.encode(&format!(" {name}")).unwrap(), ids(&case["space"]), " {name}");
    }
}

#[test]
fn course_extension_reproduces_add_tokens() {
    let base = Tok::from_dir(&repo("data/demo/base")).unwrap();
    let expected = &fixture()["course"];
    let dir = tempfile::tempdir().unwrap();
    let (run, report) = demo_run(dir.path(), AddNames::Course);
    let stats: VocabStats = serde_json::from_value(report.manifest.stats.clone()).unwrap();
    assert_eq!(stats.added as u64, expected["added"].as_u64().unwrap(), "the course's added-token count");
    assert_eq!(stats.vocab_size as u64, expected["vocab_size"].as_u64().unwrap());

    let tok = Tok::from_dir(&run.stage_dir(Stage::Vocab)).unwrap();
    for token in expected["tokens"].as_array().unwrap() {
        let content = token["content"].as_str().unwrap();
        assert_eq!(tok.token_to_id(content), Some(token["id"].as_u64().unwrap() as u32), "{content}");
    }
    for case in expected["encodings"].as_array().unwrap() {
        let text = case["text"].as_str().unwrap();
        assert_eq!(tok.encode(text).unwrap(), ids(&case["ids"]), "{text:?}");
    }
    // transformers decodes accented added tokens wrongly (the course's defect);
    // our decoder gives the text back.
    for case in expected["decoded"].as_array().unwrap() {
        let text = case["text"].as_str().unwrap();
        assert_eq!(tok.decode(&tok.encode(text).unwrap(), false).unwrap(), text);
    }
    assert!(expected["decoded"].as_array().unwrap().iter().any(|c| c["decoded"].as_str().unwrap().contains('�')));
    // The course's other defects are kept: after a space the name is still split,
    // and the token matches inside longer words.
    let salameche = tok.token_to_id("Salamèche").unwrap();
    let spaced = tok.encode(" Salamèche").unwrap();
    assert_eq!(spaced.len(), 2, "course: Ġ + the added token");
    assert_eq!(spaced[1], salameche);
    assert_ne!(
        tok.encode("Abonnement").unwrap(),
        base.encode("Abonnement").unwrap(),
        "course: `Abo` matches inside `Abonnement`"
    );
}

#[test]
fn recommended_extension_makes_every_name_one_token_that_decodes_exactly() {
    let base = Tok::from_dir(&repo("data/demo/base")).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (run, report) = demo_run(dir.path(), AddNames::Recommended);
    let stats: VocabStats = serde_json::from_value(report.manifest.stats.clone()).unwrap();
    let names = demo_names();
    let tok = Tok::from_dir(&run.stage_dir(Stage::Vocab)).unwrap();
    assert!(tp06_vocab::round_trip_failures(&tok, &names).unwrap().is_empty());
    assert_eq!(stats.collateral_words, 0, "no other word changes its tokens");
    assert_eq!(stats.added, stats.split_start + stats.split_space);
    assert!(stats.tokens_per_article_after < stats.tokens_per_article_before);

    // Never inside a longer word.
    for text in ["Abonnement", " Abonnement", "L'Abonnement", "abonnement", "Pikachus", "Mewtwoïde"] {
        assert_eq!(tok.encode(text).unwrap(), base.encode(text).unwrap(), "{text:?}");
    }
    assert_eq!(tok.encode("Abo est").unwrap()[0], tok.token_to_id("Abo").unwrap());
    // Exactly: accents, symbols, spaces.
    for name in
        ["Salamèche", "Évoli", "Mélofée", "Nidoran♀", "Nidoran♂", "M. Mime", "Mime Jr.", "Type:0", "Ho-Oh", "Porygon-Z"]
    {
        for text in [format!("{name} est un Pokémon."), format!("Le Pokémon {name}, rare."), format!("({name})")] {
            let ids = tok.encode(&text).unwrap();
            assert_eq!(tok.decode(&ids, false).unwrap(), text);
            assert_eq!(tok.inner().decode(&ids, false).unwrap(), text, "the HF decoder itself, not only ours");
        }
    }
    // Added tokens are recorded with the pieces they replace.
    let added = tp06_vocab::read_added(&run.file(Stage::Vocab, tp06_vocab::outputs::ADDED_TOKENS)).unwrap();
    let salameche = added.iter().find(|a| a.text == " Salamèche").unwrap();
    assert_eq!(salameche.pieces, base.encode(" Salamèche").unwrap());
    assert_eq!(salameche.pieces.len(), 3);
    assert_eq!(tok.encode(" Salamèche").unwrap(), [salameche.id]);

    if let Some(python) = tp06_testkit::python_with(&["transformers", "tokenizers"], "the HF tokenizer round trip") {
        let out = Command::new(python)
            .arg(repo("fixtures/check_tokenizer.py"))
            .arg(run.stage_dir(Stage::Vocab))
            .arg(repo("data/demo/names.txt"))
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

#[test]
fn name_statistics_match_transformers() {
    let expected = fixture();
    let dir = tempfile::tempdir().unwrap();
    let (_, report) = demo_run(dir.path(), AddNames::None);
    let stats: VocabStats = serde_json::from_value(report.manifest.stats.clone()).unwrap();
    let names = expected["names"].as_array().unwrap();
    let single = |key: &str| names.iter().filter(|n| n[key].as_array().unwrap().len() == 1).count();
    assert_eq!(stats.names, names.len());
    assert_eq!(stats.single_start, single("start"));
    assert_eq!(stats.single_space, single("space"));
    assert_eq!(stats.added, 0);
    let max_pieces = names.iter().map(|n| n["start"].as_array().unwrap().len()).max().unwrap();
    assert_eq!(stats.most_split[0].start.len(), max_pieces);
    assert_eq!(stats.start_histogram.values().sum::<usize>(), names.len());
}

#[test]
fn stage_is_skipped_when_up_to_date_and_reruns_when_data_changes() {
    let dir = tempfile::tempdir().unwrap();
    let (run, _) = demo_run(dir.path(), AddNames::Recommended);
    let base = Source::Local(repo("data/demo/base"));
    let again =
        tp06_vocab::run(&StageContext::new(&run, &Hub::from_env()), &config(AddNames::Recommended), &base).unwrap();
    assert!(again.up_to_date);
    // Re-running data (another seed → another manifest) makes vocab stale, and it runs again.
    let data = tp06_data::Config {
        articles: Source::Local(repo("data/demo/articles.jsonl")),
        names: Source::Local(repo("data/demo/names.txt")),
        split: "train".into(),
        filter: tp06_data::FilterMode::Normalized,
        valid_fraction: 0.2,
        seed: 1,
    };
    tp06_data::run(&StageContext::new(&run, &Hub::from_env()), &data).unwrap();
    assert!(UpstreamCheck::require(&run, Stage::Vocab).is_err());
    let rerun =
        tp06_vocab::run(&StageContext::new(&run, &Hub::from_env()), &config(AddNames::Recommended), &base).unwrap();
    assert!(!rerun.up_to_date);
}

#[test]
fn bad_tokenizer_files_get_clear_errors() {
    let tmp = tempfile::tempdir().unwrap();
    let copy = |name: &str| -> PathBuf {
        let dir = tmp.path().join(name);
        std::fs::create_dir_all(&dir).unwrap();
        for file in ["vocab.json", "merges.txt", "special_tokens_map.json", "config.json"] {
            std::fs::copy(repo("data/demo/base").join(file), dir.join(file)).unwrap();
        }
        dir
    };
    let message = |dir: &Path| Tok::from_dir(dir).unwrap_err().to_string();

    let dir = copy("none");
    std::fs::remove_file(dir.join("vocab.json")).unwrap();
    assert!(message(&dir).contains("has no tokenizer"), "{}", message(&dir));

    let dir = copy("bad-vocab");
    std::fs::write(dir.join("vocab.json"), "{\"a\": 0,").unwrap();
    let m = message(&dir);
    assert!(m.contains("vocab.json") && m.contains("not valid JSON"), "{m}");

    let dir = copy("bad-merges");
    std::fs::write(dir.join("merges.txt"), "#version: 0.2\nzz qq\n").unwrap();
    let m = message(&dir);
    assert!(m.contains("merges.txt") && m.contains("line 2") && m.contains("not in vocab.json"), "{m}");

    let dir = copy("bad-tokenizer-json");
    std::fs::write(dir.join("tokenizer.json"), "{\"version\": \"1.0\"}").unwrap();
    let m = message(&dir);
    assert!(m.contains("tokenizer.json") && m.contains("not a valid tokenizer"), "{m}");

    let dir = copy("non-utf8-merges");
    std::fs::write(dir.join("merges.txt"), b"#version: 0.2\n\xff\xfe a\n").unwrap();
    let m = message(&dir);
    assert!(m.contains("merges.txt"), "{m}");
}
