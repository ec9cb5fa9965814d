//! The engine: one thread that owns the models and generates, one request
//! after another, through the sample stage's decoder
//! ([`tp06_sample::generate_observed`]). Requests wait in a bounded queue; a
//! full queue is refused at once (503 with `Retry-After`), never left to
//! hang. Each token goes to the request's channel as it is chosen; the
//! channel is bounded, so a slow client holds the engine back rather than
//! letting tokens pile up, and when the client has gone (the channel is
//! closed) the generation stops at the next token.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc::{SyncSender, TrySendError};

use tokio::sync::mpsc::Sender;
use tp06_model::Gpt2Ops;
use tp06_sample::{Flow, Generator, Length, Processing, Step, generate_observed, sample_seed};
use tp06_vocab::Tok;

use crate::chain::{Chain, chain, logprobs};

/// A model the server offers.
#[derive(Debug, Clone)]
pub struct ModelSpec {
    /// Its id in the API (`tp06`, `tp06-base`).
    pub id: String,
    /// Its HF directory.
    pub dir: PathBuf,
    /// A peft LoRA adapter directory put on `dir` (merged when loaded).
    pub adapter: Option<PathBuf>,
    /// What it is, for the page (`fine-tuned`, `base`).
    pub role: &'static str,
    /// The format its weights are converted to at load.
    pub precision: tp06_model::Precision,
}

/// What the HTTP side knows of a loaded model.
pub struct ModelInfo {
    /// The spec it was loaded from.
    pub spec: ModelSpec,
    /// Its tokenizer.
    pub tok: Tok,
    /// Its context length.
    pub n_positions: usize,
}

/// One completion request, its prompts tokenised.
pub struct Job {
    /// Index into the models.
    pub model: usize,
    /// The prompts' ids.
    pub prompts: Vec<Vec<u32>>,
    /// Completions per prompt.
    pub n: usize,
    /// The processors.
    pub processing: Processing,
    /// New tokens at most.
    pub max_tokens: usize,
    /// The sampler's seed.
    pub seed: u64,
    /// Texts that end a completion.
    pub stop: Vec<String>,
    /// Alternatives' log-probabilities per token.
    pub logprobs: Option<usize>,
    /// Candidates of the processor chain per token.
    pub candidates: Option<usize>,
    /// Where the tokens go.
    pub events: Sender<Event>,
}

/// A token of a completion, with what was asked about it.
#[derive(Debug, Clone)]
pub struct Token {
    /// Its id.
    pub id: u32,
    /// Its own text.
    pub piece: String,
    /// The completion's new text since the last event (a token may end
    /// inside a character: its text then comes with the next one).
    pub delta: String,
    /// Its log-probability and the most likely tokens', when asked.
    pub logprob: Option<(f64, Vec<(String, f64)>)>,
    /// The processor chain at its position, when asked.
    pub chain: Option<Chain>,
}

