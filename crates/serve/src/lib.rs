//! `tp06 serve`: the fine-tuned model (and its base model, to compare) behind
//! an OpenAI-compatible completions API and a generation playground page.
//!
//! - `GET /` — the playground (every asset in the page; French, `?lang=en`);
//! - `POST /v1/completions` — OpenAI's legacy completions (`stream` as
//!   server-sent events ending in `[DONE]`, `n`, `stop`, `seed`, `logprobs`),
//!   with `top_k`, `repetition_penalty` and `candidates` (the processor chain
//!   of each token, for the playground) as extensions;
//! - `GET /v1/models`, `GET /health`, `GET /api/info` (what the page shows).
//!
//! One engine thread generates through the sample stage's decoder
//! ([`engine`]); the HTTP side (axum on tokio, tower-http for the body limit
//! and request tracing) checks requests ([`api`]), queues them and turns the
//! engine's events into OpenAI's JSON. Binding another address than loopback
//! needs an API key, checked as a bearer token on `/v1/`.

pub mod api;
pub mod chain;
pub mod engine;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::Router;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::sse::{Event as SseEvent, Sse};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::{Map, Value, json};
use tokio::sync::mpsc::Receiver;
use tp06_model::Gpt2Ops;

use crate::api::{ApiError, Completion};
use crate::engine::{Engine, Event, Job, Submitted};
pub use crate::engine::{Limits, ModelSpec};

/// How the server runs.
#[derive(Debug, Clone)]
pub struct Options {
    /// Where to listen (port 0: any free port).
    pub addr: SocketAddr,
    /// The bearer token `/v1/` requires (needed off loopback).
    pub api_key: Option<String>,
    /// Requests that may wait while one generates; more are refused (503).
    pub queue: usize,
    /// What bounds the requests decoded together.
    pub limits: engine::Limits,
    /// The page's language: `fr` or `en`.
    pub lang: String,
    /// The prompts the page offers (the preset's).
    pub prompts: Vec<String>,
    /// The largest request body, in bytes.
    pub max_body: usize,
}

/// Why the server could not run.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// A model did not load.
    #[error(transparent)]
    Load(#[from] tp06_sample::SampleError),
    /// Another address than loopback without an API key.
    #[error(
        "--addr {addr} is not a loopback address: anyone who can reach it could use the server; pass --api-key KEY (clients then send `Authorization: Bearer KEY`), or bind 127.0.0.1"
    )]
    NeedsKey { addr: SocketAddr },
    /// The address could not be bound.
    #[error("cannot listen on {addr}: {source}; is another server there? pick another port with --addr")]
    Bind { addr: SocketAddr, source: std::io::Error },
    /// The runtime could not start or the server failed.
    #[error("the server failed: {0}")]
    Io(#[from] std::io::Error),
}

/// Events a request's channel holds before the engine waits for its client.
const EVENTS: usize = 64;

struct AppState {
    engine: Engine,
    options: Options,
    requests: AtomicU64,
}

/// Loads `models` on `device`, listens on `options.addr`, calls `ready` with
/// the page's URL, and serves until `stop` is set (Ctrl-C).
pub fn serve<B: Gpt2Ops>(
    models: Vec<ModelSpec>,
    device: B::Device,
    options: Options,
    stop: &'static AtomicBool,
    ready: impl FnOnce(&str),
) -> Result<(), ServeError>
where
    B::Device: Send + 'static,
{
    if !options.addr.ip().is_loopback() && options.api_key.is_none() {
        return Err(ServeError::NeedsKey { addr: options.addr });
    }
    let engine = Engine::start::<B>(models, device, options.queue, options.limits, stop)?;
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
    runtime.block_on(async move {
        let addr = options.addr;
        let listener = tokio::net::TcpListener::bind(addr).await.map_err(|source| ServeError::Bind { addr, source })?;
        let bound = listener.local_addr()?;
        let state = Arc::new(AppState { engine, options, requests: AtomicU64::new(0) });
        ready(&format!("http://{bound}/"));
        let stopped = async move {
            while !stop.load(Ordering::SeqCst) {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        };
        axum::serve(listener, router(state)).with_graceful_shutdown(stopped).await?;
        Ok(())
    })
}

fn router(state: Arc<AppState>) -> Router {
    let limit = state.options.max_body;
    Router::new()
        .route("/", get(page))
        .route("/health", get(health))
        .route("/metrics", get(metrics))
        .route("/api/info", get(info))
        .route("/v1/models", get(models))
        .route("/v1/completions", post(completions))
        .fallback(|| async {
            ApiError::new(StatusCode::NOT_FOUND, "no such endpoint; see GET /v1/models, POST /v1/completions")
        })
        .layer(tower_http::limit::RequestBodyLimitLayer::new(limit))
        .layer(axum::middleware::map_response(json_limit_errors))
        .layer(tower_http::trace::TraceLayer::new_for_http())
        .with_state(state)
}

/// The body limit's 413 in OpenAI's shape (tower-http answers in plain text).
async fn json_limit_errors(response: Response) -> Response {
    let json =
        response.headers().get(header::CONTENT_TYPE).is_some_and(|v| v.as_bytes().starts_with(b"application/json"));
    if response.status() == StatusCode::PAYLOAD_TOO_LARGE && !json {
        return ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, "the request body is too large; send a shorter prompt")
            .into_response();
    }
    response
}

