//! The engine: one thread that owns the models and decodes every request
//! it has admitted together, one token per row per step (continuous
//! batching): between two steps it admits waiting requests (each prompt
//! prefilled alone, its samples forked from it) while their rows fit in
//! `max_batch`, and answers those whose rows are all done. Each step decodes
//! the running rows of a model in one [`tp06_sample::decode_step`], whose
//! products read the weights once for all of them; each row chooses its
//! token with its own processors and generator, so a request's text is the
//! one it gets alone. Requests wait in a bounded queue; a full queue is
//! refused at once (503 with `Retry-After`), never left to hang. Each token
//! goes to the request's channel as it is chosen; the channel is bounded, so
//! a slow client holds the engine back rather than letting tokens pile up,
//! and when the client has gone (the channel is closed) its rows leave at
//! the next step. A request waits while the rows or the keys and values it
//! would add pass [`Limits`]; later ones wait behind it.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, TrySendError};

use tokio::sync::mpsc::Sender;
use tp06_model::Gpt2Ops;
use tp06_sample::{Flow, Generator, Length, Processing, Sequence, Step, decode_step, sample_seed};
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
    /// Rows (completions) being decoded.
    pub running: AtomicUsize,
    /// The most rows one step has decoded so far.
    pub widest: AtomicUsize,
    /// Bytes of keys and values the admitted requests may reach.
    pub kv_reserved: AtomicUsize,
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
    /// How the engine admits requests.
    pub limits: Limits,
}

/// What bounds the requests decoded together.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// The most rows (completions) a step decodes.
    pub max_batch: usize,
    /// The most bytes of keys and values the admitted requests' rows may
    /// reach, each row counted at its prompt plus its new tokens.
    pub kv_budget: usize,
}

impl Engine {
    /// Loads `specs` on `device` in a thread of its own and starts it,
    /// `capacity` requests waiting at most, admitted within `limits`; the
    /// engine stops generating when `stop` is set.
    pub fn start<B: Gpt2Ops>(
        specs: Vec<ModelSpec>,
        device: B::Device,
        capacity: usize,
        limits: Limits,
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
                decode(&generators, &queue, limits, stop, &shared);
            })
            .expect("a thread starts");
        let models =
            loaded.recv().unwrap_or_else(|_| Err(tp06_sample::SampleError::Stopped { what: "loading".into() }))?;
        Ok(Self { jobs, models, counters, capacity, limits })
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

/// A row of an admitted request: its choice, its sequence, its text.
struct LiveRow<B: Gpt2Ops> {
    choice: usize,
    seq: Sequence<B>,
    text: Row,
}

/// An admitted request and its rows.
struct Live<B: Gpt2Ops> {
    job: Job,
    rows: Vec<LiveRow<B>>,
    prompt_tokens: usize,
    /// The bytes of keys and values its rows may reach ([`kv_bytes`]).
    kv: usize,
}

impl<B: Gpt2Ops> Live<B> {
    /// Rows still decoding.
    fn running(&self) -> usize {
        self.rows.iter().filter(|r| !r.seq.is_done()).count()
    }
}

/// The bytes of keys and values `job`'s rows may reach on `g`'s model: per
/// row, two f32 vectors of `n_embd` per block and position, for its prompt
/// and its new tokens (within the context).
fn kv_bytes<B: Gpt2Ops>(g: &Generator<B>, job: &Job) -> usize {
    let model = &g.model;
    let per_position = 2 * model.h.len() * model.wpe.weight.dims()[1] * std::mem::size_of::<f32>();
    let positions: usize = job.prompts.iter().map(|p| (p.len() + job.max_tokens).min(model.n_positions())).sum();
    per_position * positions * job.n
}

/// The engine's loop, until the queue's senders are gone: admit, step,
/// choose, answer (see the module docs).
fn decode<B: Gpt2Ops>(
    generators: &[Generator<B>],
    queue: &Receiver<Job>,
    limits: Limits,
    stop: &AtomicBool,
    counters: &Counters,
) {
    let mut live: Vec<Live<B>> = Vec::new();
    let mut next: Option<Job> = None;
    let received = |job: Job| {
        counters.queued.fetch_sub(1, Ordering::SeqCst);
        job
    };
    loop {
        if live.is_empty() && next.is_none() {
            match queue.recv() {
                Ok(job) => next = Some(received(job)),
                Err(_) => return,
            }
        }
        // Admission: in order, while the rows and their keys and values fit
        // (a request alone always does).
        loop {
            let Some(job) = next.take().or_else(|| queue.try_recv().ok().map(received)) else { break };
            let g = &generators[job.model];
            let kv = kv_bytes(g, &job);
            let (running, reserved) = usage(&live);
            let fits = running + job.prompts.len() * job.n <= limits.max_batch && reserved + kv <= limits.kv_budget;
            if !live.is_empty() && !fits {
                next = Some(job);
                break;
            }
            let mut admitted = admit(g, job, kv);
            if choose(g, &mut admitted, stop, counters) {
                live.push(admitted);
            }
        }
        publish(&live, counters);
        for (m, g) in generators.iter().enumerate() {
            let mut rows: Vec<&mut Sequence<B>> = live
                .iter_mut()
                .filter(|l| l.job.model == m)
                .flat_map(|l| l.rows.iter_mut().map(|r| &mut r.seq))
                .collect();
            if !rows.is_empty() {
                let decoded = decode_step(&g.model, &mut rows);
                counters.widest.fetch_max(decoded, Ordering::SeqCst);
            }
        }
        live.retain_mut(|l| choose(&generators[l.job.model], l, stop, counters));
        publish(&live, counters);
    }
}

