//! The model crate's structure, as ARCHITECTURE.md states it: the HF tensor
//! names typed in one table (`crates/model/src/names.rs`), no file cycle
//! inside the model crate, no model source file over 600 lines.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// The workspace's `crates/` folder.
fn crates() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// Whether `text` holds `word` with no letter, digit or `_` on either side
/// (`grep -E '\bword\b'`).
fn has_word(text: &str, word: &str) -> bool {
    let is_word = |c: char| c.is_ascii_alphanumeric() || c == '_';
    text.match_indices(word).any(|(at, _)| {
        let before = text[..at].chars().next_back();
        let after = text[at + word.len()..].chars().next();
        !before.is_some_and(is_word) && !after.is_some_and(is_word)
    })
}

/// The HF tensor names the table owns.
const TENSOR_NAMES: [&str; 8] = ["wte", "wpe", "c_attn", "c_proj", "c_fc", "ln_1", "ln_2", "ln_f"];

/// The files allowed a string naming an HF tensor: the table, and two that
/// name them as words (the `model.freeze.wte` setting, the report's prose).
const ALLOWED: [&str; 3] = ["model/src/names.rs", "model/src/config_stage.rs", "report/src/sections.rs"];

/// Every source file of every crate's `src/` that has a string literal
/// naming an HF tensor (what `grep -lE '"[^"]*\b(wte|…)\b[^"]*"'` lists)
/// is one of three: the names are asked of the table, not typed again.
#[test]
fn hf_tensor_names_are_typed_in_one_table() {
    let mut found = BTreeSet::new();
    let mut checked = 0;
    for krate in std::fs::read_dir(crates()).unwrap().flatten() {
        let src = krate.path().join("src");
        if !src.is_dir() {
            continue;
        }
        for (path, text) in tp06_testkit::rust_sources(&src) {
            checked += 1;
            // Between two quotes on a line, as grep sees a string literal.
            let named = text.lines().any(|line| {
                let parts: Vec<&str> = line.split('"').collect();
                (1..parts.len().saturating_sub(1))
                    .step_by(2)
                    .any(|i| TENSOR_NAMES.iter().any(|name| has_word(parts[i], name)))
            });
            if named {
                let rel = path.strip_prefix(crates()).unwrap().display().to_string();
                found.insert(rel);
            }
        }
    }
    assert!(checked > 60, "only {checked} files read");
    assert!(found.contains(ALLOWED[0]), "the table itself must be found: {found:?}");
    let others: Vec<&String> = found.iter().filter(|f| !ALLOWED.contains(&f.as_str())).collect();
    assert!(others.is_empty(), "HF tensor names typed outside crates/model/src/names.rs: {others:?}; ask the table");
}

/// The module a `crate::a::b::C` path names, among `modules`: its longest prefix.
fn module_of(path: &str, modules: &BTreeSet<String>) -> Option<String> {
    let parts: Vec<&str> = path.split("::").collect();
    (1..=parts.len()).rev().map(|k| parts[..k].join("::")).find(|m| modules.contains(m))
}

/// The identifier paths after each `prefix` in `code` (`crate::a::b`).
fn paths_after<'a>(code: &'a str, prefix: &str) -> Vec<&'a str> {
    code.match_indices(prefix)
        .map(|(at, _)| {
            let rest = &code[at + prefix.len()..];
            let end = rest.find(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == ':')).unwrap_or(rest.len());
            rest[..end].trim_end_matches(':')
        })
        .collect()
}

