//! The seven sections, one per notebook section, from the run's artifacts.

use serde::de::DeserializeOwned;
use serde_json::Value;
use tp06_artifact::{Manifest, RunDir, Stage};
use tp06_data::DataStats;
use tp06_model::ModelStats;
use tp06_sample::explore::{Distribution, SamplingDemo, SmartInit, TopToken};
use tp06_sample::{SampleRecord, SampleStats};
use tp06_train::TrainStats;
use tp06_train::metrics::Record;
use tp06_vocab::{AddedName, Form, Tok, VocabStats};

use crate::charts::{self, PALETTE, Part, Series, group_digits};
use crate::doc::{Block, Report, Section};
use crate::rows;
use crate::{Lang, explore_dir};

/// The course's own figures (`../shared/reference/tp06.md`, the notebook §6).
const COURSE_ARTICLES: &str = "≈ 15 000";
const COURSE_KEPT: &str = "≈ 1 200";
const COURSE_RATIO: &str = "≈ 8 %";
const COURSE_STEPS_PER_EPOCH: &str = "75";
const COURSE_TOTAL_STEPS: &str = "≈ 750";

struct Ctx<'a> {
    run: &'a RunDir,
    lang: Lang,
}

/// A stage's manifest and its typed statistics.
struct Stats<T> {
    manifest: Manifest,
    stats: T,
}

impl Ctx<'_> {
    fn t<'a>(&self, fr: &'a str, en: &'a str) -> &'a str {
        self.lang.t(fr, en)
    }

    fn stage<T: DeserializeOwned>(&self, stage: Stage) -> Result<Stats<T>, String> {
        let manifest =
            Manifest::load(self.run, stage).map_err(|e| format!("{} `{stage}` : {e}", self.t("Étape", "Stage")))?;
        let stats = serde_json::from_value(manifest.stats.clone())
            .map_err(|e| format!("{}/manifest.json: stats: {e} — {}", stage, stage.rerun_hint(self.run.root())))?;
        Ok(Stats { manifest, stats })
    }

    fn num(&self, v: f64, digits: usize) -> String {
        let s = format!("{v:.digits$}");
        match self.lang {
            Lang::Fr => s.replace('.', ","),
            Lang::En => s,
        }
    }

    fn pct(&self, v: f64) -> String {
        format!("{} %", self.num(100.0 * v, 1))
    }

    fn explore_hint(&self, demo: &str) -> String {
        format!("cargo xtask explore {demo} --run-dir {}", self.run.root().display())
    }
}

fn config_str(manifest: &Manifest, path: &[&str]) -> Option<String> {
    let mut v = &manifest.config;
    for key in path {
        v = v.get(key)?;
    }
    Some(match v {
        Value::String(s) => s.clone(),
        Value::Null => "none".into(),
        other => other.to_string(),
    })
}

fn read_json<T: DeserializeOwned>(path: &std::path::Path) -> Option<T> {
    serde_json::from_str(&std::fs::read_to_string(path).ok()?).ok()
}

fn table(head: &[&str], rows: Vec<Vec<String>>) -> Block {
    Block::Table { head: head.iter().map(|h| h.to_string()).collect(), rows }
}

fn row(cells: &[&dyn std::fmt::Display]) -> Vec<String> {
    cells.iter().map(|c| c.to_string()).collect()
}

/// A token's text with its spaces visible.
fn visible(text: &str) -> String {
    text.replace(' ', "␣")
}

fn pieces(p: &[String]) -> String {
    p.iter().map(|s| format!("`{}`", s.replace('`', "'"))).collect::<Vec<_>>().join(" ")
}

/// Builds every section.
pub fn build(run: &RunDir, lang: Lang) -> Report {
    let ctx = Ctx { run, lang };
    type Build = fn(&Ctx) -> Result<(Vec<Block>, Vec<String>), String>;
    let specs: [(&str, &str, Build); 7] = [
        ("1. Le dataset", "1. The dataset", dataset),
        ("2. Le filtrage", "2. The filter", filter),
        ("3. Tokenisation et vocabulaire", "3. Tokenisation and vocabulary", tokenisation),
        ("4. Initialisation intelligente des tokens", "4. Smart token initialisation", smart_init),
        ("5. Le gel des couches", "5. Freezing layers", freezing),
        ("6. Les hyperparamètres", "6. Hyper-parameters", hyper_parameters),
        ("7. La génération", "7. Generation", generation),
    ];
    let sections = specs
        .into_iter()
        .enumerate()
        .map(|(i, (fr, en, f))| {
            let (blocks, missing) = match f(&ctx) {
                Ok(done) => done,
                Err(why) => (Vec::new(), vec![why]),
            };
            Section { id: format!("s{}", i + 1), title: lang.t(fr, en).to_string(), blocks, missing }
        })
        .collect();
    let mut subtitle = vec![format!("{} `{}`", lang.t("Répertoire du run :", "Run directory:"), run.root().display())];
    if let Ok(m) = Manifest::load(run, Stage::Train) {
        let env = &m.environment;
        subtitle.push(format!(
            "tp06 {} · backend `{}` · {} {} · seed {}",
            m.tool_version,
            env.get("backend").and_then(Value::as_str).unwrap_or("?"),
            env.get("threads").map(Value::to_string).unwrap_or_else(|| "?".into()),
            lang.t("threads", "threads"),
            env.get("seed").map(Value::to_string).unwrap_or_else(|| "?".into()),
        ));
    }
    Report {
        title: lang.t("TP 06 — rapport d'exploration du run", "TP 06 — exploration report of the run").into(),
        subtitle,
        sections,
    }
}

type Built = Result<(Vec<Block>, Vec<String>), String>;

