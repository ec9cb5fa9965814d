//! One build for both README commands. `cargo xtask pipeline` builds `tp06`
//! (`tp06-cli`'s normal dependencies, release profile); the README's test
//! command builds every member with its dev-dependencies, same profile. Cargo
//! unifies features per build, so a test's dependency that turns on a feature
//! of a crate the binary links makes the test command compile that crate, and
//! every crate above it, a second time (burn-store's PyTorch reader did that
//! to burn-core: all of Burn and every crate of ours, twice).

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::process::Command;

/// Every package `cargo tree` lists with `args`, keyed `name vX.Y.Z`, with the
/// features it is built with.
fn features(args: &[&str]) -> BTreeMap<String, BTreeSet<String>> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let out = Command::new(cargo)
        .arg("tree")
        .args(args)
        .args(["--prefix", "none", "--format", "{p}|{f}"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("cargo runs");
    assert!(out.status.success(), "cargo tree {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    let mut packages: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let Some((package, features)) = line.split_once('|') else { continue };
        let key: Vec<&str> = package.split_whitespace().take(2).collect();
        let features = features.trim_end_matches(" (*)").split(',').filter(|f| !f.is_empty()).map(String::from);
        packages.entry(key.join(" ")).or_default().extend(features);
    }
    packages
}

#[test]
fn the_tests_build_the_binarys_dependencies_as_the_binary_does() {
    // As `cargo xtask` builds: the binary's normal and build dependencies.
    let binary = features(&["--package", "tp06-cli", "--edges", "normal,build"]);
    // As the test command builds: every member, dev-dependencies included.
    let tests = features(&["--workspace", "--edges", "normal,build,dev"]);
    assert!(binary.keys().any(|p| p.starts_with("burn-core ")), "cargo tree listed the binary's crates: {binary:?}");
    assert!(tests.keys().any(|p| p.starts_with("burn-store ")), "cargo tree listed the tests' crates");
    let differ: Vec<String> = binary
        .iter()
        .filter_map(|(package, built)| {
            let tested = tests.get(package)?;
            let extra: Vec<&String> = tested.difference(built).collect();
            (!extra.is_empty()).then(|| format!("{package} gets {extra:?}"))
        })
        .collect();
    assert!(
        differ.is_empty(),
        "the tests' dependencies turn on features the binary is built without, so the test command \
         would compile these crates (and all above them) a second time: {differ:?}; ask for the same \
         features in the root Cargo.toml, as it does for burn's `record-item-custom-serde`"
    );
}

/// The first two lines of the README's first code block.
fn readme_commands() -> Vec<String> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let readme = std::fs::read_to_string(root.join("README.md")).expect("README.md");
    let block = readme.split("```sh\n").nth(1).expect("README.md opens with a sh block");
    block.lines().take(2).map(|l| l.split('#').next().unwrap_or("").trim().to_string()).collect()
}

#[test]
fn ci_runs_the_readmes_commands_through_one_profile() {
    let commands = readme_commands();
    assert_eq!(commands[0], "cargo xtask pipeline --preset demo", "README's first command");
    let test = &commands[1];
    assert!(test.starts_with("cargo test --workspace"), "README's second command is the test command: {test}");
    // xtask builds with the release profile; the tests must use it too.
    assert!(
        test.split_whitespace().any(|w| w == "--release"),
        "`{test}` builds a second profile beside xtask's release"
    );
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let xtask = std::fs::read_to_string(root.join("xtask/src/main.rs")).expect("xtask's source");
    assert!(xtask.contains("build.arg(\"--release\")"), "xtask builds tp06 with the release profile");
    let ci = std::fs::read_to_string(root.join(".ci/run")).expect(".ci/run");
    assert!(ci.lines().any(|l| l.trim() == test.as_str()), ".ci/run runs the README's test command `{test}`");
}