/// The model crate's files, by module path (`lora::peft`), and the modules
/// each one's code (its unit tests and comments aside) refers to.
fn model_graph() -> BTreeMap<String, BTreeSet<String>> {
    let src = crates().join("model/src");
    let files: BTreeMap<String, String> = tp06_testkit::rust_sources(&src)
        .into_iter()
        .map(|(path, text)| {
            let rel = path.strip_prefix(&src).unwrap().with_extension("");
            let module = rel.display().to_string().trim_end_matches("/mod").replace('/', "::");
            let code = text.split("#[cfg(test)]\nmod tests").next().unwrap_or_default();
            let code: Vec<&str> = code.lines().filter(|l| !l.trim_start().starts_with("//")).collect();
            (module, code.join("\n"))
        })
        .collect();
    let modules: BTreeSet<String> = files.keys().filter(|m| *m != "lib").cloned().collect();
    let mut graph = BTreeMap::new();
    for (module, code) in &files {
        let mut uses = BTreeSet::new();
        let parent = module.rsplit_once("::").map(|(p, _)| p.to_string());
        for path in paths_after(code, "crate::") {
            uses.extend(module_of(path, &modules));
        }
        // `use crate::{a, b::C}`: each item.
        for group in code.split("use crate::{").skip(1) {
            for item in group.split('}').next().unwrap_or_default().split(',') {
                uses.extend(module_of(item.trim(), &modules));
            }
        }
        // In a folder's file, `super::` is the folder's module.
        for path in paths_after(code, "super::") {
            let base = match (&parent, module.contains("::")) {
                (Some(parent), true) => format!("{parent}::{path}"),
                _ => path.to_string(),
            };
            uses.extend(module_of(&base, &modules).or(parent.clone()));
        }
        uses.remove(module);
        graph.insert(module.clone(), uses);
    }
    graph.remove("lib"); // the crate root re-exports everything
    graph
}

/// A file cycle of `graph`, if any.
fn cycle(graph: &BTreeMap<String, BTreeSet<String>>) -> Option<Vec<String>> {
    fn visit(
        node: &str,
        graph: &BTreeMap<String, BTreeSet<String>>,
        path: &mut Vec<String>,
        done: &mut BTreeSet<String>,
    ) -> Option<Vec<String>> {
        if let Some(at) = path.iter().position(|p| p == node) {
            let mut found = path[at..].to_vec();
            found.push(node.to_string());
            return Some(found);
        }
        if done.contains(node) {
            return None;
        }
        path.push(node.to_string());
        for next in graph.get(node).into_iter().flatten() {
            if let Some(found) = visit(next, graph, path, done) {
                return Some(found);
            }
        }
        path.pop();
        done.insert(node.to_string());
        None
    }
    let mut done = BTreeSet::new();
    graph.keys().find_map(|node| visit(node, graph, &mut Vec::new(), &mut done))
}

/// No two files of the model crate import each other, directly or around a
/// loop; the name table and the model file sit below the readers and LoRA.
#[test]
fn the_model_crate_has_no_file_cycle() {
    let graph = model_graph();
    assert!(graph.len() > 20, "{graph:?}");
    let uses = |m: &str| graph.get(m).unwrap_or_else(|| panic!("no module {m}: {graph:?}"));
    // The graph is read: what is known to hold, holds.
    assert!(uses("gpt2").contains("names") && uses("weights").contains("gpt2"), "{graph:?}");
    assert!(uses("lora::peft").contains("lora::config"), "{graph:?}");
    for below in ["names", "gpt2"] {
        for above in ["weights", "lora", "model_dir", "stage", "init"] {
            assert!(!uses(below).contains(above), "{below} uses {above}");
        }
    }
    assert_eq!(cycle(&graph), None, "a file cycle in the model crate");
    // And the check finds one when there is one.
    let mut looped = graph.clone();
    looped.get_mut("names").unwrap().insert("gpt2".into());
    assert!(cycle(&looped).is_some_and(|c| c.contains(&"names".to_string())));
}

#[test]
fn no_model_source_file_is_over_600_lines() {
    for (path, text) in tp06_testkit::rust_sources(&crates().join("model/src")) {
        let lines = text.lines().count();
        assert!(lines <= 600, "{}: {lines} lines; split it by concern", path.display());
    }
}