fn dataset(c: &Ctx) -> Built {
    let d: Stats<DataStats> = c.stage(Stage::Data)?;
    let s = &d.stats;
    let mut b = vec![Block::Para(format!(
        "{} `{}` ; {} `{}`.",
        c.t("Articles lus depuis", "Articles read from"),
        config_str(&d.manifest, &["articles"]).unwrap_or_default(),
        c.t("noms depuis", "names from"),
        config_str(&d.manifest, &["names"]).unwrap_or_default()
    ))];
    b.push(table(
        &[c.t("mesure", "measure"), c.t("valeur", "value")],
        vec![
            row(&[&c.t("articles", "articles"), &group_digits(s.total)]),
            row(&[&c.t("noms de Pokémon", "Pokémon names"), &group_digits(s.names)]),
            row(&[&c.t("doublons retirés", "duplicates removed"), &group_digits(s.duplicates)]),
            row(&[
                &c.t("caractères (articles gardés)", "characters (kept articles)"),
                &group_digits(s.kept_lengths.chars_total),
            ]),
        ],
    ));
    b.push(Block::Para(
        c.t(
            "Titres pris aux positions qu'échantillonne le notebook :",
            "Titles at the positions the notebook samples:",
        )
        .into(),
    ));
    b.push(table(&["#", c.t("titre", "title")], s.sample_titles.iter().map(|(i, t)| row(&[i, t])).collect()));
    b.push(table(
        &[c.t("sorte", "kind"), c.t("exemples de titres", "title examples")],
        vec![
            vec![c.t("Pokémon (gardés)", "Pokémon (kept)").into(), s.kept_titles.join(", ")],
            vec![c.t("autres (exclus)", "other (excluded)").into(), s.excluded_titles.join(", ")],
        ],
    ));
    b.push(Block::Para(format!("{} « {} » :", c.t("Aperçu d'un article", "An article excerpt"), s.kept_example.title)));
    b.push(Block::Pre(s.kept_example.excerpt.clone()));
    Ok((b, vec![]))
}

fn filter(c: &Ctx) -> Built {
    let d: Stats<DataStats> = c.stage(Stage::Data)?;
    let s = &d.stats;
    let mode = config_str(&d.manifest, &["filter"]).unwrap_or_default();
    let mut b = vec![Block::Para(format!(
        "{} `{mode}` {}",
        c.t(
            "Un article est gardé quand son titre est un nom de Pokémon (comparaison",
            "An article is kept when its title is a Pokémon name (comparison"
        ),
        c.t(
            "; `exact` : égalité stricte comme le cours, `normalized` : casse, accents et espaces ignorés).",
            "; `exact`: strict equality as the course, `normalized`: case, accents and spaces ignored).",
        )
    ))];
    b.push(table(
        &[c.t("mesure", "measure"), c.t("valeur", "value")],
        vec![
            row(&[&c.t("articles", "articles"), &group_digits(s.total)]),
            row(&[&c.t("gardés (Pokémon)", "kept (Pokémon)"), &group_digits(s.kept)]),
            row(&[&c.t("exclus", "excluded"), &group_digits(s.excluded)]),
            row(&[&c.t("proportion gardée", "kept ratio"), &c.pct(s.kept_ratio)]),
            row(&[&c.t("noms sans article", "names without an article"), &group_digits(s.names_without_article)]),
            row(&[&c.t("entraînement / validation", "train / validation"), &format!("{} / {}", s.train, s.valid)]),
        ],
    ));
    b.push(Block::Figure {
        file: "filter.svg".into(),
        svg: charts::bar_chart(
            c.t("Articles gardés et exclus", "Kept and excluded articles"),
            "",
            c.t("articles", "articles"),
            &[(c.t("gardés", "kept").into(), s.kept as f64), (c.t("exclus", "excluded").into(), s.excluded as f64)],
        ),
        caption: format!("{} {} / {}", c.t("Filtre :", "Filter:"), s.kept, s.total),
    });
    let train: Option<Stats<TrainStats>> = c.stage(Stage::Train).ok();
    let (spe, total) = match &train {
        Some(t) => (t.stats.steps_per_epoch.to_string(), t.stats.total_steps.to_string()),
        None => ("—".into(), "—".into()),
    };
    b.push(Block::Para(
        c.t("Ce que le cours annonce, à côté de ce run :", "What the course claims, beside this run:").into(),
    ));
    b.push(table(
        &[c.t("mesure", "measure"), c.t("cours (Poképédia)", "course (Poképédia)"), c.t("ce run", "this run")],
        vec![
            row(&[&c.t("articles mélangés", "mixed articles"), &COURSE_ARTICLES, &group_digits(s.total)]),
            row(&[&c.t("articles Pokémon gardés", "Pokémon articles kept"), &COURSE_KEPT, &group_digits(s.kept)]),
            row(&[&c.t("proportion", "ratio"), &COURSE_RATIO, &c.pct(s.kept_ratio)]),
            row(&[&c.t("steps par epoch", "steps per epoch"), &COURSE_STEPS_PER_EPOCH, &spe]),
            row(&[&c.t("steps au total", "total steps"), &COURSE_TOTAL_STEPS, &total]),
        ],
    ));
    let (k, e) = (&s.kept_lengths, &s.excluded_lengths);
    b.push(Block::Para(
        c.t("Contenu d'un article Pokémon et d'un autre :", "Content of a Pokémon article and of another:").into(),
    ));
    b.push(table(
        &[
            c.t("mesure", "measure"),
            c.t("Pokémon (gardés)", "Pokémon (kept)"),
            c.t("autres (exclus)", "other (excluded)"),
        ],
        vec![
            row(&[&c.t("articles", "articles"), &k.count, &e.count]),
            row(&[&c.t("caractères, moyenne", "characters, mean"), &c.num(k.chars_mean, 0), &c.num(e.chars_mean, 0)]),
            row(&[
                &c.t("caractères, médiane", "characters, median"),
                &c.num(k.chars_median, 0),
                &c.num(e.chars_median, 0),
            ]),
            row(&[
                &c.t("caractères, min – max", "characters, min – max"),
                &format!("{} – {}", k.chars_min, k.chars_max),
                &format!("{} – {}", e.chars_min, e.chars_max),
            ]),
            row(&[&c.t("mots, moyenne", "words, mean"), &c.num(k.words_mean, 0), &c.num(e.words_mean, 0)]),
        ],
    ));
    b.push(Block::Para(format!("{} « {} »", c.t("Gardé :", "Kept:"), s.kept_example.title)));
    b.push(Block::Pre(s.kept_example.excerpt.clone()));
    b.push(Block::Para(format!("{} « {} »", c.t("Exclu :", "Excluded:"), s.excluded_example.title)));
    b.push(Block::Pre(s.excluded_example.excerpt.clone()));
    Ok((b, vec![]))
}

