//! Our PyTorch checkpoint reader (`pickle.rs`, through `read_tensor`) beside
//! burn-store's `PytorchReader` on the same files: whether every tensor is
//! bit-identical, and each reader's time and peak memory to read the whole
//! file into f32 values kept resident, as the model stage does (each in a
//! process of its own, so that the peaks do not mix).
//!
//!     cargo run --release -p tp06-model --example readers -- FILE.bin…
//!
//! ARCHITECTURE.md and the module comment of `pickle.rs` quote its table.

use std::path::Path;
use std::time::Instant;

use burn_store::pytorch::PytorchReader;

/// Our reader: every floating-point tensor of `path`, by name.
fn ours(path: &Path) -> Vec<(String, Vec<f32>)> {
    let tensors = tp06_model::read_tensors(path).expect("our reader");
    tensors.into_iter().map(|(name, (_, values))| (name, values)).collect()
}

/// burn-store's reader: the same tensors.
fn burn(path: &Path) -> Vec<(String, Vec<f32>)> {
    let reader = PytorchReader::new(path).expect("burn-store reads the file");
    float_names(path)
        .into_iter()
        .map(|name| {
            let snapshot = reader.get(&name).unwrap_or_else(|| panic!("burn-store has no `{name}`"));
            let data = snapshot.to_data().expect("burn-store reads the tensor");
            (name, data.convert::<f32>().into_vec::<f32>().expect("f32"))
        })
        .collect()
}

/// The floating-point tensors' names (burn-store's list, which holds every tensor).
fn float_names(path: &Path) -> Vec<String> {
    let reader = PytorchReader::new(path).expect("burn-store reads the file");
    let mut names: Vec<String> =
        reader.tensors().iter().filter(|(_, s)| s.dtype.is_float()).map(|(name, _)| name.clone()).collect();
    names.sort();
    names
}

fn peak_rss_mb() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let kb: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(f64::NAN);
    kb / 1024.0
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if let [flag, reader, file] = &args[..]
        && flag == "--one"
    {
        // One reader in this process: time and peak with every tensor resident.
        let started = Instant::now();
        let tensors = if reader == "ours" { ours(Path::new(file)) } else { burn(Path::new(file)) };
        let seconds = started.elapsed().as_secs_f64();
        let values: usize = tensors.iter().map(|(_, v)| v.len()).sum();
        println!("{seconds:.3} {:.0} {values}", peak_rss_mb());
        return;
    }
    let me = std::env::current_exe().expect("the example's path");
    println!(
        "| file | size | tensors | bit-identical | ours: s | burn-store: s | ours: peak MB | burn-store: peak MB |"
    );
    println!("|---|---|---|---|---|---|---|---|");
    for file in &args {
        let path = Path::new(file);
        let size = std::fs::metadata(path).map(|m| m.len()).unwrap_or(0) as f64 / 1e6;
        // Bit for bit, one tensor at a time.
        let reader = PytorchReader::new(path).expect("burn-store reads the file");
        let names = float_names(path);
        let ours = tp06_model::read_tensors(path).expect("our reader");
        assert_eq!(ours.keys().collect::<Vec<_>>(), names.iter().collect::<Vec<_>>(), "the same tensors");
        let differ: Vec<&String> = names
            .iter()
            .filter(|name| {
                let a = &ours[*name].1;
                let b = reader.get(name).expect("listed").to_data().expect("read");
                let b = b.convert::<f32>().into_vec::<f32>().expect("f32");
                a.len() != b.len() || a.iter().zip(&b).any(|(x, y)| x.to_bits() != y.to_bits())
            })
            .collect();
        drop((reader, ours));
        let run = |which: &str| -> (String, String) {
            let out = std::process::Command::new(&me).args(["--one", which, file]).output().expect("runs");
            let text = String::from_utf8_lossy(&out.stdout).to_string();
            let fields: Vec<&str> = text.split_whitespace().collect();
            match fields[..] {
                [s, mb, _] => (s.to_string(), mb.to_string()),
                _ => ("failed".into(), String::from_utf8_lossy(&out.stderr).lines().last().unwrap_or("").into()),
            }
        };
        let (ours_s, ours_mb) = run("ours");
        let (burn_s, burn_mb) = run("burn");
        let identical = if differ.is_empty() {
            "yes".to_string()
        } else {
            format!("**no**: {}", differ.iter().map(|n| format!("`{n}`")).collect::<Vec<_>>().join(", "))
        };
        println!(
            "| {} | {size:.1} MB | {} | {identical} | {ours_s} | {burn_s} | {ours_mb} | {burn_mb} |",
            path.display(),
            names.len()
        );
    }
}