fn authorize(state: &AppState, headers: &HeaderMap) -> Result<(), ApiError> {
    let Some(key) = &state.options.api_key else { return Ok(()) };
    let sent = headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()).and_then(|v| v.strip_prefix("Bearer "));
    if sent == Some(key.as_str()) {
        Ok(())
    } else {
        Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            "missing or wrong API key; send `Authorization: Bearer KEY` with the key the server was started with",
        ))
    }
}

async fn page(State(state): State<Arc<AppState>>, Query(query): Query<Map<String, Value>>) -> Html<String> {
    let lang = match query.get("lang").and_then(Value::as_str) {
        Some("en") => "en",
        Some("fr") => "fr",
        _ => state.options.lang.as_str(),
    };
    Html(include_str!("playground.html").replace("__LANG__", lang))
}

async fn health(State(state): State<Arc<AppState>>) -> axum::Json<Value> {
    let c = &state.engine.counters;
    axum::Json(json!({
        "status": "ok",
        "models": state.engine.models.iter().map(|m| m.spec.id.clone()).collect::<Vec<_>>(),
        "queued": c.queued.load(Ordering::SeqCst),
        "capacity": state.engine.capacity,
        "running": c.running.load(Ordering::SeqCst),
        "widest_step": c.widest.load(Ordering::SeqCst),
        "max_batch": state.engine.limits.max_batch,
        "kv_reserved_bytes": c.kv_reserved.load(Ordering::SeqCst),
        "kv_budget_bytes": state.engine.limits.kv_budget,
        "served": c.served.load(Ordering::SeqCst),
        "cancelled": c.cancelled.load(Ordering::SeqCst),
    }))
}

/// `/metrics` in Prometheus' text format, as llama.cpp's server gives its
/// own: the requests waiting, the rows decoding, the widest step, the keys
/// and values reserved, the requests answered and cancelled.
async fn metrics(State(state): State<Arc<AppState>>) -> String {
    let c = &state.engine.counters;
    let rows = [
        ("tp06_requests_queued", "gauge", "Requests waiting to be admitted.", c.queued.load(Ordering::SeqCst)),
        ("tp06_rows_running", "gauge", "Completions decoding together.", c.running.load(Ordering::SeqCst)),
        ("tp06_rows_max", "gauge", "The most completions a step decodes (--max-batch).", state.engine.limits.max_batch),
        (
            "tp06_rows_widest_step",
            "gauge",
            "The most completions one step has decoded.",
            c.widest.load(Ordering::SeqCst),
        ),
        (
            "tp06_kv_reserved_bytes",
            "gauge",
            "Keys and values the admitted requests may reach.",
            c.kv_reserved.load(Ordering::SeqCst),
        ),
        (
            "tp06_kv_budget_bytes",
            "gauge",
            "The budget of keys and values (--kv-budget-mb).",
            state.engine.limits.kv_budget,
        ),
        ("tp06_requests_served_total", "counter", "Requests answered whole.", c.served.load(Ordering::SeqCst)),
        (
            "tp06_requests_cancelled_total",
            "counter",
            "Requests whose client went away.",
            c.cancelled.load(Ordering::SeqCst),
        ),
    ];
    rows.iter()
        .map(|(name, kind, help, value)| format!("# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}\n"))
        .collect()
}

async fn info(State(state): State<Arc<AppState>>) -> axum::Json<Value> {
    axum::Json(json!({
        "models": state.engine.models.iter().map(|m| json!({"id": m.spec.id, "role": m.spec.role, "n_positions": m.n_positions})).collect::<Vec<_>>(),
        "prompts": state.options.prompts,
        "lang": state.options.lang,
        "auth": state.options.api_key.is_some(),
        "max_n": api::MAX_N,
        "max_alternatives": api::MAX_ALTERNATIVES,
    }))
}

fn created() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