fn tokenisation(c: &Ctx) -> Built {
    let v: Stats<VocabStats> = c.stage(Stage::Vocab)?;
    let s = &v.stats;
    let mode = config_str(&v.manifest, &["add_names"]).unwrap_or_default();
    let mut b = vec![Block::Para(c.t(
        "Comment le tokenizer de base découpe les noms, en début de texte (`Pikachu est…`) et après une espace, la forme du texte courant (`… de Pikachu`) :",
        "How the base tokenizer splits the names, at text start (`Pikachu est…`) and after a space, the form of running text (`… de Pikachu`):",
    ).into())];
    let name_rows = |list: &[tp06_vocab::NameStat]| -> Vec<Vec<String>> {
        list.iter()
            .map(|n| {
                vec![
                    n.name.clone(),
                    n.start.len().to_string(),
                    pieces(&n.start),
                    n.space.len().to_string(),
                    pieces(&n.space),
                ]
            })
            .collect()
    };
    let head = [
        c.t("nom", "name"),
        c.t("tokens (début)", "tokens (start)"),
        c.t("pièces", "pieces"),
        c.t("tokens (après espace)", "tokens (after space)"),
        c.t("pièces", "pieces"),
    ];
    b.push(table(&head, name_rows(&s.examples)));
    b.push(Block::Para(c.t("Les noms les plus découpés :", "The most split names:").into()));
    b.push(table(&head, name_rows(&s.most_split[..s.most_split.len().min(6)])));
    b.push(table(
        &[c.t("forme", "form"), c.t("un seul token", "single token"), c.t("découpés", "split"), c.t("noms", "names")],
        vec![
            row(&[&c.t("début de texte", "text start"), &s.single_start, &s.split_start, &s.names]),
            row(&[&c.t("après une espace", "after a space"), &s.single_space, &s.split_space, &s.names]),
        ],
    ));
    let hist = |h: &std::collections::BTreeMap<usize, usize>| {
        h.iter().map(|(k, v)| (k.to_string(), *v as f64)).collect::<Vec<_>>()
    };
    b.push(Block::Figure {
        file: "tokens-per-name.svg".into(),
        svg: charts::bar_chart(
            c.t(
                "Tokens par nom (après une espace, tokenizer de base)",
                "Tokens per name (after a space, base tokenizer)",
            ),
            c.t("tokens", "tokens"),
            c.t("noms", "names"),
            &hist(&s.space_histogram),
        ),
        caption: c.t("Répartition des noms selon leur nombre de tokens.", "Names by number of tokens.").into(),
    });
    b.push(Block::Para(format!("{} `{mode}` :", c.t("Tokens ajoutés, mode", "Tokens added, mode"))));
    b.push(table(
        &[c.t("mesure", "measure"), c.t("valeur", "value")],
        vec![
            row(&[&c.t("tokens ajoutés", "tokens added"), &group_digits(s.added)]),
            row(&[&c.t("… forme début de texte", "… text-start form"), &group_digits(s.added_start)]),
            row(&[&c.t("… forme après espace", "… after-a-space form"), &group_digits(s.added_space)]),
            row(&[
                &c.t("vocabulaire avant → après", "vocabulary before → after"),
                &format!("{} → {}", group_digits(s.base_vocab_size), group_digits(s.vocab_size)),
            ]),
            row(&[
                &c.t("autres mots dont les tokens changent", "other words whose tokens change"),
                &s.collateral_words,
            ]),
            row(&[
                &c.t("tokens par article, avant → après", "tokens per article, before → after"),
                &format!("{} → {}", c.num(s.tokens_per_article_before, 1), c.num(s.tokens_per_article_after, 1)),
            ]),
        ],
    ));
    if s.added > 0 && s.added_space == 0 {
        b.push(Block::Note(c.t(
            "Défaut du cours : seuls les noms en début de texte sont ajoutés ; dans le texte courant le nom suit une espace (` Pikachu`) et reste découpé comme avant.",
            "Course defect: only the text-start forms are added; in running text a name follows a space (` Pikachu`) and is still split as before.",
        ).into()));
    }
    if let Some(added) = tp06_vocab::read_added(&c.run.stage_dir(Stage::Vocab).join(tp06_vocab::outputs::ADDED_TOKENS))
        .ok()
        .filter(|a| !a.is_empty())
    {
        b.push(table(
            &["id", c.t("texte", "text"), c.t("forme", "form"), c.t("pièces remplacées", "pieces replaced")],
            added
                .iter()
                .take(8)
                .map(|a| row(&[&a.id, &format!("`{}`", visible(&a.text)), &form(c, a.form), &a.pieces.len()]))
                .collect(),
        ));
    }
    Ok((b, vec![]))
}

fn form(c: &Ctx, f: Form) -> String {
    match f {
        Form::Start => c.t("début", "start").into(),
        Form::Space => c.t("après espace", "after space").into(),
    }
}

fn dist_table(c: &Ctx, d: &Distribution) -> Vec<Block> {
    vec![Block::Para(format!("`{}` → {} : {}", d.prompt, c.t("pièces", "pieces"), pieces(&d.pieces))), bars(&d.top)]
}

