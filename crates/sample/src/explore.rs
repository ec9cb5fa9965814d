//! The exploration notebook's demos, on real models:
//! - §4 smart initialisation: add only `Pikachu`, set its row to exactly the
//!   embedding of `animal`, and compare the next-token distributions;
//! - §6.2 sampling: a real next-token distribution under several temperatures,
//!   and what top-k and top-p keep.

use burn::prelude::*;
use burn::tensor::s;
use serde::{Deserialize, Serialize};
use tp06_artifact::Watch;
use tp06_model::{Gpt2, Gpt2Ops, Pass, RowInit};
use tp06_vocab::Tok;

use crate::processors::{self, Processing};
use crate::{Generator, Length, SampleError};

/// One token of a distribution.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TopToken {
    /// Its id.
    pub id: u32,
    /// Its text.
    pub text: String,
    /// Its probability.
    pub prob: f64,
}

/// The most likely next tokens after a prompt.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Distribution {
    /// The prompt.
    pub prompt: String,
    /// How the prompt tokenises.
    pub pieces: Vec<String>,
    /// The top tokens, most likely first.
    pub top: Vec<TopToken>,
}

/// Next-token logits of `prompt`.
pub fn next_logits<B: Gpt2Ops>(model: &Gpt2<B>, tok: &Tok, prompt: &str) -> Result<Vec<f32>, SampleError> {
    let ids = tok.encode(prompt)?;
    if ids.is_empty() {
        return Err(SampleError::EmptyPrompt(prompt.into()));
    }
    let n = ids.len();
    let device = model.wte.weight.device();
    let input = Tensor::<B, 2, Int>::from_data(
        TensorData::new(ids.iter().map(|&i| i as i64).collect::<Vec<_>>(), [1, n]),
        &device,
    );
    let logits = model.forward(input, &mut Pass::inference()).slice(s![.., n - 1..n, ..]).flatten::<1>(0, 2);
    Ok(logits.into_data().convert::<f32>().into_vec().expect("f32 logits"))
}

/// The `n` most likely tokens of `probs`.
pub fn top_tokens(tok: &Tok, probs: &[f64], n: usize) -> Vec<TopToken> {
    let mut order: Vec<usize> = (0..probs.len()).collect();
    order.sort_by(|&a, &b| probs[b].total_cmp(&probs[a]).then(a.cmp(&b)));
    order
        .into_iter()
        .take(n)
        .map(|i| TopToken { id: i as u32, text: tok.decode(&[i as u32], false).unwrap_or_default(), prob: probs[i] })
        .collect()
}

fn distribution<B: Gpt2Ops>(model: &Gpt2<B>, tok: &Tok, prompt: &str) -> Result<(Distribution, Vec<f64>), SampleError> {
    let probs = processors::softmax(&next_logits(model, tok, prompt)?);
    let pieces = tok.encode_pieces(prompt)?.1;
    Ok((Distribution { prompt: prompt.into(), pieces, top: top_tokens(tok, &probs, 8) }, probs))
}

/// The smart-initialisation demo's results.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SmartInit {
    /// The name added.
    pub name: String,
    /// The reference word and its id.
    pub reference: (String, u32),
    /// The new token's id.
    pub new_id: u32,
    /// `name est un` before the change.
    pub before: Distribution,
    /// `name est un` after the change.
    pub after: Distribution,
    /// `reference est un` after the change.
    pub reference_prompt: Distribution,
    /// Largest difference between the two full distributions after the change.
    pub max_abs_diff: f64,
    /// Sampled continuations (temperature 0.7, top-k 50, 50 tokens), per prompt.
    pub samples_before: Vec<String>,
    /// After the change.
    pub samples_after: Vec<String>,
    /// For the reference word.
    pub samples_reference: Vec<String>,
}

/// The notebook's `generate_demo`: sampling at 0.7, top-k 50, `max_length` 50.
const DEMO: Processing =
    Processing { do_sample: true, temperature: 0.7, top_k: 50, top_p: 1.0, repetition_penalty: 1.0 };

/// Where the smart-initialisation demo's result goes, in `RUN_DIR/explore/`.
pub const SMART_INIT_FILE: &str = "smart_init.json";

/// Where the sampling demo's result goes, in `RUN_DIR/explore/`.
pub const SAMPLING_FILE: &str = "sampling.json";

/// The name the notebook's smart-initialisation demo adds.
pub const NOTEBOOK_NAME: &str = "Pikachu";

/// The reference word the notebook's demo initialises it to.
pub const NOTEBOOK_REFERENCE: &str = "animal";

/// The prompt of the notebook's sampling demo.
pub const NOTEBOOK_PROMPT: &str = "Pikachu est un Pokémon de type";

