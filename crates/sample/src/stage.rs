//! The sample stage: the course's prompts, each with its temperature, on the
//! fine-tuned model and — for comparison, same prompts and seeds — on the base
//! model; `samples.jsonl` and a readable `samples.md`.

use std::time::Instant;

use serde::{Deserialize, Serialize};
use tp06_artifact::{Begin, Interrupted, Stage, StageContext, StageReport, StageWriter, UpstreamCheck};

use crate::config::Config;
use crate::{Generator, Processing, SampleError};

/// The sample stage's outputs.
pub mod outputs {
    /// One JSON record per sample.
    pub const SAMPLES: &str = "samples.jsonl";
    /// The samples, for people.
    pub const REPORT: &str = "samples.md";
}

/// One generated sample.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SampleRecord {
    /// `fine-tuned` or `base`.
    pub model: String,
    /// The prompt.
    pub prompt: String,
    /// Its temperature.
    pub temperature: f64,
    /// Sample index for this prompt.
    pub sample: usize,
    /// The seed the prompt was decoded with.
    pub seed: u64,
    /// Prompt and continuation.
    pub text: String,
    /// New tokens generated.
    pub new_tokens: usize,
    /// Whether it ended with `</s>`.
    pub stopped: bool,
}

/// The sample stage's headline numbers.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct SampleStats {
    /// Samples written.
    pub samples: usize,
    /// New tokens generated in all.
    pub new_tokens: usize,
    /// New tokens per second (KV cache, sampling included).
    pub tokens_per_second: f64,
}

/// The settings of prompt `temperature` under `config`.
pub fn processing(config: &Config, temperature: f64) -> Processing {
    Processing {
        do_sample: config.do_sample,
        temperature,
        top_k: config.top_k,
        top_p: config.top_p,
        repetition_penalty: config.repetition_penalty,
    }
}

fn markdown(records: &[SampleRecord]) -> String {
    let mut out = String::from("# Samples\n");
    let mut prompts: Vec<&str> = Vec::new();
    for r in records {
        if !prompts.contains(&r.prompt.as_str()) {
            prompts.push(&r.prompt);
        }
    }
    for prompt in prompts {
        out += &format!("\n## « {prompt} »\n");
        for r in records.iter().filter(|r| r.prompt == prompt) {
            out += &format!(
                "\n**{}** (temperature {}, seed {}, sample {}, {} new tokens{}):\n\n> {}\n",
                r.model,
                r.temperature,
                r.seed,
                r.sample + 1,
                r.new_tokens,
                if r.stopped { ", ended with </s>" } else { "" },
                r.text.replace('\n', "\n> ")
            );
        }
    }
    out
}

/// Runs the sample stage into `run`.
pub fn run<B: tp06_model::Gpt2Ops>(ctx: &StageContext<B::Device>, config: &Config) -> Result<StageReport, SampleError> {
    let (run, device, progress, force) = (ctx.run, &ctx.device, ctx.progress, ctx.force);
    config.validate()?;
    let train = UpstreamCheck::require(run, Stage::Train)?;
    let model = UpstreamCheck::require(run, Stage::Model)?;
    let inputs = vec![train.input.clone(), model.input.clone()];
    let config_json = serde_json::to_value(config).expect("the sample config serialises");
    let writer = match StageWriter::begin_unless_up_to_date(run, Stage::Sample, config_json, inputs, force)? {
        Begin::UpToDate(manifest) => {
            let records = read_records(&manifest.output_path(run, outputs::SAMPLES));
            return Ok(StageReport { summary: markdown(&records), manifest, up_to_date: true });
        }
        Begin::Run(writer) => writer,
    };
    // Stopped between two tensors: the stage's interruption, with the command that goes on.
    let load = |dir: &std::path::Path| match Generator::<B>::load_in(dir, config.precision, device, ctx.watch()) {
        Ok(g) => Ok(g),
        Err(SampleError::Model(tp06_model::ModelError::Stopped { .. })) => {
            Err(SampleError::from(Interrupted::of(Stage::Sample, run)))
        }
        Err(e) => Err(e),
    };
    let mut models = vec![("fine-tuned", load(&train.manifest.output_path(run, "export"))?)];
    if config.compare_base {
        models.push(("base", load(&run.stage_dir(Stage::Model))?));
    }
    let total = (models.len() * config.prompts.len()) as u64;
    let mut task = progress.begin("sample", total);
    let (mut records, mut new_tokens, started) = (Vec::new(), 0usize, Instant::now());
    for (label, generator) in &models {
        for (index, prompt) in config.prompts.iter().enumerate() {
            tp06_artifact::fault::interrupt("generation");
            ctx.check_stop(Stage::Sample)?;
            let temperature = prompt.temperature.unwrap_or(config.temperature);
            let seed = config.seed + index as u64;
            let outs = generator.complete_unless(
                &prompt.text,
                &processing(config, temperature),
                config.length(),
                config.num_samples,
                seed,
                ctx.stop,
            )?;
            // Stopped between two tokens.
            let Some(outs) = outs else { return Err(Interrupted::of(Stage::Sample, run).into()) };
            for (sample, (text, generated)) in outs.into_iter().enumerate() {
                new_tokens += generated.new_tokens;
                records.push(SampleRecord {
                    model: label.to_string(),
                    prompt: prompt.text.clone(),
                    temperature,
                    sample,
                    seed,
                    text,
                    new_tokens: generated.new_tokens,
                    stopped: generated.stopped,
                });
            }
            task.set_position(records.len() as u64 / config.num_samples as u64);
        }
    }
    task.finish();
    let seconds = started.elapsed().as_secs_f64();
    let mut jsonl = String::new();
    for r in &records {
        jsonl += &serde_json::to_string(r).expect("a record serialises");
        jsonl.push('\n');
    }
    tp06_artifact::fs::write_atomic(&writer.path(outputs::SAMPLES), jsonl.as_bytes())?;
    let md = markdown(&records);
    tp06_artifact::fs::write_atomic(&writer.path(outputs::REPORT), md.as_bytes())?;
    let stats =
        SampleStats { samples: records.len(), new_tokens, tokens_per_second: new_tokens as f64 / seconds.max(1e-9) };
    let manifest = writer.finish(
        &[outputs::SAMPLES.to_string(), outputs::REPORT.to_string()],
        serde_json::json!({ "seed": config.seed, "backend": ctx.backend }),
        serde_json::to_value(&stats).expect("stats serialise"),
    )?;
    Ok(StageReport { summary: md, manifest, up_to_date: false })
}

/// Reads `samples.jsonl` (unreadable lines skipped).
pub fn read_records(path: &std::path::Path) -> Vec<SampleRecord> {
    std::fs::read_to_string(path)
        .map(|t| t.lines().filter_map(|l| serde_json::from_str(l).ok()).collect())
        .unwrap_or_default()
}