fn smart_init(c: &Ctx) -> Built {
    let m: Stats<ModelStats> = c.stage(Stage::Model)?;
    let v: Option<Stats<VocabStats>> = c.stage(Stage::Vocab).ok();
    let mut missing = Vec::new();
    let mut b = vec![Block::Para(format!(
        "{} `{}`{}.",
        c.t(
            "Les lignes ajoutées à la matrice d'embeddings sont initialisées ainsi :",
            "The rows added to the embedding matrix are initialised as:"
        ),
        m.stats.init,
        m.stats.reference.as_ref().map(|(w, id)| format!(" (`{w}`, id {id})")).unwrap_or_default()
    ))];
    match read_json::<SmartInit>(&explore_dir(c.run).join(tp06_sample::explore::SMART_INIT_FILE)) {
        Some(demo) => {
            b.push(Block::Para(format!(
                "{} `{}` {} `{}` (id {}) {}",
                c.t("Démo du notebook sur le modèle de base : on ajoute", "The notebook's demo on the base model: add"),
                demo.name,
                c.t("et on copie exactement l'embedding de", "and copy exactly the embedding of"),
                demo.reference.0,
                demo.reference.1,
                c.t("dans sa ligne.", "into its row.")
            )));
            b.push(Block::Para(c.t("Avant l'ajout :", "Before adding it:").into()));
            b.extend(dist_table(c, &demo.before));
            b.push(Block::Para(c.t("Après l'ajout :", "After adding it:").into()));
            b.extend(dist_table(c, &demo.after));
            b.push(Block::Para(c.t("Le mot de référence :", "The reference word:").into()));
            b.extend(dist_table(c, &demo.reference_prompt));
            b.push(Block::Para(format!(
                "{} {:.2e}{}",
                c.t(
                    "Plus grand écart entre les deux distributions complètes :",
                    "Largest difference between the two full distributions:"
                ),
                demo.max_abs_diff,
                c.t(
                    " — le nouveau token se comporte exactement comme le mot de référence.",
                    " — the new token behaves exactly as the reference word."
                )
            )));
            if let (Some(before), Some(after)) = (demo.samples_before.first(), demo.samples_after.first()) {
                b.push(table(
                    &[c.t("génération", "generation"), c.t("texte", "text")],
                    vec![
                        vec![c.t("avant", "before").into(), before.clone()],
                        vec![c.t("après", "after").into(), after.clone()],
                    ],
                ));
            }
        }
        None => missing.push(format!(
            "{} `{}`",
            c.t("Démo d'initialisation absente :", "Smart-init demo missing:"),
            c.explore_hint("smart-init")
        )),
    }
    // After training: how far the added rows moved.
    let from = m.stats.vocab_before;
    let initial = c.run.stage_dir(Stage::Model).join(tp06_model::outputs::WEIGHTS);
    let trained = c.run.stage_dir(Stage::Train).join(tp06_train::outputs::EXPORT).join(tp06_model::outputs::WEIGHTS);
    if m.stats.vocab_after <= from {
        b.push(Block::Para(
            c.t("Aucun token ajouté : rien à initialiser.", "No token added: nothing to initialise.").into(),
        ));
        return Ok((b, missing));
    }
    if Manifest::load(c.run, Stage::Train).is_err() || !trained.is_file() {
        missing.push(format!(
            "{} `{}`",
            c.t("Déplacement des lignes après l'entraînement absent :", "Row movement after training missing:"),
            Stage::Train.rerun_hint(c.run.root())
        ));
        return Ok((b, missing));
    }
    let (before, after) = match (rows::read_wte(&initial), rows::read_wte(&trained)) {
        (Ok(a), Ok(b)) => (a, b),
        (Err(e), _) | (_, Err(e)) => {
            missing.push(e);
            return Ok((b, missing));
        }
    };
    let every = rows::movement(&before, &after, 0)?;
    let (pretrained, moved) = every.split_at(from);
    let pretrained = pretrained.iter().copied().fold(0.0, f64::max);
    let mean = moved.iter().sum::<f64>() / moved.len() as f64;
    let max = moved.iter().copied().fold(0.0, f64::max);
    let scale = rows::mean_norm(&before, 0..from);
    b.push(Block::Para(
        c.t(
            "Après l'entraînement, distance de chaque ligne ajoutée à son vecteur initial :",
            "After training, each added row's distance to its initial vector:",
        )
        .into(),
    ));
    b.push(table(
        &[c.t("mesure", "measure"), c.t("valeur", "value")],
        vec![
            row(&[&c.t("lignes ajoutées", "added rows"), &moved.len()]),
            row(&[&c.t("distance moyenne", "mean distance"), &c.num(mean, 4)]),
            row(&[&c.t("distance maximale", "largest distance"), &c.num(max, 4)]),
            row(&[
                &c.t("norme moyenne d'une ligne pré-entraînée (échelle)", "mean norm of a pretrained row (scale)"),
                &c.num(scale, 4),
            ]),
            row(&[
                &c.t("plus grand déplacement d'une ligne pré-entraînée", "largest movement of a pretrained row"),
                &c.num(pretrained, 4),
            ]),
        ],
    ));
    let wte_mode = config_str(&m.manifest, &["model", "freeze", "wte"]).unwrap_or_default();
    if max == 0.0 {
        b.push(Block::Note(format!(
            "{} (`freeze.wte = {wte_mode}`)",
            c.t(
                "Défaut du cours : les lignes ajoutées sont gelées avec `wte` et n'ont pas bougé du tout — les nouveaux noms gardent leur initialisation",
                "Course defect: the added rows are frozen with `wte` and did not move at all — the new names keep their initialisation",
            )
        )));
    } else if pretrained == 0.0 {
        b.push(Block::Note(format!(
            "{} (`freeze.wte = {wte_mode}`)",
            c.t(
                "Seules les lignes ajoutées ont appris ; les lignes pré-entraînées sont restées identiques au bit près",
                "Only the added rows learned; the pretrained rows stayed bit-identical"
            )
        )));
    }
    // Nearest pretrained tokens of a few names, before and after.
    let tok = Tok::from_dir(&c.run.stage_dir(Stage::Vocab)).ok();
    let added = tp06_vocab::read_added(&c.run.stage_dir(Stage::Vocab).join(tp06_vocab::outputs::ADDED_TOKENS))
        .unwrap_or_default();
    if let Some(tok) = tok {
        let wanted: Vec<String> =
            v.map(|v| v.stats.examples.iter().map(|e| e.name.clone()).collect()).unwrap_or_default();
        let mut picked: Vec<&AddedName> =
            added.iter().filter(|a| a.form == Form::Space && wanted.contains(&a.name)).collect();
        if picked.len() < 3 {
            let have: Vec<u32> = picked.iter().map(|a| a.id).collect();
            let more = 4usize.saturating_sub(picked.len());
            picked.extend(added.iter().filter(|a| !have.contains(&a.id)).take(more));
        }
        let show = |list: Vec<(usize, f64)>| {
            list.into_iter()
                .map(|(i, s)| {
                    format!("`{}` {}", visible(&tok.decode(&[i as u32], false).unwrap_or_default()), c.num(s, 2))
                })
                .collect::<Vec<_>>()
                .join(", ")
        };
        let rows: Vec<Vec<String>> = picked
            .iter()
            .take(6)
            .filter(|a| (a.id as usize) < before.rows)
            .map(|a| {
                let i = a.id as usize;
                vec![
                    format!("`{}`", visible(&a.text)),
                    c.num(moved[i - from], 4),
                    show(rows::nearest(&before, from, before.row(i), 4)),
                    show(rows::nearest(&after, from, after.row(i), 4)),
                ]
            })
            .collect();
        b.push(Block::Para(
            c.t(
                "Tokens pré-entraînés les plus proches (cosinus), avant et après l'entraînement :",
                "Nearest pretrained tokens (cosine), before and after training:",
            )
            .into(),
        ));
        b.push(table(
            &[
                c.t("token", "token"),
                c.t("distance", "distance"),
                c.t("voisins avant", "neighbours before"),
                c.t("voisins après", "neighbours after"),
            ],
            rows,
        ));
    }
    Ok((b, missing))
}