async fn models(State(state): State<Arc<AppState>>, headers: HeaderMap) -> Result<axum::Json<Value>, ApiError> {
    authorize(&state, &headers)?;
    let data: Vec<Value> = state
        .engine
        .models
        .iter()
        .map(|m| json!({"id": m.spec.id, "object": "model", "created": 0, "owned_by": "tp06"}))
        .collect();
    Ok(axum::Json(json!({"object": "list", "data": data})))
}

async fn completions(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    authorize(&state, &headers)?;
    let body = body.map_err(|rejection| match rejection.status() {
        StatusCode::PAYLOAD_TOO_LARGE => {
            ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, "the request body is too large; send a shorter prompt")
        }
        status => ApiError::new(status, format!("cannot read the request body: {rejection}")),
    })?;
    let request = Completion::parse(&body)?;
    let Some(index) = state.engine.models.iter().position(|m| m.spec.id == request.model) else {
        let have: Vec<&str> = state.engine.models.iter().map(|m| m.spec.id.as_str()).collect();
        let mut err = ApiError::new(
            StatusCode::NOT_FOUND,
            format!("the model `{}` does not exist; this server has {}", request.model, have.join(", ")),
        );
        err.param = Some("model".into());
        err.code = Some("model_not_found");
        return Err(err);
    };
    let model = &state.engine.models[index];
    let mut prompts = Vec::new();
    for text in &request.prompts {
        let ids = model.tok.encode(text).map_err(|e| ApiError::invalid("prompt", e.to_string()))?;
        let context = model.n_positions;
        if ids.is_empty() {
            return Err(ApiError::invalid("prompt", "a prompt encodes to no token; send some text"));
        }
        if ids.len() >= context {
            return Err(ApiError::invalid(
                "prompt",
                format!("a prompt is {} tokens but the model's context is {context}; shorten it", ids.len()),
            ));
        }
        if ids.len() + request.max_tokens > context {
            return Err(ApiError::invalid(
                "max_tokens",
                format!(
                    "`max_tokens` {} and the prompt's {} tokens exceed the model's context of {context}; ask for at most {}",
                    request.max_tokens,
                    ids.len(),
                    context - ids.len()
                ),
            ));
        }
        prompts.push(ids);
    }
    let number = state.requests.fetch_add(1, Ordering::SeqCst);
    let seed = request.seed.unwrap_or_else(|| {
        let nanos = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_nanos() as u64);
        nanos ^ number.wrapping_mul(tp06_model::rng::GAMMA)
    });
    let (events, received) = tokio::sync::mpsc::channel(EVENTS);
    let job = Job {
        model: index,
        prompts,
        n: request.n,
        processing: request.processing,
        max_tokens: request.max_tokens,
        seed,
        stop: request.stop.clone(),
        logprobs: request.logprobs,
        candidates: request.candidates,
        events,
    };
    match state.engine.submit(job) {
        Submitted::Queued => {}
        Submitted::Full => {
            let mut err = ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                format!("the server is busy ({} requests waiting); retry in a moment", state.engine.capacity),
            );
            err.retry_after = Some(1);
            return Err(err);
        }
        Submitted::EngineGone => {
            let why = "the generation engine has stopped (see the server's log); restart the server";
            return Err(ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, why));
        }
    }
    let id = format!("cmpl-{}-{number}", created());
    let choices = request.prompts.len() * request.n;
    if request.stream {
        let chunks = Chunks {
            id,
            model: request.model.clone(),
            choices: vec![0; choices],
            request,
            received,
            usage_sent: false,
            done: false,
        };
        let stream = futures_util::stream::unfold(chunks, |mut chunks| async move {
            let event = chunks.next().await?;
            Some((Ok::<SseEvent, Infallible>(event), chunks))
        });
        return Ok(Sse::new(stream).into_response());
    }
    collect(id, &request, choices, received).await
}