/// What the engine sends a request.
#[derive(Debug, Clone)]
pub enum Event {
    /// A new token of choice `choice`.
    Token { choice: usize, token: Token },
    /// Choice `choice` is complete: `stop` (end of text or a stop text) or `length`.
    End { choice: usize, reason: &'static str, text_tail: String },
    /// Every choice is complete.
    Done { prompt_tokens: usize, completion_tokens: usize },
    /// The generation failed.
    Failed(String),
}

/// Counters shown by `/health`.
#[derive(Debug, Default)]
pub struct Counters {
    /// Requests waiting.
    pub queued: AtomicUsize,
    /// Completions given up because their client went away.
    pub cancelled: AtomicUsize,
    /// Requests answered whole.
    pub served: AtomicUsize,
}

/// The HTTP side's handle on the engine.
pub struct Engine {
    jobs: SyncSender<Job>,
    /// The models, as loaded.
    pub models: Vec<ModelInfo>,
    /// The counters.
    pub counters: Arc<Counters>,
    /// The queue's capacity.
    pub capacity: usize,
}

impl Engine {
    /// Loads `specs` on `device` in a thread of its own and starts it; the
    /// engine stops generating when `stop` is set.
    pub fn start<B: Gpt2Ops>(
        specs: Vec<ModelSpec>,
        device: B::Device,
        capacity: usize,
        stop: &'static AtomicBool,
    ) -> Result<Self, tp06_sample::SampleError>
    where
        B::Device: Send + 'static,
    {
        let (jobs, queue) = std::sync::mpsc::sync_channel::<Job>(capacity);
        let (ready, loaded) = std::sync::mpsc::channel();
        let counters = Arc::new(Counters::default());
        let shared = counters.clone();
        std::thread::Builder::new()
            .name("tp06-engine".into())
            .spawn(move || {
                let watch = tp06_artifact::Watch { progress: &tp06_artifact::NoProgress, stop };
                let mut generators = Vec::new();
                for spec in &specs {
                    let loaded = match &spec.adapter {
                        Some(adapter) => Generator::<B>::load_with_adapter(&spec.dir, adapter, spec.precision, &device),
                        None => Generator::<B>::load_in(&spec.dir, spec.precision, &device, watch),
                    };
                    match loaded {
                        Ok(g) => generators.push(g),
                        Err(e) => {
                            let _ = ready.send(Err(e));
                            return;
                        }
                    }
                }
                let infos = specs
                    .iter()
                    .zip(&generators)
                    .map(|(spec, g)| ModelInfo {
                        spec: spec.clone(),
                        tok: g.tok.clone(),
                        n_positions: g.model.n_positions(),
                    })
                    .collect();
                let _ = ready.send(Ok(infos));
                for job in queue {
                    shared.queued.fetch_sub(1, Ordering::SeqCst);
                    run(&generators[job.model], &job, stop, &shared);
                }
            })
            .expect("a thread starts");
        let models =
            loaded.recv().unwrap_or_else(|_| Err(tp06_sample::SampleError::Stopped { what: "loading".into() }))?;
        Ok(Self { jobs, models, counters, capacity })
    }

    /// Queues `job`.
    pub fn submit(&self, job: Job) -> Submitted {
        self.counters.queued.fetch_add(1, Ordering::SeqCst);
        let refused = match self.jobs.try_send(job) {
            Ok(()) => return Submitted::Queued,
            Err(TrySendError::Full(_)) => Submitted::Full,
            Err(TrySendError::Disconnected(_)) => Submitted::EngineGone,
        };
        self.counters.queued.fetch_sub(1, Ordering::SeqCst);
        refused
    }
}

/// What became of a submitted job.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Submitted {
    /// It waits its turn.
    Queued,
    /// The queue is full: try again later.
    Full,
    /// The engine thread has ended (it failed): nothing will generate.
    EngineGone,
}

/// One row's text so far.
#[derive(Default)]
struct Row {
    ids: Vec<u32>,
    /// The text already sent.
    sent: String,
    ended: bool,
}

impl Row {
    /// The row's text not sent yet (held back, or half a character).
    fn unsent(&self, tok: &Tok) -> String {
        let full = tok.decode(&self.ids, true).unwrap_or_default();
        full.strip_prefix(self.sent.as_str()).unwrap_or_default().to_string()
    }
}

/// `text` without its longest end that begins one of `stops`: that end is
/// sent once the next tokens show it is not a stop text.
fn held_back<'a>(text: &'a str, stops: &[String]) -> &'a str {
    let hold = stops
        .iter()
        .flat_map(|stop| stop.char_indices().skip(1).map(|(i, _)| &stop[..i]))
        .filter(|start| text.ends_with(start))
        .map(str::len)
        .max()
        .unwrap_or(0);
    &text[..text.len() - hold]
}

