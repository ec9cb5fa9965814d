//! The OpenAI completions API's request, checked field by field, and its
//! errors in OpenAI's shape: `{"error": {"message", "type", "param", "code"}}`
//! with a 4xx status, so that existing clients report them as they would
//! OpenAI's.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::de::DeserializeOwned;
use serde_json::{Map, Value, json};
use tp06_sample::Processing;

/// An error answered to the client.
#[derive(Debug, Clone, PartialEq)]
pub struct ApiError {
    /// The HTTP status.
    pub status: StatusCode,
    /// What went wrong and what to do, one sentence.
    pub message: String,
    /// The request field at fault.
    pub param: Option<String>,
    /// OpenAI's error code, where it has one (`model_not_found`).
    pub code: Option<&'static str>,
    /// Seconds to wait before trying again (503).
    pub retry_after: Option<u64>,
}

impl ApiError {
    /// A 400 about `param`.
    pub fn invalid(param: &str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, message).with_param(param)
    }

    /// An error of `status`.
    pub fn new(status: StatusCode, message: impl Into<String>) -> Self {
        Self { status, message: message.into(), param: None, code: None, retry_after: None }
    }

    fn with_param(mut self, param: &str) -> Self {
        self.param = Some(param.to_string());
        self
    }

    /// OpenAI's `type` for the status.
    fn kind(&self) -> &'static str {
        match self.status {
            StatusCode::UNAUTHORIZED => "authentication_error",
            StatusCode::NOT_FOUND => "invalid_request_error",
            StatusCode::SERVICE_UNAVAILABLE | StatusCode::TOO_MANY_REQUESTS => "server_overloaded",
            s if s.is_server_error() => "server_error",
            _ => "invalid_request_error",
        }
    }

    /// The JSON body.
    pub fn body(&self) -> Value {
        json!({"error": {"message": self.message, "type": self.kind(), "param": self.param, "code": self.code}})
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut response = (self.status, axum::Json(self.body())).into_response();
        if let Some(seconds) = self.retry_after {
            response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(seconds));
        }
        response
    }
}

/// A completion request, checked.
#[derive(Debug, Clone, PartialEq)]
pub struct Completion {
    /// The model's id.
    pub model: String,
    /// The prompts (a string is one).
    pub prompts: Vec<String>,
    /// New tokens at most.
    pub max_tokens: usize,
    /// The processors, in transformers' terms (temperature 0: greedy).
    pub processing: Processing,
    /// Completions per prompt.
    pub n: usize,
    /// Server-sent events.
    pub stream: bool,
    /// The last chunk of a stream carries the usage.
    pub include_usage: bool,
    /// The sampler's seed (`None`: one is drawn).
    pub seed: Option<u64>,
    /// Texts that end a completion (not included).
    pub stop: Vec<String>,
    /// How many alternatives' log-probabilities to return per token.
    pub logprobs: Option<usize>,
    /// How many candidates of the processor chain to return per token (the playground's extension).
    pub candidates: Option<usize>,
}

/// Every field the API takes: OpenAI's and our extensions (`top_k`,
/// `repetition_penalty`, `candidates`).
const FIELDS: &[&str] = &[
    "model",
    "prompt",
    "max_tokens",
    "temperature",
    "top_p",
    "n",
    "stream",
    "stream_options",
    "seed",
    "stop",
    "logprobs",
    "echo",
    "best_of",
    "frequency_penalty",
    "presence_penalty",
    "logit_bias",
    "suffix",
    "user",
    "top_k",
    "repetition_penalty",
    "candidates",
];

/// The most completions per prompt, prompts per request, and stop texts.
pub const MAX_N: usize = 16;
const MAX_PROMPTS: usize = 16;
const MAX_STOPS: usize = 4;
/// The most log-probabilities or candidates per token.
pub const MAX_ALTERNATIVES: usize = 20;

