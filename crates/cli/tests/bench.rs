//! `tp06 bench-one` measures what it says (the work's token count, its
//! shape, what trained), and `tp06 bench` without PyTorch says how to install
//! it instead of reporting a number.

mod common;

use common::{command, text};
use serde_json::Value;

fn measure(args: &[&str]) -> Value {
    let output = command(args).env("RAYON_NUM_THREADS", "1").output().unwrap();
    let (stdout, stderr) = text(&output);
    assert!(output.status.success(), "{args:?}: {stderr}");
    let line = stdout.lines().rev().find(|l| l.starts_with('{')).expect("a JSON line");
    serde_json::from_str(line).unwrap()
}

#[test]
fn bench_one_reports_the_tokens_of_each_work() {
    // train: one measured step of 8 micro-batches of 2 × 256 positions.
    let m = measure(&[
        "bench-one",
        "train",
        "--shape",
        "mini",
        "--steps",
        "1",
        "--threads",
        "1",
        "--freeze",
        "recommended",
    ]);
    assert_eq!(m["tokens"], 8 * 2 * 256);
    assert_eq!(m["freeze"], "recommended");
    assert_eq!(m["dtype"], "f32");
    // forward: 8 batches of 2 × 256 per step, no freeze reported.
    let f = measure(&["bench-one", "forward", "--shape", "mini", "--steps", "2", "--threads", "1"]);
    assert_eq!(f["tokens"], 2 * 8 * 2 * 256);
    assert!(f.get("freeze").is_none());
    // generate: 128 new tokens per generation.
    let g = measure(&["bench-one", "generate", "--shape", "mini", "--steps", "1", "--threads", "1"]);
    assert_eq!(g["tokens"], 128);
    for m in [&m, &f, &g] {
        let (tokens, seconds) = (m["tokens"].as_f64().unwrap(), m["seconds"].as_f64().unwrap());
        assert!(seconds > 0.0);
        assert!((m["tokens_per_second"].as_f64().unwrap() - tokens / seconds).abs() < 1e-6 * tokens / seconds);
        assert!(m["peak_rss_mb"].as_f64().unwrap() > 1.0, "the process's peak memory is read");
        assert!(m["device_peak_mb"].is_null(), "no GPU memory figure on the CPU");
        assert_eq!(m["side"], "tp06");
        assert_eq!(m["shape"], "mini");
    }
}

#[test]
fn bench_without_python_names_the_install_and_reports_nothing() {
    let empty = tempfile::tempdir().unwrap();
    let json = empty.path().join("out.json");
    let output = command(&["bench", "--json", &json.display().to_string()]).env("PATH", empty.path()).output().unwrap();
    let (_, stderr) = text(&output);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("pip install torch transformers"), "{stderr}");
    assert!(!json.exists(), "no result file without a measurement");
}

/// `--peer llama.cpp`: the mini model written as GGUF and decoded by
/// llama.cpp beside our int8, one row with both sides' speed and memory,
/// each side's runs in the JSON; other works are refused.
#[test]
fn bench_beside_llama_cpp_measures_both_sides_of_generation() {
    let dir = tempfile::tempdir().unwrap();
    let json = dir.path().join("peer.json");
    let json_arg = json.display().to_string();
    let args = ["bench", "--peer", "llama.cpp", "--shapes", "mini", "--repeats", "1", "--steps", "1"];
    let refused = command(&[&args[..], &["--works", "train,generate", "--json", &json_arg]].concat()).output().unwrap();
    assert_eq!(refused.status.code(), Some(1));
    assert!(text(&refused).1.contains("--works generate"), "{}", text(&refused).1);
    if tp06_testkit::python_with(&["llama_cpp"], "the llama.cpp benchmark").is_none() {
        return;
    }
    let output = command(&[&args[..], &["--works", "generate", "--precision", "int8", "--json", &json_arg]].concat())
        .output()
        .unwrap();
    let (stdout, stderr) = text(&output);
    assert!(output.status.success(), "{stdout}\n{stderr}");
    assert!(stdout.contains("int8/q8_0"), "{stdout}");
    let report: Value = serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    let row = &report["rows"][0];
    assert_eq!((row["tp06_precision"].as_str(), row["llama_cpp_format"].as_str()), (Some("int8"), Some("q8_0")));
    for key in ["tp06_tokens_per_second", "llama_cpp_tokens_per_second", "tp06_peak_rss_mb", "llama_cpp_peak_rss_mb"] {
        assert!(row[key].as_f64().is_some_and(|v| v > 0.0), "{key}: {row}");
    }
    let sides: Vec<&str> = report["runs"].as_array().unwrap().iter().map(|r| r["side"].as_str().unwrap()).collect();
    assert_eq!(sides, ["tp06", "llama.cpp"]);
    assert!(report["runs"][1]["tokens"] == 128, "{}", report["runs"][1]);
}