fn freezing(c: &Ctx) -> Built {
    let m: Stats<ModelStats> = c.stage(Stage::Model)?;
    let p = &m.stats.params;
    let mut b = Vec::new();
    if let Some(shape) = &m.stats.shape {
        b.push(Block::Para(format!(
            "GPT-2 : {} {}, {} {}, n_embd {}, n_positions {}, {} {} — {}",
            shape.n_layer,
            c.t("blocs", "blocks"),
            shape.n_head,
            c.t("têtes", "heads"),
            shape.n_embd,
            shape.n_positions,
            c.t("vocabulaire", "vocabulary"),
            group_digits(shape.vocab_size),
            m.stats.weights
        )));
    }
    let mut parts: Vec<Part> = p
        .groups
        .iter()
        .map(|g| Part {
            label: g.group.clone(),
            params: g.params,
            trainable: g.trainable,
            detail: format!("{} params", group_digits(g.params)),
        })
        .collect();
    // The LM head is tied to wte: drawn on top, in the same state.
    let Some(wte) = p.groups.first() else {
        return Err(format!("model/manifest.json: {}", c.t("pas de rapport de paramètres", "no parameter report")));
    };
    parts.push(Part {
        label: c.t("tête LM", "LM head").into(),
        params: wte.params,
        trainable: wte.trainable,
        detail: c.t("= wte (poids liés)", "= wte (tied weights)").into(),
    });
    b.push(Block::Figure {
        file: "freezing.svg".into(),
        svg: charts::model_diagram(
            &parts,
            [
                c.t("entraîné", "trained"),
                c.t("en partie (lignes ajoutées)", "in part (added rows)"),
                c.t("gelé", "frozen"),
            ],
        ),
        caption: match &m.stats.lora {
            None => format!(
                "{} {}/{} {}",
                c.t(
                    "Le modèle de l'entrée (en bas) à la sortie (en haut) ;",
                    "The model from input (bottom) to output (top);"
                ),
                p.frozen_blocks,
                p.n_layer,
                c.t("blocs inférieurs gelés.", "lower blocks frozen.")
            ),
            Some(_) => c
                .t(
                    "Le modèle de l'entrée (en bas) à la sortie (en haut) ; sous LoRA, tout le modèle de base est gelé et les adaptateurs s'entraînent.",
                    "The model from input (bottom) to output (top); under LoRA the whole base is frozen and the adapters train.",
                )
                .into(),
        },
    });
    if let Some(lora) = &m.stats.lora {
        b.push(Block::Para(lora_paragraph(c, lora, p)));
    }
    b.push(table(
        &[
            c.t("groupe", "group"),
            c.t("paramètres", "parameters"),
            c.t("entraînables", "trainable"),
            c.t("état", "state"),
        ],
        p.groups
            .iter()
            .map(|g| {
                let state = if g.trainable == 0 {
                    c.t("gelé", "frozen")
                } else if g.trainable == g.params {
                    c.t("entraîné", "trained")
                } else {
                    c.t("en partie", "in part")
                };
                row(&[&g.group, &group_digits(g.params), &group_digits(g.trainable), &state])
            })
            .collect(),
    ));
    let pct = |n: usize| c.pct(n as f64 / p.total.max(1) as f64);
    b.push(table(
        &[c.t("paramètres", "parameters"), c.t("nombre", "count"), "%"],
        vec![
            row(&[&c.t("total", "total"), &group_digits(p.total), &pct(p.total)]),
            row(&[&c.t("gelés", "frozen"), &group_digits(p.frozen), &pct(p.frozen)]),
            row(&[&c.t("entraînables", "trainable"), &group_digits(p.trainable), &pct(p.trainable)]),
        ],
    ));
    Ok((b, vec![]))
}