/// `map[key]` as `T`, a type error naming the key.
fn field<T: DeserializeOwned>(map: &Map<String, Value>, key: &str, expected: &str) -> Result<Option<T>, ApiError> {
    match map.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(value) => serde_json::from_value(value.clone())
            .map(Some)
            .map_err(|_| ApiError::invalid(key, format!("`{key}` must be {expected}, not {}", describe(value)))),
    }
}

/// `map[key]` as a string or an array of strings (OpenAI's `prompt`, `stop`).
fn strings(map: &Map<String, Value>, key: &str) -> Result<Option<Vec<String>>, ApiError> {
    match map.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(vec![s.clone()])),
        Some(Value::Array(items)) if items.iter().all(Value::is_string) => {
            Ok(Some(items.iter().filter_map(|v| v.as_str().map(String::from)).collect()))
        }
        Some(other) => Err(ApiError::invalid(
            key,
            format!("`{key}` must be a string or an array of strings, not {}", describe(other)),
        )),
    }
}

fn describe(value: &Value) -> String {
    match value {
        Value::Null => "null".into(),
        Value::Bool(b) => format!("the boolean {b}"),
        Value::Number(n) => format!("the number {n}"),
        Value::String(s) if s.chars().count() > 40 => "a string".into(),
        Value::String(s) => format!("the string {s:?}"),
        Value::Array(_) => "an array".into(),
        Value::Object(_) => "an object".into(),
    }
}