/// The rows still decoding and the bytes of keys and values reserved by `live`.
fn usage<B: Gpt2Ops>(live: &[Live<B>]) -> (usize, usize) {
    (live.iter().map(Live::running).sum(), live.iter().map(|l| l.kv).sum())
}

/// [`usage`] in the counters `/health` and `/metrics` show.
fn publish<B: Gpt2Ops>(live: &[Live<B>], counters: &Counters) {
    let (running, reserved) = usage(live);
    counters.running.store(running, Ordering::SeqCst);
    counters.kv_reserved.store(reserved, Ordering::SeqCst);
}

/// `job` with its rows, reserving `kv` bytes of keys and values
/// ([`kv_bytes`]): each prompt prefilled once, its `n` samples forked from
/// it, seeded as [`tp06_sample::generate`] seeds the rows of a prompt.
fn admit<B: Gpt2Ops>(g: &Generator<B>, job: Job, kv: usize) -> Live<B> {
    let mut rows = Vec::with_capacity(job.prompts.len() * job.n);
    for (p, prompt) in job.prompts.iter().enumerate() {
        let seed = sample_seed(job.seed, p * 7919);
        let length = Length::New(job.max_tokens);
        let first = Sequence::start(&g.model, prompt, job.processing, length, g.eos, sample_seed(seed, 0));
        for i in 0..job.n {
            let seq = if i == 0 { first.clone() } else { first.fork(sample_seed(seed, i)) };
            rows.push(LiveRow { choice: p * job.n + i, seq, text: Row::default() });
        }
    }
    let prompt_tokens = job.prompts.iter().map(Vec::len).sum();
    Live { job, rows, prompt_tokens, kv }
}

/// Each running row of `live` chooses its token and sends it; then, if
/// every row is done, the request is answered. Returns whether it goes on:
/// not when answered, nor when its client has gone or the server stops.
fn choose<B: Gpt2Ops>(g: &Generator<B>, live: &mut Live<B>, stop: &AtomicBool, counters: &Counters) -> bool {
    let Live { job, rows, prompt_tokens, .. } = live;
    for LiveRow { choice, seq, text } in rows.iter_mut().filter(|r| !r.seq.is_done()) {
        if seq.choose(&mut |step| emit(g, job, *choice, text, step, stop)) == Flow::Stop {
            if job.events.is_closed() {
                counters.cancelled.fetch_add(1, Ordering::SeqCst);
            } else {
                let _ = job.events.blocking_send(Event::Failed("the server is stopping".into()));
            }
            return false;
        }
    }
    if rows.iter().any(|r| !r.seq.is_done()) {
        return true;
    }
    for row in rows.iter().filter(|r| !r.text.ended) {
        // What was held back (an unfinished character) goes out with the end.
        let text_tail = row.text.unsent(&g.tok);
        let _ = job.events.blocking_send(Event::End { choice: row.choice, reason: "length", text_tail });
    }
    let completion_tokens = rows.iter().map(|r| r.seq.new_tokens()).sum();
    // Counted before the client can see the end, so `/health` never lags an answer.
    counters.served.fetch_add(1, Ordering::SeqCst);
    let _ = job.events.blocking_send(Event::Done { prompt_tokens: *prompt_tokens, completion_tokens });
    false
}

/// Sends row `choice`'s token `step` to `job`'s client, with what it asked
/// about it: its text (held back while it may be half a character or the
/// start of a stop text), log-probabilities, the processor chain. Says
/// [`Flow::Stop`] when the client has gone or `stop` is set, and
/// [`Flow::EndRow`] at a stop text.
fn emit<B: Gpt2Ops>(
    g: &Generator<B>,
    job: &Job,
    choice: usize,
    row: &mut Row,
    step: Step<'_>,
    stop: &AtomicBool,
) -> Flow {
    if job.events.is_closed() || stop.load(Ordering::SeqCst) {
        return Flow::Stop;
    }
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