/// The notebook's reference word first, then the configured ones
/// (`model.reference_words`), for a tokenizer that lacks it as one token.
pub fn reference_candidates(configured: &[String]) -> Vec<String> {
    let mut words = vec![NOTEBOOK_REFERENCE.to_string()];
    words.extend(configured.iter().filter(|w| *w != NOTEBOOK_REFERENCE).cloned());
    words
}

/// The base model of the model stage's settings and its tokenizer, as the
/// smart-initialisation demo starts from them; its weights' reading shown by
/// `watch`, and stopped between two tensors when that says so.
pub fn base_model<B: Gpt2Ops>(
    hub: &tp06_artifact::hub::Hub,
    config: &tp06_model::StageConfig,
    device: &B::Device,
    watch: Watch<'_>,
) -> Result<(Gpt2<B>, Tok), SampleError> {
    let (model, dir) = tp06_model::load_base::<B>(hub, config, device, watch)?;
    Ok((model, Tok::from_dir(dir.tokenizer_dir())?))
}

/// Runs the smart-initialisation demo on a base model and its tokenizer, with
/// the first of `references` that is a single token (the notebook uses `animal`).
/// Its nine generations are shown by `watch` and stopped between two of
/// them when it says so ([`SampleError::Stopped`]).
pub fn smart_init<B: Gpt2Ops>(
    model: Gpt2<B>,
    tok: &Tok,
    name: &str,
    references: &[String],
    seed: u64,
    watch: Watch<'_>,
) -> Result<SmartInit, SampleError> {
    let Some((reference, reference_id)) = tp06_vocab::reference_word(tok, references)? else {
        return Err(SampleError::NoReferenceWord { words: references.join(", ") });
    };
    let reference = reference.as_str();
    let prompt = format!("{name} est un");
    let reference_prompt = format!("{reference} est un");
    let eos = tok.special_id(tok.specials.eos.as_ref());
    // Three batched generations (before, after, the reference word's): the
    // demo stops between two of them.
    let mut task = watch.begin("smart-init demo", 3);
    let mut done = 0;
    let mut samples = |g: &Generator<B>, p: &str| -> Result<Vec<String>, SampleError> {
        if watch.stops_at("generation") {
            return Err(SampleError::Stopped { what: "the smart-initialisation demo".into() });
        }
        let Some(outs) = g.complete_unless(p, &DEMO, Length::Total(50), 3, seed, watch.stop)? else {
            return Err(SampleError::Stopped { what: "the smart-initialisation demo".into() });
        };
        let texts = outs.into_iter().map(|(t, _)| t).collect();
        done += 1;
        task.set_position(done);
        Ok(texts)
    };

    let base = Generator { model, tok: tok.clone(), eos, dir: Default::default() };
    let (before, _) = distribution(&base.model, tok, &prompt)?;
    let samples_before = samples(&base, &prompt)?;

    // Add the name as the course does (a plain added token) and set its row to
    // exactly the reference word's embedding.
    let (extended, _) = tp06_vocab::extend::course(tok, &[name.to_string()])?;
    let new_id = match extended.encode(name)?.as_slice() {
        [id] => *id,
        _ => return Err(SampleError::NotOneToken { name: name.into() }),
    };
    let rows = extended.vocab_size().max(base.model.vocab_size());
    let row = RowInit::Reference { id: reference_id, noise_std: 0.0 };
    let model = tp06_model::resize_wte(base.model, rows, seed, |_| row.clone());
    let after_gen = Generator { model, tok: extended.clone(), eos, dir: Default::default() };
    let (after, after_probs) = distribution(&after_gen.model, &extended, &prompt)?;
    let (reference_dist, reference_probs) = distribution(&after_gen.model, &extended, &reference_prompt)?;
    let max_abs_diff = after_probs.iter().zip(&reference_probs).map(|(a, b)| (a - b).abs()).fold(0.0, f64::max);
    let (samples_after, samples_reference) = (samples(&after_gen, &prompt)?, samples(&after_gen, &reference_prompt)?);
    task.finish();
    Ok(SmartInit {
        name: name.into(),
        reference: (reference.into(), reference_id),
        new_id,
        before,
        samples_after,
        samples_reference,
        after,
        reference_prompt: reference_dist,
        max_abs_diff,
        samples_before,
    })
}

fn bar(prob: f64, width: f64) -> String {
    "█".repeat((prob * width).round() as usize)
}

fn table(d: &Distribution) -> String {
    let mut out = format!("  « {} » → {:?}\n", d.prompt, d.pieces);
    for t in &d.top {
        out += &format!("    {:<16} {:>6.1}% {}\n", format!("{:?}", t.text), 100.0 * t.prob, bar(t.prob, 40.0));
    }
    out
}