impl Completion {
    /// Reads and checks a request body.
    pub fn parse(body: &[u8]) -> Result<Self, ApiError> {
        let text = std::str::from_utf8(body)
            .map_err(|_| ApiError::new(StatusCode::BAD_REQUEST, "the request body is not UTF-8; send JSON text"))?;
        let value: Value = serde_json::from_str(text).map_err(|e| {
            ApiError::new(
                StatusCode::BAD_REQUEST,
                format!("the request body is not valid JSON ({e}); send a JSON object"),
            )
        })?;
        let Value::Object(map) = value else {
            return Err(ApiError::new(StatusCode::BAD_REQUEST, "the request body must be a JSON object"));
        };
        if let Some(unknown) = map.keys().find(|k| !FIELDS.contains(&k.as_str())) {
            return Err(ApiError::invalid(unknown, format!("unrecognized request argument supplied: `{unknown}`")));
        }
        let model: String = field(&map, "model", "a string")?
            .ok_or_else(|| ApiError::invalid("model", "`model` is required; GET /v1/models lists them"))?;
        let prompts = strings(&map, "prompt")?.ok_or_else(|| ApiError::invalid("prompt", "`prompt` is required"))?;
        if prompts.is_empty() || prompts.len() > MAX_PROMPTS {
            return Err(ApiError::invalid("prompt", format!("`prompt` must hold 1 to {MAX_PROMPTS} prompts")));
        }
        if prompts.iter().any(|p| p.is_empty()) {
            return Err(ApiError::invalid(
                "prompt",
                "a prompt is empty; the model needs at least one token to continue",
            ));
        }
        let max_tokens: u64 = field(&map, "max_tokens", "a positive integer")?.unwrap_or(16);
        if max_tokens == 0 {
            return Err(ApiError::invalid("max_tokens", "`max_tokens` must be at least 1"));
        }
        let temperature: f64 = field(&map, "temperature", "a number")?.unwrap_or(1.0);
        if !temperature.is_finite() || temperature < 0.0 {
            return Err(ApiError::invalid(
                "temperature",
                format!("`temperature` is {temperature}; use 0 (greedy) or more"),
            ));
        }
        let top_p: f64 = field(&map, "top_p", "a number")?.unwrap_or(1.0);
        if !(top_p > 0.0 && top_p <= 1.0) {
            return Err(ApiError::invalid("top_p", format!("`top_p` is {top_p}; use a number in (0, 1] (1: off)")));
        }
        let top_k: u64 = field(&map, "top_k", "a non-negative integer")?.unwrap_or(0);
        let repetition_penalty: f64 = field(&map, "repetition_penalty", "a number")?.unwrap_or(1.0);
        if !(repetition_penalty.is_finite() && repetition_penalty > 0.0) {
            return Err(ApiError::invalid(
                "repetition_penalty",
                format!("`repetition_penalty` is {repetition_penalty}; use a positive number (1: off)"),
            ));
        }
        let n: u64 = field(&map, "n", "a positive integer")?.unwrap_or(1);
        if n == 0 || n as usize > MAX_N {
            return Err(ApiError::invalid("n", format!("`n` is {n}; use 1 to {MAX_N}")));
        }
        if let Some(best_of) = field::<u64>(&map, "best_of", "a positive integer")?
            && best_of != n
        {
            return Err(ApiError::invalid("best_of", "`best_of` other than `n` is not supported"));
        }
        if field::<bool>(&map, "echo", "a boolean")? == Some(true) {
            return Err(ApiError::invalid("echo", "`echo` is not supported; the prompt is the text you sent"));
        }
        for penalty in ["frequency_penalty", "presence_penalty"] {
            if field::<f64>(&map, penalty, "a number")?.is_some_and(|p| p != 0.0) {
                return Err(ApiError::invalid(
                    penalty,
                    format!("`{penalty}` is not supported; use `repetition_penalty` (transformers' processor)"),
                ));
            }
        }
        if field::<Map<String, Value>>(&map, "logit_bias", "an object")?.is_some_and(|b| !b.is_empty()) {
            return Err(ApiError::invalid("logit_bias", "`logit_bias` is not supported"));
        }
        if field::<String>(&map, "suffix", "a string")?.is_some_and(|s| !s.is_empty()) {
            return Err(ApiError::invalid("suffix", "`suffix` is not supported"));
        }
        field::<String>(&map, "user", "a string")?;
        let stream: bool = field(&map, "stream", "a boolean")?.unwrap_or(false);
        let include_usage = field::<Map<String, Value>>(&map, "stream_options", "an object")?
            .and_then(|o| o.get("include_usage").and_then(Value::as_bool))
            .unwrap_or(false);
        let seed = match map.get("seed") {
            None | Some(Value::Null) => None,
            Some(Value::Number(n)) if n.as_i64().is_some() || n.as_u64().is_some() => {
                Some(n.as_u64().unwrap_or_else(|| n.as_i64().unwrap_or(0) as u64))
            }
            Some(other) => {
                return Err(ApiError::invalid("seed", format!("`seed` must be an integer, not {}", describe(other))));
            }
        };
        let stop = strings(&map, "stop")?.unwrap_or_default();
        if stop.len() > MAX_STOPS || stop.iter().any(String::is_empty) {
            return Err(ApiError::invalid("stop", format!("`stop` takes 1 to {MAX_STOPS} non-empty texts")));
        }
        let alternatives = |key: &str| -> Result<Option<usize>, ApiError> {
            let value: Option<u64> = field(&map, key, "a non-negative integer")?;
            match value {
                Some(k) if k as usize > MAX_ALTERNATIVES => {
                    Err(ApiError::invalid(key, format!("`{key}` is {k}; use 0 to {MAX_ALTERNATIVES}")))
                }
                other => Ok(other.map(|k| k as usize)),
            }
        };
        let logprobs = alternatives("logprobs")?;
        let candidates = alternatives("candidates")?;
        let processing = Processing {
            do_sample: temperature > 0.0,
            temperature: if temperature > 0.0 { temperature } else { 1.0 },
            top_k: top_k as usize,
            top_p,
            repetition_penalty,
        };
        Ok(Self {
            model,
            prompts,
            max_tokens: max_tokens.min(u32::MAX as u64) as usize,
            processing,
            n: n as usize,
            stream,
            include_usage,
            seed,
            stop,
            logprobs,
            candidates,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(body: &str) -> Result<Completion, ApiError> {
        Completion::parse(body.as_bytes())
    }

    #[test]
    fn a_request_reads_as_openai_defines_it() {
        let c = parse(r#"{"model": "tp06", "prompt": "Pikachu"}"#).unwrap();
        assert_eq!((c.max_tokens, c.n, c.stream, c.seed), (16, 1, false, None), "OpenAI's defaults");
        assert_eq!(
            c.processing,
            Processing { do_sample: true, temperature: 1.0, top_k: 0, top_p: 1.0, repetition_penalty: 1.0 }
        );
        let c = parse(
            r#"{"model": "tp06", "prompt": ["a", "b"], "temperature": 0, "n": 2, "stop": "\n", "seed": -1,
                "logprobs": 3, "top_k": 50, "repetition_penalty": 1.2, "stream": true, "stream_options": {"include_usage": true}}"#,
        )
        .unwrap();
        assert_eq!(c.prompts, ["a", "b"]);
        assert_eq!(
            c.processing,
            Processing { do_sample: false, temperature: 1.0, top_k: 50, top_p: 1.0, repetition_penalty: 1.2 }
        );
        assert_eq!(
            (c.n, c.stop.as_slice(), c.seed, c.logprobs, c.stream, c.include_usage),
            (2, &["\n".to_string()][..], Some(u64::MAX), Some(3), true, true)
        );
    }

    #[test]
    fn each_bad_field_is_a_400_naming_it() {
        for (body, param, says) in [
            (r#"{"prompt": "a"}"#, "model", "required"),
            (r#"{"model": 3, "prompt": "a"}"#, "model", "must be a string, not the number 3"),
            (r#"{"model": "m"}"#, "prompt", "required"),
            (r#"{"model": "m", "prompt": ""}"#, "prompt", "empty"),
            (r#"{"model": "m", "prompt": [1, 2]}"#, "prompt", "array of strings"),
            (r#"{"model": "m", "prompt": "a", "temperature": -1}"#, "temperature", "use 0 (greedy) or more"),
            (
                r#"{"model": "m", "prompt": "a", "temperature": "hot"}"#,
                "temperature",
                "must be a number, not the string \"hot\"",
            ),
            (r#"{"model": "m", "prompt": "a", "top_p": 0}"#, "top_p", "(0, 1]"),
            (r#"{"model": "m", "prompt": "a", "top_p": 1.5}"#, "top_p", "(0, 1]"),
            (r#"{"model": "m", "prompt": "a", "top_k": -3}"#, "top_k", "non-negative integer"),
            (r#"{"model": "m", "prompt": "a", "max_tokens": 0}"#, "max_tokens", "at least 1"),
            (r#"{"model": "m", "prompt": "a", "n": 99}"#, "n", "use 1 to 16"),
            (r#"{"model": "m", "prompt": "a", "logprobs": 50}"#, "logprobs", "use 0 to 20"),
            (r#"{"model": "m", "prompt": "a", "repetition_penalty": 0}"#, "repetition_penalty", "positive"),
            (r#"{"model": "m", "prompt": "a", "stop": 5}"#, "stop", "string or an array"),
            (r#"{"model": "m", "prompt": "a", "echo": true}"#, "echo", "not supported"),
            (r#"{"model": "m", "prompt": "a", "presence_penalty": 0.5}"#, "presence_penalty", "repetition_penalty"),
            (r#"{"model": "m", "prompt": "a", "temprature": 1}"#, "temprature", "unrecognized"),
        ] {
            let err = parse(body).unwrap_err();
            assert_eq!((err.status, err.param.as_deref()), (StatusCode::BAD_REQUEST, Some(param)), "{body}");
            assert!(err.message.contains(says), "{body}: {}", err.message);
            assert_eq!(err.body()["error"]["type"], "invalid_request_error");
        }
        for body in ["{", "[1]", "null"] {
            let err = parse(body).unwrap_err();
            assert_eq!((err.status, err.param), (StatusCode::BAD_REQUEST, None), "{body}");
        }
        let err = Completion::parse(b"{\"model\": \"\xff\"}").unwrap_err();
        assert!(err.message.contains("not UTF-8"), "{}", err.message);
    }
}