/// What the adapters are, what trains under them and what they weigh on disk.
fn lora_paragraph(c: &Ctx, lora: &tp06_model::lora::LoraConfig, p: &tp06_model::ParamReport) -> String {
    let adapters = p.groups.iter().find(|g| g.group == "LoRA adapters").map_or(0, |g| g.params);
    let targets: Vec<&str> = lora.targets.iter().map(|t| t.name()).collect();
    let blocks = match lora.blocks {
        tp06_model::lora::Blocks::All => c.t("tous les blocs", "every block").to_string(),
        tp06_model::lora::Blocks::Range(from, to) => format!("{} {from} → {}", c.t("blocs", "blocks"), to - 1),
    };
    let scaling = if lora.rslora { "α/√r" } else { "α/r" };
    let (colon, semi) = (c.t(" :", ":"), c.t(" ;", ";"));
    let file = c.run.stage_dir(Stage::Train).join(tp06_train::outputs::ADAPTER).join(tp06_model::lora::ADAPTER_WEIGHTS);
    let size = match std::fs::metadata(&file) {
        Ok(meta) => format!("{} {}", c.num(meta.len() as f64 / 1e6, 2), c.t("Mo", "MB")),
        Err(_) => {
            c.t("pas encore écrit (l'entraînement n'a pas fini)", "not written yet (training has not finished)").into()
        }
    };
    format!(
        "{} r = {}, α = {} ({scaling} = {}), dropout {}, {} {} ({blocks}){colon} {} {}{semi} {} {} {} ({} {}). {} train/adapter/{colon} {size}. {}",
        c.t("LoRA :", "LoRA:"),
        lora.r,
        lora.alpha,
        c.num(lora.scaling(), 3),
        lora.dropout,
        c.t("sur", "on"),
        targets.join(", "),
        group_digits(adapters),
        c.t("paramètres d'adaptateurs", "adapter parameters"),
        c.t("avec les lignes ajoutées de wte,", "with wte's added rows,"),
        group_digits(p.trainable),
        c.t("paramètres s'entraînent", "parameters train"),
        c.pct(p.trainable as f64 / p.total.max(1) as f64),
        c.t("du modèle", "of the model"),
        c.t("L'adaptateur, au format de peft, dans", "The adapter, in peft's format, in"),
        c.t(
            "PeftModel.from_pretrained le charge sur le modèle de base redimensionné au tokenizer ; train/export contient les poids avec les adaptateurs fusionnés.",
            "PeftModel.from_pretrained loads it on the base resized to the tokenizer; train/export holds the weights with the adapters merged.",
        )
    )
}

/// The course's table of learning rates, and beside it the range test of
/// this run (`train.lr = "find"`) or of `tp06 lr-find`, when there is one.
fn learning_rate_choice(c: &Ctx, s: &TrainStats, b: &mut Vec<Block>, missing: &mut Vec<String>) {
    b.push(table(
        &[c.t("learning rate (cours, §6.1)", "learning rate (course, §6.1)"), c.t("effet", "effect")],
        vec![
            row(&[
                &c.t("trop élevé (1e-3)", "too high (1e-3)"),
                &c.t(
                    "apprentissage instable, perte des connaissances pré-entraînées",
                    "unstable training, pretrained knowledge lost",
                ),
            ]),
            row(&[
                &c.t("optimal (5e-5)", "optimal (5e-5)"),
                &c.t("apprentissage progressif, préserve les acquis", "gradual learning, keeps what was learnt"),
            ]),
            row(&[&c.t("trop faible (1e-6)", "too low (1e-6)"), &c.t("apprentissage très lent", "very slow learning")]),
        ],
    ));
    let in_train = c.run.stage_dir(Stage::Train).join(tp06_train::lr_find::outputs::JSON);
    let alone = c.run.root().join(tp06_train::LR_FIND_DIR).join(tp06_train::lr_find::outputs::JSON);
    let Some(test) = [in_train, alone].iter().find_map(|p| tp06_train::lr_find::RangeTest::read(p)) else {
        b.push(Block::Note(
            c.t(
                "Ce tableau ne vaut que pour un modèle et une durée : `cargo xtask lr-find` mesure le bon ordre de grandeur pour ce run (test de plage du learning rate), et `train.lr = \"find\"` l'utilise.",
                "That table holds for one model and run length only: `cargo xtask lr-find` measures the right order of magnitude for this run (a learning-rate range test), and `train.lr = \"find\"` uses it.",
            )
            .into(),
        ));
        return;
    };
    match test.svg() {
        Ok(svg) => b.push(Block::Figure {
            file: "lr_find.svg".into(),
            svg,
            caption: format!(
                "{} {:.1e} ({}). {}",
                c.t("Test de plage du learning rate : taux suggéré", "Learning-rate range test: suggested rate"),
                test.suggestion,
                test.rule,
                match s.lr {
                    Some(lr) => format!("{} {lr:.1e}.", c.t("Taux utilisé par ce run :", "Rate this run used:")),
                    None => String::new(),
                }
            ),
        }),
        Err(e) => missing.push(format!("lr_find.json: {e}")),
    }
}

/// The ablation of `bench/ablation.py`, when it wrote `RUN_DIR/ablation.json`:
/// the held-out bits per character of each fix from the course's procedure to
/// `recommended`, transformers' course procedure beside them.
fn ablation(c: &Ctx, b: &mut Vec<Block>) {
    let Ok(text) = std::fs::read_to_string(c.run.root().join("ablation.json")) else { return };
    let Ok(result) = serde_json::from_str::<Value>(&text) else { return };
    let rungs = result["rows"]
        .as_array()
        .into_iter()
        .flatten()
        .chain(result["reference"].as_object().map(|_| &result["reference"]));
    let bars: Vec<(String, f64)> =
        rungs.filter_map(|r| Some((r["rung"].as_str()?.to_string(), r["bits_per_char"].as_f64()?))).collect();
    if bars.is_empty() {
        return;
    }
    b.push(Block::Figure {
        file: "ablation.svg".into(),
        svg: charts::bar_chart(
            c.t("Du cours à `recommended`, un correctif à la fois", "From the course to `recommended`, one fix at a time"),
            "",
            c.t("bits par caractère (validation)", "bits per character (validation)"),
            &bars,
        ),
        caption: c
            .t(
                "Perte de validation par caractère de chaque run (bench/ablation.py, même découpage), la procédure du cours dans transformers en dernier.",
                "Held-out loss per character of each run (bench/ablation.py, same split), transformers running the course's procedure last.",
            )
            .into(),
    });
}