/// Generates `job` on `g`, sending its events; stops when the client is gone or `stop` is set.
fn run<B: Gpt2Ops>(g: &Generator<B>, job: &Job, stop: &AtomicBool, counters: &Counters) {
    let (mut prompt_tokens, mut completion_tokens) = (0, 0);
    for (p, prompt) in job.prompts.iter().enumerate() {
        prompt_tokens += prompt.len();
        let mut rows: Vec<Row> = (0..job.n).map(|_| Row::default()).collect();
        let seed = sample_seed(job.seed, p * 7919);
        let mut observe = |step: Step<'_>| -> Flow {
            if job.events.is_closed() {
                return Flow::Stop;
            }
            if stop.load(Ordering::SeqCst) {
                return Flow::Stop;
            }
            let choice = p * job.n + step.row;
            let row = &mut rows[step.row];
            let text = |id: u32| g.tok.decode(&[id], false).unwrap_or_default();
            let chain = job.candidates.map(|k| chain(step.logits, step.seen, &job.processing, k, step.token, text));
            let logprob = job.logprobs.map(|k| {
                let (lp, top) = logprobs(step.logits, k, step.token);
                (lp, top.into_iter().map(|(id, lp)| (text(id), lp)).collect())
            });
            if Some(step.token) == g.eos {
                row.ended = true;
                let token = Token { id: step.token, piece: text(step.token), delta: String::new(), logprob, chain };
                let _ = job.events.blocking_send(Event::Token { choice, token });
                // What was held back (the start of a stop text that did not come) goes out with the end.
                let _ = job.events.blocking_send(Event::End { choice, reason: "stop", text_tail: row.unsent(&g.tok) });
                return Flow::Continue;
            }
            row.ids.push(step.token);
            let full = g.tok.decode(&row.ids, true).unwrap_or_default();
            // A stop text ends the completion before it.
            let cut = job.stop.iter().filter_map(|s| full.find(s.as_str())).min();
            let visible = match cut {
                Some(at) => &full[..at],
                // Hold back what may be half a character, or the start of a stop text.
                None => held_back(full.trim_end_matches('\u{FFFD}'), &job.stop),
            };
            let delta = visible.strip_prefix(row.sent.as_str()).unwrap_or_default().to_string();
            row.sent.push_str(&delta);
            let token = Token { id: step.token, piece: text(step.token), delta, logprob, chain };
            let _ = job.events.blocking_send(Event::Token { choice, token });
            if cut.is_some() {
                row.ended = true;
                let _ = job.events.blocking_send(Event::End { choice, reason: "stop", text_tail: String::new() });
                return Flow::EndRow;
            }
            Flow::Continue
        };
        let generated = generate_observed(
            &g.model,
            prompt,
            &job.processing,
            Length::New(job.max_tokens),
            g.eos,
            job.n,
            seed,
            &mut observe,
        );
        let Some(generated) = generated else {
            if job.events.is_closed() {
                counters.cancelled.fetch_add(1, Ordering::SeqCst);
            } else {
                let _ = job.events.blocking_send(Event::Failed("the server is stopping".into()));
            }
            return;
        };
        for (row, (state, out)) in rows.iter().zip(&generated).enumerate() {
            completion_tokens += out.new_tokens;
            if !state.ended {
                // What was held back (an unfinished character) goes out with the end.
                let text_tail = state.unsent(&g.tok);
                let _ = job.events.blocking_send(Event::End { choice: p * job.n + row, reason: "length", text_tail });
            }
        }
    }
    // Counted before the client can see the end, so `/health` never lags an answer.
    counters.served.fetch_add(1, Ordering::SeqCst);
    let _ = job.events.blocking_send(Event::Done { prompt_tokens, completion_tokens });
}

#[cfg(test)]
mod tests {
    use super::held_back;

    #[test]
    fn the_start_of_a_stop_text_is_held_back() {
        let stops = ["\n\n".to_string(), "Pokémon".to_string()];
        assert_eq!(held_back("Il est un Pok", &stops), "Il est un ");
        assert_eq!(held_back("Il est un Poké", &stops), "Il est un ");
        assert_eq!(held_back("fin\n", &stops), "fin");
        assert_eq!(held_back("fin.", &stops), "fin.");
        assert_eq!(held_back("fin", &[]), "fin");
    }
}