impl SmartInit {
    /// The demo as the notebook prints it.
    pub fn summary(&self) -> String {
        let line = "═".repeat(60);
        let mut out = format!("{line}\nSmart token initialisation: {:?} = {:?}\n{line}\n", self.name, self.reference.0);
        out += "\nBEFORE adding the token\n";
        out += &table(&self.before);
        for s in &self.samples_before {
            out += &format!("    · {s}\n");
        }
        out += &format!(
            "\nAFTER adding {:?} (id {}) initialised with the embedding of {:?} (id {})\n",
            self.name, self.new_id, self.reference.0, self.reference.1
        );
        out += &table(&self.after);
        for s in &self.samples_after {
            out += &format!("    · {s}\n");
        }
        out += "\nComparison\n";
        out += &table(&self.reference_prompt);
        for s in &self.samples_reference {
            out += &format!("    · {s}\n");
        }
        out += &format!(
            "\nLargest difference between the two next-token distributions: {:.2e} → {}\n",
            self.max_abs_diff,
            if self.max_abs_diff < 1e-6 {
                "identical: the model now reads the name as the reference word"
            } else {
                "they differ"
            }
        );
        out
    }
}

/// The sampling demo's results.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SamplingDemo {
    /// The prompt and its raw distribution.
    pub raw: Distribution,
    /// Per temperature, the top tokens.
    pub temperatures: Vec<(f64, Vec<TopToken>)>,
    /// Per k: tokens kept and their total probability.
    pub top_k: Vec<(usize, usize, f64)>,
    /// Per p: tokens kept, their total probability, and the kept tokens (at most 12).
    pub top_p: Vec<(f64, usize, f64, Vec<TopToken>)>,
}

/// Runs the sampling demo on `prompt`.
pub fn sampling<B: Gpt2Ops>(model: &Gpt2<B>, tok: &Tok, prompt: &str) -> Result<SamplingDemo, SampleError> {
    let logits = next_logits(model, tok, prompt)?;
    let probs = processors::softmax(&logits);
    let raw =
        Distribution { prompt: prompt.into(), pieces: tok.encode_pieces(prompt)?.1, top: top_tokens(tok, &probs, 10) };
    let temperatures = [0.3, 0.7, 1.0, 1.5]
        .iter()
        .map(|&t| {
            let mut l = logits.clone();
            processors::temperature(&mut l, t as f32);
            (t, top_tokens(tok, &processors::softmax(&l), 6))
        })
        .collect();
    let kept = |l: &[f32]| -> (usize, f64) {
        let n = l.iter().filter(|v| v.is_finite()).count();
        let mass = l.iter().zip(&probs).filter(|(v, _)| v.is_finite()).map(|(_, p)| p).sum();
        (n, mass)
    };
    let top_k = [1, 3, 10, 50]
        .iter()
        .map(|&k| {
            let mut l = logits.clone();
            processors::top_k(&mut l, k);
            let (n, mass) = kept(&l);
            (k, n, mass)
        })
        .collect();
    let top_p = [0.5, 0.9, 0.95]
        .iter()
        .map(|&p| {
            let mut l = logits.clone();
            processors::top_p(&mut l, p);
            let (n, mass) = kept(&l);
            let masked: Vec<f64> = l.iter().zip(&probs).map(|(v, p)| if v.is_finite() { *p } else { 0.0 }).collect();
            (p, n, mass, top_tokens(tok, &masked, n.min(12)))
        })
        .collect();
    Ok(SamplingDemo { raw, temperatures, top_k, top_p })
}

impl SamplingDemo {
    /// The demo as bar tables.
    pub fn summary(&self) -> String {
        let line = "═".repeat(60);
        let mut out = format!("{line}\nNext-token distribution of the model\n{line}\n");
        out += &table(&self.raw);
        out += "\nTemperature\n";
        for (t, top) in &self.temperatures {
            out += &format!("  T = {t}\n");
            for tok in top {
                out += &format!(
                    "    {:<16} {:>6.1}% {}\n",
                    format!("{:?}", tok.text),
                    100.0 * tok.prob,
                    bar(tok.prob, 30.0)
                );
            }
        }
        out += "\nTop-k: tokens kept and their probability mass\n";
        for (k, n, mass) in &self.top_k {
            out += &format!("  k = {k:<3} keeps {n:>5} tokens, {:>5.1}% of the mass\n", 100.0 * mass);
        }
        out += "\nTop-p: the smallest set reaching p\n";
        for (p, n, mass, tokens) in &self.top_p {
            let names: Vec<String> = tokens.iter().map(|t| format!("{:?}", t.text)).collect();
            out += &format!(
                "  p = {p:<4} keeps {n:>5} tokens ({:.1}%): {}{}\n",
                100.0 * mass,
                names.join(" "),
                if *n > tokens.len() { " …" } else { "" }
            );
        }
        out
    }
}