/// OpenAI's `usage` object.
fn usage(prompt_tokens: usize, completion_tokens: usize) -> Value {
    json!({"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens, "total_tokens": prompt_tokens + completion_tokens})
}

/// The engine's channel closed without a `Done` (its thread failed).
fn lost() -> ApiError {
    ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "the generation ended without an answer")
}

/// A choice of a complete (not streamed) answer.
#[derive(Default)]
struct Choice {
    text: String,
    tokens: Vec<String>,
    token_logprobs: Vec<f64>,
    top_logprobs: Vec<Value>,
    text_offset: Vec<usize>,
    chains: Vec<Value>,
    finish: Option<&'static str>,
}

/// OpenAI's `logprobs` object of one token.
fn top_map(top: &[(String, f64)]) -> Value {
    Value::Object(top.iter().map(|(t, lp)| (t.clone(), json!(lp))).collect())
}

async fn collect(
    id: String,
    request: &Completion,
    choices: usize,
    mut received: Receiver<Event>,
) -> Result<Response, ApiError> {
    let mut out: Vec<Choice> = (0..choices).map(|_| Choice::default()).collect();
    while let Some(event) = received.recv().await {
        match event {
            Event::Token { choice, token } => {
                let c = &mut out[choice];
                if let Some((lp, top)) = &token.logprob {
                    c.text_offset.push(c.text.len());
                    c.tokens.push(token.piece.clone());
                    c.token_logprobs.push(*lp);
                    c.top_logprobs.push(top_map(top));
                }
                if let Some(chain) = &token.chain {
                    c.chains.push(json!({"id": token.id, "text": token.piece, "chain": chain}));
                }
                c.text.push_str(&token.delta);
            }
            Event::End { choice, reason, text_tail } => {
                out[choice].text.push_str(&text_tail);
                out[choice].finish = Some(reason);
            }
            Event::Done { prompt_tokens, completion_tokens } => {
                let choices: Vec<Value> = out
                    .into_iter()
                    .enumerate()
                    .map(|(index, c)| {
                        let logprobs = request.logprobs.map(|_| {
                            json!({"tokens": c.tokens, "token_logprobs": c.token_logprobs, "top_logprobs": c.top_logprobs, "text_offset": c.text_offset})
                        });
                        let mut choice = json!({"text": c.text, "index": index, "logprobs": logprobs, "finish_reason": c.finish.unwrap_or("length")});
                        if request.candidates.is_some() {
                            choice["tp06"] = json!({"tokens": c.chains});
                        }
                        choice
                    })
                    .collect();
                let usage = usage(prompt_tokens, completion_tokens);
                let body = json!({"id": id, "object": "text_completion", "created": created(), "model": request.model, "choices": choices, "usage": usage});
                return Ok(axum::Json(body).into_response());
            }
            Event::Failed(why) => return Err(ApiError::new(StatusCode::SERVICE_UNAVAILABLE, why)),
        }
    }
    Err(lost())
}

/// The chunks of a streamed answer.
struct Chunks {
    id: String,
    model: String,
    /// Each choice's text length so far (the next token's offset).
    choices: Vec<usize>,
    request: Completion,
    received: Receiver<Event>,
    /// The usage chunk went out: `[DONE]` is next.
    usage_sent: bool,
    done: bool,
}

impl Chunks {
    fn chunk(&self, choices: Value, usage: Option<Value>) -> SseEvent {
        let mut body = json!({"id": self.id, "object": "text_completion", "created": created(), "model": self.model, "choices": choices});
        if let Some(usage) = usage {
            body["usage"] = usage;
        }
        SseEvent::default().data(body.to_string())
    }

    async fn next(&mut self) -> Option<SseEvent> {
        if self.done {
            return None;
        }
        if self.usage_sent {
            self.done = true;
            return Some(SseEvent::default().data("[DONE]"));
        }
        let Some(event) = self.received.recv().await else {
            self.done = true;
            return Some(SseEvent::default().data(lost().body().to_string()));
        };
        Some(match event {
            Event::Token { choice, token } => {
                let offset = self.choices[choice];
                self.choices[choice] += token.delta.len();
                let logprobs = token.logprob.as_ref().map(|(lp, top)| {
                    json!({"tokens": [token.piece], "token_logprobs": [lp], "top_logprobs": [top_map(top)], "text_offset": [offset]})
                });
                let mut c = json!({"text": token.delta, "index": choice, "logprobs": logprobs, "finish_reason": null});
                if let Some(chain) = &token.chain {
                    c["tp06"] = json!({"id": token.id, "text": token.piece, "chain": chain});
                }
                self.chunk(json!([c]), None)
            }
            Event::End { choice, reason, text_tail } => {
                self.choices[choice] += text_tail.len();
                self.chunk(
                    json!([{"text": text_tail, "index": choice, "logprobs": null, "finish_reason": reason}]),
                    None,
                )
            }
            Event::Done { prompt_tokens, completion_tokens } => {
                if self.request.include_usage {
                    // The usage chunk now, `[DONE]` at the next call.
                    self.usage_sent = true;
                    let usage = usage(prompt_tokens, completion_tokens);
                    return Some(self.chunk(json!([]), Some(usage)));
                }
                self.done = true;
                SseEvent::default().data("[DONE]")
            }
            Event::Failed(why) => {
                self.done = true;
                SseEvent::default().data(ApiError::new(StatusCode::SERVICE_UNAVAILABLE, why).body().to_string())
            }
        })
    }
}
