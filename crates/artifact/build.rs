//! Records the versions of the main libraries, read from the workspace's
//! `Cargo.lock`, so every manifest can say what computed it.

fn main() {
    // Read at run time: a build script compiled in another checkout sharing the
    // target directory would otherwise read that checkout's lock file.
    let manifest_dir = std::env::var("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR for build scripts");
    let lock_path = std::path::Path::new(&manifest_dir).join("../../Cargo.lock");
    println!("cargo:rerun-if-changed={}", lock_path.display());
    let lock = std::fs::read_to_string(&lock_path).unwrap_or_default();
    for (package, var) in [("burn", "BURN"), ("tokenizers", "TOKENIZERS"), ("polars", "POLARS"), ("hf-hub", "HF_HUB")] {
        let version = lock
            .split("[[package]]")
            .find(|block| block.lines().any(|l| l.trim() == format!("name = \"{package}\"")))
            .and_then(|block| {
                block.lines().find_map(|l| l.trim().strip_prefix("version = \"")?.strip_suffix('"').map(str::to_string))
            })
            .unwrap_or_else(|| "unknown".into());
        println!("cargo:rustc-env=TP06_VERSION_{var}={version}");
    }
}