fn hyper_parameters(c: &Ctx) -> Built {
    let t: Stats<TrainStats> = c.stage(Stage::Train)?;
    let s = &t.stats;
    let m = &t.manifest;
    let get = |k: &str| config_str(m, &[k]).unwrap_or_else(|| "?".into());
    let mut b = vec![table(
        &[c.t("paramètre", "parameter"), c.t("valeur", "value")],
        vec![
            row(&[
                &c.t("micro-batch × accumulation", "micro-batch × accumulation"),
                &format!("{} × {}", get("batch_size"), get("grad_accum")),
            ]),
            row(&[&c.t("batch effectif", "effective batch"), &s.effective_batch]),
            row(&[
                &c.t("exemples d'entraînement / validation", "training / validation examples"),
                &format!("{} / {}", s.train_examples, s.valid_examples),
            ]),
            row(&[&c.t("steps par epoch", "steps per epoch"), &s.steps_per_epoch]),
            row(&[&"epochs", &get("epochs")]),
            row(&[&c.t("steps au total", "total steps"), &s.total_steps]),
            row(&[
                &c.t("learning rate (pic)", "learning rate (peak)"),
                &match s.lr {
                    Some(lr) if get("lr") == "find" => format!("{lr:.2e} (find)"),
                    _ => get("lr"),
                },
            ]),
            row(&[
                &c.t("warmup (steps)", "warmup (steps)"),
                &s.warmup_steps.map_or_else(|| get("warmup_steps"), |w| w.to_string()),
            ]),
            row(&[&"packing", &get("packing")]),
            row(&[
                &c.t("couverture du corpus", "corpus coverage"),
                &s.coverage.map_or_else(|| "—".into(), |v| c.pct(v)),
            ]),
            row(&[&"weight decay", &get("weight_decay")]),
            row(&[&c.t("clipping du gradient", "gradient clipping"), &get("max_grad_norm")]),
            row(&[&"max_length", &get("max_length")]),
            row(&[&c.t("part de padding", "padding fraction"), &c.pct(s.padding_fraction)]),
            row(&[&c.t("débit (tokens/s)", "throughput (tokens/s)"), &c.num(s.tokens_per_second, 0)]),
            row(&[&c.t("durée d'entraînement (s)", "training time (s)"), &c.num(s.train_seconds, 1)]),
        ],
    )];
    if m.config.get("pad_in_loss").and_then(Value::as_bool) == Some(true) {
        b.push(Block::Note(
            c.t(
                "Défaut du cours : les tokens de padding comptent dans la perte (`pad_in_loss = true`).",
                "Course defect: padding tokens count in the loss (`pad_in_loss = true`).",
            )
            .into(),
        ));
    }
    let records = tp06_train::metrics::read(&c.run.stage_dir(Stage::Train).join(tp06_train::outputs::METRICS))
        .map_err(|e| e.to_string())?;
    let lr: Vec<(f64, f64)> = records.iter().filter_map(|r| r.lr.map(|v| (r.step as f64, v))).collect();
    let mut missing = Vec::new();
    match charts::line_chart(
        c.t("Learning rate au fil des steps (journal du run)", "Learning rate over the steps (the run's log)"),
        "step",
        "learning rate",
        &[Series { label: "lr", points: lr, color: PALETTE[0], markers: true }],
        None,
    ) {
        Ok(svg) => b.push(Block::Figure {
            file: "lr.svg".into(),
            svg,
            caption: format!(
                "{} {} {}",
                c.t("Warmup linéaire sur", "Linear warm-up over"),
                s.warmup_steps.map_or_else(|| get("warmup_steps"), |w| w.to_string()),
                c.t("steps, puis décroissance linéaire jusqu'à 0.", "steps, then linear decay to 0.")
            ),
        }),
        Err(e) => missing.push(format!("metrics.jsonl: {e}")),
    }
    learning_rate_choice(c, s, &mut b, &mut missing);
    ablation(c, &mut b);
    if let Some(why) = &s.learned_nothing {
        b.push(Block::Alert(match (s.base_eval_loss, s.best) {
            (Some(before), Some((_, best))) => format!(
                "{} {} % ({} → {}), {} {} %. {} {}, {}",
                c.t(
                    "Ce run n'a rien appris : sa perte de validation n'a baissé que de",
                    "This run learned nothing: its validation loss fell by only"
                ),
                c.num(100.0 * tp06_train::learned::fall(before, best), 2),
                c.num(before, 4),
                c.num(best, 4),
                c.t("moins de", "under"),
                c.num(100.0 * tp06_train::learned::MARGIN, 0),
                c.t("Son learning rate,", "Its learning rate,"),
                s.lr.map_or_else(|| "—".into(), |lr| format!("{lr:.1e}")),
                c.t(
                    "est bien trop faible : augmentez `train.lr`, ou `train.lr = \"find\"`.",
                    "is far too small: set `train.lr` higher, or `train.lr = \"find\"`."
                ),
            ),
            _ => format!("{} {why}", c.t("Ce run n'a rien appris :", "This run learned nothing:")),
        }));
    }
    let train: Vec<(f64, f64)> = records.iter().filter_map(|r: &Record| r.loss.map(|v| (r.step as f64, v))).collect();
    let valid: Vec<(f64, f64)> = records.iter().filter_map(|r| r.eval_loss.map(|v| (r.step as f64, v))).collect();
    let best = s.best.map(|(step, loss)| {
        ((step as f64, loss), format!("{} (step {step})", c.t("meilleure validation", "best validation")))
    });
    let series = vec![
        Series { label: c.t("entraînement", "training"), points: train, color: PALETTE[0], markers: false },
        Series { label: "validation", points: valid, color: PALETTE[1], markers: true },
    ];
    match charts::line_chart(
        c.t("Perte", "Loss"),
        "step",
        c.t("perte (nats/token)", "loss (nats/token)"),
        &series,
        best,
    ) {
        Ok(svg) => b.push(Block::Figure {
            file: "loss.svg".into(),
            svg,
            caption: c.t("Perte d'entraînement et de validation.", "Training and validation loss.").into(),
        }),
        Err(e) => missing.push(format!("metrics.jsonl: {e}")),
    }
    let opt = |v: Option<f64>, d: usize| v.map(|v| c.num(v, d)).unwrap_or_else(|| "—".into());
    b.push(table(
        &[c.t("mesure", "measure"), c.t("avant", "before"), c.t("après", "after")],
        vec![
            row(&[
                &c.t("perte de validation", "validation loss"),
                &opt(s.base_eval_loss, 4),
                &opt(s.final_eval_loss, 4),
            ]),
            row(&[
                &c.t("nats par caractère (validation)", "nats per character (validation)"),
                &opt(s.base_eval_nats_per_char, 4),
                &opt(s.final_eval_nats_per_char, 4),
            ]),
            row(&[&c.t("dernière perte d'entraînement", "last training loss"), &"—", &opt(s.final_loss, 4)]),
        ],
    ));
    if let Some((step, loss)) = s.best {
        b.push(Block::Para(format!(
            "{} {step} ({} {})",
            c.t("Meilleure validation au step", "Best validation at step"),
            c.t("perte", "loss"),
            c.num(loss, 4)
        )));
    }
    Ok((b, missing))
}

