//! llama.cpp as the peer of `generate` (`tp06 bench --peer llama.cpp`): the
//! same shape and weights written as GGUF (the `tp06 bench-one` model, seed
//! 1), decoded by llama.cpp through `bench/peer_llama_cpp.py`, beside our side in
//! the same run, alternating, 2 threads each: our f32 against its F32, our
//! int8 against its Q8_0, our bf16 against its F16 (llama.cpp's CPU products
//! take f16 weights natively).

use std::path::{Path, PathBuf};
use std::process::Command;

use tp06_model::Precision;
use tp06_model::backend::Cpu;
use tp06_model::gguf::{About, GgufFormat};
use tp06_vocab::gguf::{GgufVocab, TokenType};

use crate::{BenchError, Measurement, median, run_child, shape};

/// What `tp06 bench --peer llama.cpp` measures.
pub struct PeerOptions {
    /// Shapes to measure.
    pub shapes: Vec<String>,
    /// Our precision, against its llama.cpp format ([`format_of`]).
    pub precision: Precision,
    /// Alternations per row.
    pub repeats: usize,
    /// Generations measured per run.
    pub steps: usize,
    /// Threads for both sides.
    pub threads: usize,
    /// Where to write the JSON.
    pub json: PathBuf,
    /// `bench/peer_llama_cpp.py`.
    pub script: PathBuf,
    /// This program (`bench-one`).
    pub exe: PathBuf,
}

/// llama.cpp's file format for our `precision`.
fn format_of(precision: Precision) -> GgufFormat {
    match precision {
        Precision::F32 => GgufFormat::F32,
        Precision::Bf16 => GgufFormat::F16,
        Precision::Int8 => GgufFormat::Q8_0,
    }
}

/// A vocabulary llama.cpp loads for a model of `rows` tokens: GPT-2's 256
/// byte characters (it looks up the newline's), then placeholders.
fn placeholder_vocab(rows: usize) -> GgufVocab {
    let mut tokens: Vec<String> = (0..=255u8).map(|b| tp06_vocab::extend::byte_char(b).to_string()).collect();
    tokens.extend((256..rows).map(|i| format!("[T{i}]")));
    tokens.truncate(rows);
    GgufVocab {
        types: vec![TokenType::Normal; tokens.len()],
        tokens,
        merges: Vec::new(),
        bos: None,
        eos: None,
        unk: None,
        pad: None,
    }
}

/// Writes the `bench-one` model of `shape` as GGUF in `format` under `dir`.
fn write_model(shape_name: &str, format: GgufFormat, dir: &Path) -> Result<PathBuf, BenchError> {
    let config = shape(shape_name)?;
    let path = dir.join(format!("{shape_name}-{format}.gguf"));
    let device = Default::default();
    let model = tp06_model::init_from_scratch::<Cpu>(&config, tp06_model::ScratchInit { seed: 1 }, &device);
    let about = About { name: format!("tp06 bench {shape_name}"), ..Default::default() };
    let vocab = placeholder_vocab(config.vocab_size);
    tp06_model::gguf::write(model, &config, &about, Some(&vocab), format, &path)?;
    Ok(path)
}

/// Runs the comparison, writes the JSON and returns the table.
pub fn bench(options: &PeerOptions) -> Result<String, BenchError> {
    if !options.script.is_file() {
        return Err(BenchError::NoScript(options.script.clone()));
    }
    let ok = Command::new("python3").args(["-c", "import llama_cpp"]).output().is_ok_and(|o| o.status.success());
    if !ok {
        return Err(BenchError::Child {
            what: "llama.cpp".into(),
            reason: "python3 cannot import llama_cpp; install it with `bash fixtures/install_llama_cpp.sh`".into(),
        });
    }
    if let Some(parent) = options.json.parent() {
        tp06_artifact::fs::create_dir_all(parent)?;
    }
    let temp = std::env::temp_dir().join(format!("tp06-bench-gguf-{}", std::process::id()));
    tp06_artifact::fs::create_dir_all(&temp)?;
    let result = rows(options, &temp);
    let _ = std::fs::remove_dir_all(&temp);
    result
}

fn rows(options: &PeerOptions, temp: &Path) -> Result<String, BenchError> {
    let (mut rows, mut all) = (Vec::new(), Vec::new());
    let mut table = format!(
        "{:<7} {:<12} {:>12} {:>14} {:>7} {:>9} {:>12} {:>7}\n",
        "shape", "format", "tp06 tok/s", "llama.cpp", "ratio", "tp06 MB", "llama.cpp MB", "ratio"
    );
    let threads = options.threads.to_string();
    let steps = options.steps.to_string();
    let (precision, format) = (options.precision, format_of(options.precision));
    for shape_name in &options.shapes {
        tracing::info!("bench: writing the {shape_name} model as GGUF ({format})");
        let file = write_model(shape_name, format, temp)?;
        let (mut ours, mut theirs) = (Vec::new(), Vec::new());
        for i in 1..=options.repeats {
            tracing::info!(
                "bench: generate {shape_name} {precision}/{format}, run {i}/{}: tp06 then llama.cpp",
                options.repeats
            );
            let mut a = Command::new(&options.exe);
            a.args(["bench-one", "generate", "--shape", shape_name, "--steps", &steps, "--threads", &threads]);
            a.args(["--precision", precision.name()]).env("RAYON_NUM_THREADS", &threads);
            ours.push(run_child(a, &format!("tp06 bench-one generate {shape_name} {precision}"))?);
            let mut b = Command::new("python3");
            b.arg(&options.script).arg("--gguf").arg(&file);
            b.args(["--shape", shape_name, "--dtype", format.name(), "--steps", &steps, "--threads", &threads]);
            theirs.push(run_child(b, &format!("bench/peer_llama_cpp.py {shape_name} {format}"))?);
        }
        let _ = std::fs::remove_file(&file);
        let speed = |m: &[Measurement]| median(m.iter().map(|x| x.tokens_per_second).collect());
        let rss = |m: &[Measurement]| median(m.iter().filter_map(|x| x.peak_rss_mb).collect());
        table.push_str(&format!(
            "{:<7} {:<12} {:>12.1} {:>14.1} {:>6.2}× {:>9.0} {:>12.0} {:>6.2}×\n",
            shape_name,
            format!("{precision}/{format}"),
            speed(&ours),
            speed(&theirs),
            speed(&ours) / speed(&theirs),
            rss(&ours),
            rss(&theirs),
            rss(&ours) / rss(&theirs),
        ));
        rows.push(serde_json::json!({
            "work": "generate", "shape": shape_name, "threads": options.threads, "tp06_precision": precision.name(),
            "llama_cpp_format": format.name(), "tp06_tokens_per_second": speed(&ours),
            "llama_cpp_tokens_per_second": speed(&theirs), "speed_ratio": speed(&ours) / speed(&theirs),
            "tp06_peak_rss_mb": rss(&ours), "llama_cpp_peak_rss_mb": rss(&theirs),
            "memory_ratio": rss(&ours) / rss(&theirs),
        }));
        all.extend(ours);
        all.extend(theirs);
        let report = serde_json::json!({"peer": "llama.cpp", "repeats": options.repeats, "steps": options.steps, "rows": rows, "runs": all});
        tp06_artifact::fs::write_json_atomic(&options.json, &report)?;
    }
    table.push_str(&format!(
        "medians of {} alternating runs each, {} thread(s), greedy, 16-token prompt, 128 new tokens; JSON in {}\n",
        options.repeats,
        options.threads,
        options.json.display()
    ));
    Ok(table)
}
