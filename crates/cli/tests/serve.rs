//! `tp06 serve` over loopback, as clients use it: the OpenAI completions API
//! (plain HTTP here, the `openai` package and a headless browser in the
//! Python scripts beside this file), its errors, its queue, its key, and a
//! bounded load test.

mod common;

use std::io::{BufRead, BufReader, Read};
use std::path::Path;
use std::process::{Child, Stdio};
use std::sync::mpsc::Receiver;
use std::time::{Duration, Instant};

use common::{command, demo, lora_run, text, tp06};
use serde_json::{Value, json};

/// A running `tp06 serve`, killed when dropped.
struct Server {
    child: Child,
    url: String,
    /// Its standard output's later lines.
    lines: Receiver<String>,
}

impl Server {
    /// Starts `tp06 serve --run-dir RUN --addr 127.0.0.1:0 EXTRA…` and waits for its URL.
    fn start(run: &Path, extra: &[&str]) -> Server {
        let run = run.display().to_string();
        let mut args = vec!["serve", "--run-dir", &run, "--addr", "127.0.0.1:0"];
        args.extend_from_slice(extra);
        let mut child =
            command(&args).env_remove("TP06_API_KEY").stdout(Stdio::piped()).stderr(Stdio::inherit()).spawn().unwrap();
        let (lines, received) = std::sync::mpsc::channel();
        let stdout = child.stdout.take().unwrap();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                let _ = lines.send(line);
            }
        });
        let line = received.recv_timeout(Duration::from_secs(120)).expect("the server announces its URL");
        let url = line.split_whitespace().find(|w| w.starts_with("http://")).expect("a URL").to_string();
        Server { child, url, lines: received }
    }

    /// `POST /v1/completions`: status, headers we look at, and the body.
    fn complete(&self, body: &Value) -> (u16, Option<String>, String) {
        self.post("v1/completions", &body.to_string(), &[])
    }

    fn post(&self, path: &str, body: &str, headers: &[(&str, &str)]) -> (u16, Option<String>, String) {
        let mut request = ureq::post(&format!("{}{path}", self.url)).set("Content-Type", "application/json");
        for (k, v) in headers {
            request = request.set(k, v);
        }
        answer(request.send_string(body))
    }

    fn get(&self, path: &str) -> (u16, String) {
        let (status, _, body) = answer(ureq::get(&format!("{}{path}", self.url)).call());
        (status, body)
    }

    fn json(&self, path: &str) -> Value {
        let (status, body) = self.get(path);
        assert_eq!(status, 200, "{path}: {body}");
        serde_json::from_str(&body).unwrap()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn answer(result: Result<ureq::Response, ureq::Error>) -> (u16, Option<String>, String) {
    match result {
        Ok(r) | Err(ureq::Error::Status(_, r)) => {
            let retry = r.header("Retry-After").map(String::from);
            let status = r.status();
            // Whole, however long (`into_string` stops at 10 MB).
            let mut body = String::new();
            r.into_reader().read_to_string(&mut body).expect("a whole UTF-8 body");
            (status, retry, body)
        }
        Err(e) => panic!("no answer: {e}"),
    }
}

/// The data lines of a server-sent-events body.
fn events(body: &str) -> Vec<String> {
    body.lines().filter_map(|l| l.strip_prefix("data: ")).map(String::from).collect()
}

/// A demo run trained for a few steps, with its exported model.
fn trained_run(dir: &Path) {
    let run = demo(dir, &["--to", "train"]);
    assert!(run.status.success(), "{:?}", text(&run));
}

#[test]
fn the_api_answers_as_openai_s_and_greedy_equals_tp06_sample() {
    let dir = tempfile::tempdir().unwrap();
    trained_run(dir.path());
    let server = Server::start(dir.path(), &[]);
    let health = server.json("health");
    assert_eq!((health["status"].as_str(), health["models"].clone()), (Some("ok"), json!(["tp06"])));
    let models = server.json("v1/models");
    assert_eq!(models["data"][0]["id"], "tp06");
    assert_eq!(models["object"], "list");

    // Greedy through the API is `tp06 sample --greedy`, token for token.
    let prompt = "Pikachu est";
    let greedy = json!({"model": "tp06", "prompt": prompt, "max_tokens": 20, "temperature": 0, "logprobs": 3});
    let (status, _, body) = server.complete(&greedy);
    assert_eq!(status, 200, "{body}");
    let answer: Value = serde_json::from_str(&body).unwrap();
    let completion = answer["choices"][0]["text"].as_str().unwrap().to_string();
    let run = dir.path().display().to_string();
    let sample =
        tp06(&["sample", "--run-dir", &run, "--quiet", "--prompt", prompt, "--greedy", "--max-new-tokens", "20"]);
    assert_eq!(text(&sample).0.trim_end(), format!("{prompt}{completion}").trim_end());
    assert_eq!(answer["object"], "text_completion");
    let usage = &answer["usage"];
    let new_tokens = usage["completion_tokens"].as_u64().unwrap();
    assert_eq!(usage["total_tokens"].as_u64(), Some(usage["prompt_tokens"].as_u64().unwrap() + new_tokens));
    // Log-probabilities: one per token, ≤ 0, and greedy took the most likely.
    let logprobs = &answer["choices"][0]["logprobs"];
    let chosen: Vec<f64> = logprobs["token_logprobs"].as_array().unwrap().iter().map(|v| v.as_f64().unwrap()).collect();
    assert_eq!(chosen.len() as u64, new_tokens);
    for (lp, top) in chosen.iter().zip(logprobs["top_logprobs"].as_array().unwrap()) {
        let top: Vec<f64> = top.as_object().unwrap().values().map(|v| v.as_f64().unwrap()).collect();
        assert!(top.len() <= 3 && !top.is_empty());
        let best = top.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        assert!(*lp <= 0.0 && (lp - best).abs() < 1e-9, "greedy takes the most likely: {lp} vs {best}");
    }
    let pieces: String = logprobs["tokens"].as_array().unwrap().iter().map(|t| t.as_str().unwrap()).collect();
    assert!(pieces.starts_with(completion.trim_end()), "{pieces:?} vs {completion:?}");

    // Streamed, the same text in chunks, then the usage, then [DONE].
    let stream = json!({"model": "tp06", "prompt": prompt, "max_tokens": 20, "temperature": 0, "stream": true,
                        "stream_options": {"include_usage": true}});
    let (status, _, body) = server.complete(&stream);
    assert_eq!(status, 200, "{body}");
    let data = events(&body);
    assert_eq!(data.last().map(String::as_str), Some("[DONE]"));
    let chunks: Vec<Value> = data[..data.len() - 1].iter().map(|d| serde_json::from_str(d).unwrap()).collect();
    let streamed: String =
        chunks.iter().flat_map(|c| c["choices"].as_array().unwrap()).map(|c| c["text"].as_str().unwrap()).collect();
    assert_eq!(streamed, completion);
    assert!(chunks.len() > 3, "token by token: {} chunks", chunks.len());
    assert_eq!(chunks.last().unwrap()["usage"]["completion_tokens"].as_u64(), Some(new_tokens));

    // Several prompts and several samples: prompt i's sample j is choice i·n + j; a seed repeats them.
    let sampled = json!({"model": "tp06", "prompt": ["Bulbizarre", "Salamèche est"], "n": 2, "max_tokens": 8,
                         "temperature": 0.9, "top_k": 40, "top_p": 0.95, "seed": 7});
    let (status, _, first) = server.complete(&sampled);
    assert_eq!(status, 200, "{first}");
    let first: Value = serde_json::from_str(&first).unwrap();
    let indices: Vec<u64> = first["choices"].as_array().unwrap().iter().map(|c| c["index"].as_u64().unwrap()).collect();
    assert_eq!(indices, [0, 1, 2, 3]);
    let (_, _, again) = server.complete(&sampled);
    let again: Value = serde_json::from_str(&again).unwrap();
    assert_eq!(first["choices"], again["choices"], "the same seed, the same samples");

    // A stop text ends the completion before it.
    let cut = completion.char_indices().nth(4).map(|(i, _)| i).unwrap();
    let stop: String = completion[cut..].chars().take(2).collect();
    let stopped = json!({"model": "tp06", "prompt": prompt, "max_tokens": 20, "temperature": 0, "stop": [stop]});
    let (_, _, body) = server.complete(&stopped);
    let stopped: Value = serde_json::from_str(&body).unwrap();
    let text = stopped["choices"][0]["text"].as_str().unwrap();
    assert_eq!(text, &completion[..completion.find(&stop).unwrap()], "stop {stop:?}");
    assert_eq!(stopped["choices"][0]["finish_reason"], "stop");
    // Streamed, no piece of the stop text goes out before it is known not to be one.
    let stream =
        json!({"model": "tp06", "prompt": prompt, "max_tokens": 20, "temperature": 0, "stop": [stop], "stream": true});
    let (_, _, body) = server.complete(&stream);
    let streamed: String = events(&body)
        .iter()
        .filter(|d| *d != "[DONE]")
        .map(|d| serde_json::from_str::<Value>(d).unwrap()["choices"][0]["text"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(streamed, text);

    // The playground's extension: each token's candidates through the processor chain.
    let explained = json!({"model": "tp06", "prompt": prompt, "max_tokens": 3, "temperature": 0.8, "top_k": 5,
                           "repetition_penalty": 1.3, "seed": 1, "candidates": 8});
    let (_, _, body) = server.complete(&explained);
    let explained: Value = serde_json::from_str(&body).unwrap();
    let tokens = explained["choices"][0]["tp06"]["tokens"].as_array().unwrap();
    assert_eq!(tokens.len(), 3);
    for token in tokens {
        let chain = &token["chain"];
        assert_eq!(chain["applied"], json!([true, true, true, true, true]));
        let candidates = chain["candidates"].as_array().unwrap();
        assert!(candidates.iter().any(|c| c["id"] == chain["chosen"]), "the chosen token is listed");
        for c in candidates {
            let probs: Vec<f64> = c["probs"].as_array().unwrap().iter().map(|p| p.as_f64().unwrap()).collect();
            assert!(probs.iter().all(|p| (0.0..=1.0).contains(p)), "{probs:?}");
            // Cut by top-k (5 of 8 candidates stay at most): no probability from that stage on.
            if c["cut_by"] == "top_k" {
                assert_eq!((probs[3], probs[4]), (0.0, 0.0));
            }
        }
        assert!(candidates.iter().filter(|c| c["cut_by"] == "top_k").count() >= 3, "8 candidates, top-k 5");
    }

    // The page: every asset inline, French by default, English on request.
    let (status, page) = server.get("");
    assert_eq!(status, 200);
    assert!(page.contains("<html lang=\"fr\">") && !page.contains("src=\"http") && !page.contains("href=\"http"));
    assert!(server.get("?lang=en").1.contains("<html lang=\"en\">"));
}

/// `serve --precision int8` converts the model at load as `sample
/// --precision int8` does: greedy through the API is that command's text.
#[test]
fn int8_serving_answers_as_int8_sampling() {
    let dir = tempfile::tempdir().unwrap();
    trained_run(dir.path());
    let server = Server::start(dir.path(), &["--precision", "int8", "--base", "none"]);
    let prompt = "Bulbizarre est";
    let greedy = json!({"model": "tp06", "prompt": prompt, "max_tokens": 12, "temperature": 0});
    let (status, _, body) = server.complete(&greedy);
    assert_eq!(status, 200, "{body}");
    let answer: Value = serde_json::from_str(&body).unwrap();
    let completion = answer["choices"][0]["text"].as_str().unwrap().to_string();
    let run = dir.path().display().to_string();
    let args = ["sample", "--run-dir", &run, "--quiet", "--prompt", prompt, "--greedy", "--max-new-tokens", "12"];
    let int8 = tp06(&[&args[..], &["--precision", "int8"]].concat());
    assert!(int8.status.success(), "{:?}", text(&int8));
    assert_eq!(text(&int8).0.trim_end(), format!("{prompt}{completion}").trim_end());
    let bad = tp06(&[&args[..], &["--precision", "int4"]].concat());
    let (_, err) = text(&bad);
    assert!(!bad.status.success() && err.contains("int4") && err.contains("int8"), "{err}");
}

#[test]
fn bad_requests_get_openai_shaped_4xx_errors_and_the_server_keeps_serving() {
    let dir = tempfile::tempdir().unwrap();
    trained_run(dir.path());
    let server = Server::start(dir.path(), &["--max-body", "4096"]);
    let long_prompt = "Pikachu est un Pokémon. ".repeat(60);
    let cases: Vec<(&str, String, u16, Option<&str>, &str)> = vec![
        ("malformed JSON", "{\"model\": ".into(), 400, None, "not valid JSON"),
        ("not an object", "[1, 2]".into(), 400, None, "JSON object"),
        (
            "wrong type",
            json!({"model": "tp06", "prompt": "a", "max_tokens": "ten"}).to_string(),
            400,
            Some("max_tokens"),
            "positive integer",
        ),
        (
            "temperature < 0",
            json!({"model": "tp06", "prompt": "a", "temperature": -0.5}).to_string(),
            400,
            Some("temperature"),
            "or more",
        ),
        (
            "top_p out of (0, 1]",
            json!({"model": "tp06", "prompt": "a", "top_p": 1.5}).to_string(),
            400,
            Some("top_p"),
            "(0, 1]",
        ),
        ("empty prompt", json!({"model": "tp06", "prompt": ""}).to_string(), 400, Some("prompt"), "empty"),
        (
            "over-long prompt",
            json!({"model": "tp06", "prompt": long_prompt}).to_string(),
            400,
            Some("prompt"),
            "context",
        ),
        (
            "max_tokens beyond the context",
            json!({"model": "tp06", "prompt": "a", "max_tokens": 5000}).to_string(),
            400,
            Some("max_tokens"),
            "context",
        ),
        ("unknown model", json!({"model": "gpt-4", "prompt": "a"}).to_string(), 404, Some("model"), "does not exist"),
        (
            "unknown field",
            json!({"model": "tp06", "prompt": "a", "temprature": 1}).to_string(),
            400,
            Some("temprature"),
            "unrecognized",
        ),
        // Just over the limit: the client's one write is done before the server answers.
        ("oversized body", json!({"model": "tp06", "prompt": "x".repeat(4_500)}).to_string(), 413, None, "too large"),
    ];
    for (what, body, status, param, says) in cases {
        let (got, _, answer) = server.post("v1/completions", &body, &[]);
        let answer: Value = serde_json::from_str(&answer).unwrap_or_else(|_| panic!("{what}: not JSON: {answer}"));
        assert_eq!(got, status, "{what}: {answer}");
        let error = &answer["error"];
        assert!(error["message"].as_str().unwrap().contains(says), "{what}: {error}");
        assert_eq!(error["param"].as_str(), param, "{what}");
        assert!(error["type"].is_string(), "{what}");
    }
    // Not UTF-8.
    let raw = ureq::post(&format!("{}v1/completions", server.url))
        .set("Content-Type", "application/json")
        .send_bytes(b"{\"model\": \"\xff\xfe\"}");
    let (status, _, body) = answer(raw);
    assert!(status == 400 && body.contains("not UTF-8"), "{status} {body}");
    let (status, body) = server.get("v2/chat");
    assert!(status == 404 && body.contains("no such endpoint"), "{body}");
    // Still serving.
    let (status, _, body) = server.complete(&json!({"model": "tp06", "prompt": "Pikachu", "max_tokens": 2}));
    assert_eq!(status, 200, "{body}");
}

/// A client that goes away cancels its generation; a full queue answers 503
/// with Retry-After at once; every other request is answered.
#[test]
fn a_full_queue_answers_503_and_a_gone_client_cancels_its_generation() {
    let dir = tempfile::tempdir().unwrap();
    trained_run(dir.path());
    let server = Server::start(dir.path(), &["--queue", "1"]);
    let long = json!({"model": "tp06", "prompt": "Pikachu", "max_tokens": 250, "n": 16, "temperature": 1.0,
                      "stream": true, "candidates": 20});

    // Read one chunk, hang up.
    let response = ureq::post(&format!("{}v1/completions", server.url)).send_string(&long.to_string()).unwrap();
    let mut reader = response.into_reader();
    let mut first = [0u8; 64];
    reader.read_exact(&mut first).unwrap();
    drop(reader);
    let deadline = Instant::now() + Duration::from_secs(30);
    while server.json("health")["cancelled"].as_u64() != Some(1) {
        assert!(Instant::now() < deadline, "the generation was not cancelled: {}", server.json("health"));
        std::thread::sleep(Duration::from_millis(50));
    }

    // Twelve at once against one generating and one waiting.
    let url = server.url.clone();
    let statuses: Vec<(u16, Option<String>, String)> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..12)
            .map(|_| {
                let url = url.clone();
                let body = long.to_string();
                s.spawn(move || answer(ureq::post(&format!("{url}v1/completions")).send_string(&body)))
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let busy: Vec<_> = statuses.iter().filter(|(s, _, _)| *s == 503).collect();
    assert!(!busy.is_empty(), "some were refused: {:?}", statuses.iter().map(|s| s.0).collect::<Vec<_>>());
    for (_, retry, body) in &busy {
        assert_eq!(retry.as_deref(), Some("1"));
        assert!(body.contains("busy") && body.contains("\"error\""), "{body}");
    }
    for (status, _, body) in statuses.iter().filter(|(s, _, _)| *s != 503) {
        assert_eq!(*status, 200, "{body}");
        let data = events(body);
        assert_eq!(data.last().map(String::as_str), Some("[DONE]"), "{:?}", &data[data.len().saturating_sub(2)..]);
    }
    assert_eq!(server.json("health")["queued"], 0);
}

#[test]
fn another_address_than_loopback_needs_a_key_and_the_key_is_checked() {
    let dir = tempfile::tempdir().unwrap();
    trained_run(dir.path());
    let run = dir.path().display().to_string();
    let open =
        command(&["serve", "--run-dir", &run, "--addr", "0.0.0.0:0"]).env_remove("TP06_API_KEY").output().unwrap();
    let (_, err) = text(&open);
    assert!(!open.status.success() && err.contains("--api-key") && err.contains("0.0.0.0"), "{err}");

    let server = Server::start(dir.path(), &["--api-key", "s3cret"]);
    let body = json!({"model": "tp06", "prompt": "Pikachu", "max_tokens": 2}).to_string();
    let (status, _, answer) = server.post("v1/completions", &body, &[]);
    assert!(status == 401 && answer.contains("authentication_error"), "{answer}");
    let (status, _, answer) = server.post("v1/completions", &body, &[("Authorization", "Bearer wrong")]);
    assert_eq!(status, 401, "{answer}");
    let (status, _, answer) = server.post("v1/completions", &body, &[("Authorization", "Bearer s3cret")]);
    assert_eq!(status, 200, "{answer}");

    // Ctrl-C: the server stops cleanly and says so.
    let mut server = server;
    let pid = server.child.id().to_string();
    assert!(std::process::Command::new("kill").args(["-INT", &pid]).status().unwrap().success());
    let deadline = Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(status) = server.child.try_wait().unwrap() {
            break status;
        }
        assert!(Instant::now() < deadline, "the server did not stop on Ctrl-C");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(status.success(), "{status}");
    let said: Vec<String> = server.lines.try_iter().collect();
    assert!(said.iter().any(|l| l.contains("serve: stopped")), "{said:?}");
}

/// 64 requests from 8 concurrent clients: every one answered; the latencies
/// and the server's peak memory are printed (README, "Serving").
#[test]
fn a_bounded_load_is_served_whole() {
    let dir = tempfile::tempdir().unwrap();
    trained_run(dir.path());
    let server = Server::start(dir.path(), &["--queue", "8"]);
    let url = server.url.clone();
    let started = Instant::now();
    let mut latencies: Vec<f64> = std::thread::scope(|s| {
        let clients: Vec<_> = (0..8)
            .map(|client| {
                let url = url.clone();
                s.spawn(move || {
                    (0..8)
                        .map(|i| {
                            let body = json!({"model": "tp06", "prompt": "Pikachu est un", "max_tokens": 32,
                                              "temperature": 0.8, "seed": client * 8 + i});
                            let t = Instant::now();
                            let (status, _, answer) =
                                answer(ureq::post(&format!("{url}v1/completions")).send_string(&body.to_string()));
                            assert_eq!(status, 200, "{answer}");
                            t.elapsed().as_secs_f64()
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        clients.into_iter().flat_map(|c| c.join().unwrap()).collect()
    });
    let wall = started.elapsed().as_secs_f64();
    assert_eq!(latencies.len(), 64);
    latencies.sort_by(f64::total_cmp);
    let (p50, p95) = (latencies[31], latencies[60]);
    let status = std::fs::read_to_string(format!("/proc/{}/status", server.child.id())).unwrap_or_default();
    let peak = status.lines().find_map(|l| l.strip_prefix("VmHWM:")).unwrap_or("?").trim().to_string();
    tp06_testkit::note(&format!(
        "load: 64 requests (8 clients × 8, 32 new tokens each) in {wall:.2} s; latency p50 {:.0} ms, p95 {:.0} ms; server peak memory {peak}",
        p50 * 1e3,
        p95 * 1e3
    ));
    assert_eq!(server.json("health")["served"].as_u64(), Some(64));
}

/// Eight clients at once, greedy and seeded sampling, prompts and lengths of
/// their own: the requests decode together (several rows in one step), and
/// each text is the one the same request gets alone.
#[test]
fn concurrent_requests_decode_together_and_each_gets_its_text_alone() {
    let dir = tempfile::tempdir().unwrap();
    trained_run(dir.path());
    let server = Server::start(dir.path(), &["--max-batch", "8"]);
    let prompts = ["Pikachu est un", "Dracaufeu", "Bulbizarre est un Pokémon de type", "Le"];
    let bodies: Vec<Value> = (0..8)
        .map(|i| {
            let mut body = json!({"model": "tp06", "prompt": prompts[i % 4], "max_tokens": 40 + 7 * i});
            match i % 2 {
                0 => body["temperature"] = json!(0),
                _ => body
                    .as_object_mut()
                    .unwrap()
                    .extend([("temperature".into(), json!(0.9)), ("seed".into(), json!(i))]),
            }
            body
        })
        .collect();
    let text = |answer: &str| -> String {
        let v: Value = serde_json::from_str(answer).unwrap();
        v["choices"][0]["text"].as_str().unwrap().to_string()
    };
    let alone: Vec<String> = bodies
        .iter()
        .map(|b| {
            let (status, _, answer) = server.complete(b);
            assert_eq!(status, 200, "{answer}");
            text(&answer)
        })
        .collect();
    assert_eq!(server.json("health")["widest_step"], 1, "one request at a time so far");
    let url = server.url.clone();
    let together: Vec<String> = std::thread::scope(|s| {
        let clients: Vec<_> = bodies
            .iter()
            .map(|b| {
                let (url, body) = (url.clone(), b.to_string());
                s.spawn(move || answer(ureq::post(&format!("{url}v1/completions")).send_string(&body)))
            })
            .collect();
        clients
            .into_iter()
            .map(|c| c.join().unwrap())
            .map(|(status, _, a)| {
                assert_eq!(status, 200, "{a}");
                text(&a)
            })
            .collect()
    });
    for (i, (a, t)) in alone.iter().zip(&together).enumerate() {
        assert_eq!(a, t, "request {i}: its text alone and among others");
    }
    let widest = server.json("health")["widest_step"].as_u64().unwrap();
    assert!(widest > 1, "the requests decoded together (widest step {widest})");
    // Prometheus' format, as llama.cpp's server gives its metrics. The gauges
    // are published after each step, so the last answer can come a step before
    // its rows leave the gauge.
    let deadline = Instant::now() + Duration::from_secs(10);
    let metrics = loop {
        let (status, metrics) = server.get("metrics");
        assert_eq!(status, 200);
        if metrics.lines().any(|l| l == "tp06_rows_running 0") || Instant::now() > deadline {
            break metrics;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    for line in ["tp06_requests_queued 0", "tp06_rows_running 0", "tp06_rows_max 8", "tp06_requests_served_total 16"] {
        assert!(metrics.lines().any(|l| l == line), "{line} in\n{metrics}");
    }
    assert!(metrics.contains(&format!("\ntp06_rows_widest_step {widest}\n")), "{metrics}");
}

/// A budget of keys and values too small for two requests at once (the
/// demo model: 2 blocks of 64, 1 KB a position; each request 3 completions
/// of up to 204 positions, 612 KB; the budget 1 MB): they are all
/// answered, one after the other, though their rows would fit in a step.
#[test]
fn the_kv_budget_bounds_what_decodes_together() {
    let dir = tempfile::tempdir().unwrap();
    trained_run(dir.path());
    let server = Server::start(dir.path(), &["--max-batch", "8", "--kv-budget-mb", "1"]);
    let url = server.url.clone();
    std::thread::scope(|s| {
        let clients: Vec<_> = (0..4)
            .map(|i| {
                let url = url.clone();
                let body = json!({"model": "tp06", "prompt": "Pikachu est un", "max_tokens": 200, "n": 3, "seed": i})
                    .to_string();
                s.spawn(move || answer(ureq::post(&format!("{url}v1/completions")).send_string(&body)))
            })
            .collect();
        for c in clients {
            let (status, _, body) = c.join().unwrap();
            assert_eq!(status, 200, "{body}");
        }
    });
    let health = server.json("health");
    assert_eq!(health["widest_step"], 3, "one request (3 rows) at a time under the budget: {health}");
    assert_eq!(health["served"], 4);
}

/// The `clients/` script `name`.
fn script(name: &str) -> String {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/clients").join(name).display().to_string()
}

/// Runs a client script; its last line is a JSON object.
fn run_script(python: &str, args: &[&str]) -> Value {
    let out = std::process::Command::new(python).args(args).output().unwrap();
    let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "{}: {stdout}{stderr}", args[0]);
    serde_json::from_str(stdout.lines().last().unwrap_or_default()).unwrap_or_else(|e| panic!("{e}: {stdout}"))
}

/// The official `openai` Python package, unchanged, gets completions, a
/// stream and an error it understands.
#[test]
fn the_openai_package_works_unchanged() {
    let Some(python) = tp06_testkit::python_with(&["openai"], "the `openai` client test") else { return };
    let dir = tempfile::tempdir().unwrap();
    trained_run(dir.path());
    let server = Server::start(dir.path(), &[]);
    let prompt = "Pikachu est";
    let seen = run_script(python, &[&script("openai_client.py"), &server.url, prompt]);
    let (_, _, ours) = server.complete(&json!({"model": "tp06", "prompt": prompt, "max_tokens": 20, "temperature": 0}));
    let ours: Value = serde_json::from_str(&ours).unwrap();
    assert_eq!(seen["models"], json!(["tp06"]));
    assert_eq!(seen["text"], ours["choices"][0]["text"], "{seen}");
    assert_eq!(seen["streamed"], seen["text"]);
    assert!(seen["chunks"].as_u64().unwrap() > 3, "{seen}");
    assert_eq!(seen["usage"], ours["usage"]["completion_tokens"]);
    assert_eq!(seen["error"]["status"], 400, "{seen}");
    assert_eq!(seen["error"]["param"], "temperature", "{seen}");
}

/// Chromium and its driver, from Debian (`.ci/run` installs them).
fn chromium() -> bool {
    let found = ["chromium", "chromedriver"].iter().all(|b| {
        std::process::Command::new("sh")
            .args(["-c", &format!("command -v {b}")])
            .output()
            .is_ok_and(|o| o.status.success())
    });
    if !found {
        let message = "the playground's browser test needs Debian's chromium and chromium-driver (apt-get install chromium chromium-driver)";
        assert!(!tp06_testkit::in_ci(), "{message} (CI is set: it may not be skipped)");
        tp06_testkit::skip(message);
    }
    found
}

/// The page in headless Chromium: generate, both models side by side, a
/// token's candidates opened with the keyboard (probabilities in [0, 1], cut
/// candidates marked), a phone's width without sideways scrolling;
/// screenshots in target/tmp/playground/.
#[test]
fn the_playground_works_in_a_browser() {
    let Some(python) = tp06_testkit::python_with(&["selenium"], "the playground's browser test") else { return };
    if !chromium() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    trained_run(dir.path());
    // The untrained model stage's output as the model to compare with.
    let base = dir.path().join("model").display().to_string();
    let server = Server::start(dir.path(), &["--base", &base]);
    let shots = Path::new(env!("CARGO_TARGET_TMPDIR")).join("playground");
    let seen = run_script(python, &[&script("playground.py"), &server.url, &shots.display().to_string()]);
    assert_eq!(seen["title"], "tp06 — terrain de jeu de la génération");
    assert!(seen["prompt_buttons"].as_u64().unwrap() >= 1, "{seen}");
    assert!(seen["status"].as_str().unwrap().contains("terminé"), "{seen}");
    // The server's batch, polled once a second.
    let load = seen["load"].as_str().unwrap();
    assert!(load.starts_with("serveur : ") && load.contains("/8 complétions en cours, "), "{seen}");
    let outputs = seen["outputs"].as_array().unwrap();
    assert_eq!(outputs.iter().map(|o| o["id"].as_str().unwrap()).collect::<Vec<_>>(), ["out-tp06", "out-tp06-base"]);
    for output in outputs {
        let text = output["text"].as_str().unwrap();
        assert!(text.starts_with("Pikachu est") && text.len() > "Pikachu est".len() + 5, "{output}");
        assert!(output["tokens"].as_u64().unwrap() >= 3, "{output}");
    }
    let candidates = seen["candidates"].as_array().unwrap();
    assert!(candidates.len() >= 8, "{seen}");
    assert_eq!(candidates.iter().filter(|c| c["chosen"] == true).count(), 1);
    for c in candidates {
        let probs: Vec<f64> = c["probs"].as_array().unwrap().iter().map(|p| p.as_f64().unwrap()).collect();
        assert!(probs.len() == 5 && probs.iter().all(|p| (0.0..=1.0).contains(p)), "{c}");
        let cut = !c["cut"].as_str().unwrap().is_empty();
        assert_eq!(cut, c["cut_cells"].as_u64().unwrap() > 0, "a cut candidate is marked, only it: {c}");
    }
    assert!(candidates.iter().filter(|c| c["cut"] == "top_k").count() >= 5, "top-k 3 of 8+ candidates: {seen}");
    assert!(seen["phone_overflow"].as_i64().unwrap() <= 0, "no sideways scrolling at 390 px: {seen}");
    assert!(shots.join("playground.png").is_file() && shots.join("playground-phone.png").is_file());
}

/// `serve --adapter`: the run's base with the LoRA adapter it trained is
/// `tp06` (greedy through the API is `tp06 sample --greedy` on the merged
/// export), the base without it `tp06-base`.
#[test]
fn serve_puts_an_adapter_on_its_base() {
    let dir = tempfile::tempdir().unwrap();
    lora_run(dir.path());
    let (base, adapter) = (dir.path().join("model"), dir.path().join("train/adapter"));
    let (base, adapter) = (base.display().to_string(), adapter.display().to_string());
    let server = Server::start(dir.path(), &["--model", &base, "--adapter", &adapter]);
    assert_eq!(server.json("health")["models"], json!(["tp06", "tp06-base"]));
    let prompt = "Pikachu est";
    let completion = |model: &str| {
        let (status, _, body) =
            server.complete(&json!({"model": model, "prompt": prompt, "max_tokens": 12, "temperature": 0}));
        assert_eq!(status, 200, "{body}");
        serde_json::from_str::<Value>(&body).unwrap()["choices"][0]["text"].as_str().unwrap().to_string()
    };
    let (tuned, plain) = (completion("tp06"), completion("tp06-base"));
    assert_ne!(tuned, plain, "the adapter counts");
    let run = dir.path().display().to_string();
    let export = dir.path().join("train/export").display().to_string();
    let sample = |model: &str| {
        let out = tp06(&[
            "sample",
            "--run-dir",
            &run,
            "--quiet",
            "--model",
            model,
            "--prompt",
            prompt,
            "--greedy",
            "--max-new-tokens",
            "12",
        ]);
        assert!(out.status.success(), "{:?}", text(&out));
        text(&out).0.trim_end().to_string()
    };
    assert_eq!(format!("{prompt}{tuned}").trim_end(), sample(&export), "the adapter on the base is the merged export");
    assert_eq!(format!("{prompt}{plain}").trim_end(), sample(&base), "tp06-base is the base alone");
}