fn bars(top: &[TopToken]) -> Block {
    Block::Bars(top.iter().map(|t| (visible(&t.text), t.prob)).collect())
}

fn generation(c: &Ctx) -> Built {
    let smp: Stats<SampleStats> = c.stage(Stage::Sample)?;
    let m = &smp.manifest;
    let records = tp06_sample::stage::read_records(&c.run.stage_dir(Stage::Sample).join(tp06_sample::outputs::SAMPLES));
    let get = |k: &str| config_str(m, &[k]).unwrap_or_else(|| "?".into());
    let mut b = vec![Block::Para(format!(
        "{} top-k {}, top-p {}, {} {}, max_length {} — {} {} {} {}, {} tokens/s.",
        c.t("Réglages :", "Settings:"),
        get("top_k"),
        get("top_p"),
        c.t("pénalité de répétition", "repetition penalty"),
        get("repetition_penalty"),
        get("max_length"),
        smp.stats.samples,
        c.t("échantillons,", "samples,"),
        smp.stats.new_tokens,
        c.t("nouveaux tokens", "new tokens"),
        c.num(smp.stats.tokens_per_second, 0)
    ))];
    let mut prompts: Vec<(&str, f64)> = Vec::new();
    for r in &records {
        if !prompts.iter().any(|(p, _)| *p == r.prompt) {
            prompts.push((&r.prompt, r.temperature));
        }
    }
    let text_of = |model: &str, prompt: &str| -> Vec<&SampleRecord> {
        records.iter().filter(|r| r.model == model && r.prompt == prompt).collect()
    };
    let mut rows = Vec::new();
    for (prompt, temperature) in &prompts {
        for model in ["fine-tuned", "base"] {
            for r in text_of(model, prompt) {
                let label = if model == "base" { c.t("base", "base") } else { c.t("fine-tuné", "fine-tuned") };
                rows.push(vec![
                    format!("`{prompt}` (T = {})", c.num(*temperature, 1)),
                    label.to_string(),
                    r.text.clone(),
                ]);
            }
        }
    }
    if rows.is_empty() {
        return Err(format!(
            "sample/samples.jsonl: {} — {}",
            c.t("aucun échantillon lisible", "no readable sample"),
            Stage::Sample.rerun_hint(c.run.root())
        ));
    }
    b.push(table(&["prompt", c.t("modèle", "model"), c.t("texte généré", "generated text")], rows));
    let mut missing = Vec::new();
    match read_json::<SamplingDemo>(&explore_dir(c.run).join(tp06_sample::explore::SAMPLING_FILE)) {
        Some(demo) => {
            b.push(Block::Para(format!(
                "{} `{}` :",
                c.t(
                    "Distribution du prochain token du modèle fine-tuné après",
                    "Next-token distribution of the fine-tuned model after"
                ),
                demo.raw.prompt
            )));
            b.push(bars(&demo.raw.top));
            b.push(Block::Para(
                c.t(
                    "Température : diviser les logits par T aplatit (T > 1) ou accentue (T < 1) la distribution.",
                    "Temperature: dividing the logits by T flattens (T > 1) or sharpens (T < 1) the distribution.",
                )
                .into(),
            ));
            let mut rows = Vec::new();
            for (t, top) in &demo.temperatures {
                rows.push(vec![
                    format!("T = {}", c.num(*t, 1)),
                    top.iter()
                        .map(|x| format!("`{}` {}", visible(&x.text), c.pct(x.prob)))
                        .collect::<Vec<_>>()
                        .join(", "),
                ]);
            }
            b.push(table(
                &[c.t("température", "temperature"), c.t("tokens les plus probables", "most likely tokens")],
                rows,
            ));
            b.push(table(
                &["top-k", c.t("tokens gardés", "tokens kept"), c.t("masse de probabilité", "probability mass")],
                demo.top_k.iter().map(|(k, n, mass)| row(&[k, n, &c.pct(*mass)])).collect(),
            ));
            b.push(table(
                &[
                    "top-p",
                    c.t("tokens gardés", "tokens kept"),
                    c.t("masse de probabilité", "probability mass"),
                    c.t("tokens", "tokens"),
                ],
                demo.top_p
                    .iter()
                    .map(|(p, n, mass, toks)| {
                        let more = if *n > toks.len() { " …" } else { "" };
                        vec![
                            c.num(*p, 2),
                            n.to_string(),
                            c.pct(*mass),
                            format!(
                                "{}{more}",
                                toks.iter().map(|t| format!("`{}`", visible(&t.text))).collect::<Vec<_>>().join(" ")
                            ),
                        ]
                    })
                    .collect(),
            ));
        }
        None => missing.push(format!(
            "{} `{}`",
            c.t("Démo d'échantillonnage absente :", "Sampling demo missing:"),
            c.explore_hint("sampling")
        )),
    }
    Ok((b, missing))
}
