#!/usr/bin/env python3
"""Concurrent clients against `tp06 serve` and, beside it, llama.cpp's server
(`llama-server -np N`) on our GGUF export of the same model: aggregate
tokens/s, time to the first token and the latency between tokens, at 1, 4, 8
and 16 clients, 2 threads each side, one server at a time.

    cargo build --release -p tp06-cli
    python bench/make_base_model.py /tmp/small TOKENIZER_DIR --shape small   # or any model directory
    python bench/serve_batch.py /tmp/small [--precisions f32,int8] [--clients 1,4,8,16]
        [--llama-server PATH] [--tokens 64] [--rounds 2]

Each client streams `--rounds` greedy completions of `--tokens` new tokens
(the course's prompts in turn; llama.cpp's side ignores `</s>` so that both
generate the same number of tokens: our side reports its count, which the
rate uses). Our f32/int8/bf16 run against llama.cpp's F32/Q8_0/F16 file,
which `tp06 export` writes first. Prints one JSON line per server, precision
and number of clients, the CPU named in each.
"""
import argparse
import json
import os
import pathlib
import platform
import socket
import subprocess
import threading
import time
import urllib.request

ROOT = pathlib.Path(__file__).resolve().parent.parent
PROMPTS = ["Pikachu est un Pokémon de type", "Dracaufeu est un Pokémon de type",
           "Aqualis est un Pokémon de type Eau. Il", "Flamador est un Pokémon légendaire de type Feu et Dragon. Ce"]
GGUF = {"f32": "f32", "int8": "q8_0", "bf16": "f16"}

p = argparse.ArgumentParser()
p.add_argument("model")
p.add_argument("--precisions", default="f32,int8")
p.add_argument("--clients", default="1,4,8,16")
p.add_argument("--threads", type=int, default=2)
p.add_argument("--tokens", type=int, default=64)
p.add_argument("--rounds", type=int, default=2, help="completions per client")
p.add_argument("--exe", default=str(ROOT / "target/release/tp06"))
p.add_argument("--llama-server", help="llama.cpp's llama-server binary (fixtures/install_llama_server.sh)")
p.add_argument("--out", default="/tmp/tp06-serve-batch")
a = p.parse_args()


def cpu():
    for line in pathlib.Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor()


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def stream(url, body):
    """Streams one completion: (time to first token, gaps between tokens, tokens)."""
    request = urllib.request.Request(url, json.dumps(body).encode(), {"Content-Type": "application/json"})
    start = time.perf_counter()
    stamps, tokens = [], None
    with urllib.request.urlopen(request, timeout=1200) as r:
        for raw in r:
            line = raw.decode().strip()
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            chunk = json.loads(line[6:])
            if chunk.get("usage"):
                tokens = chunk["usage"]["completion_tokens"]
            if chunk.get("choices") and chunk["choices"][0].get("text") is not None:
                stamps.append(time.perf_counter())
            if chunk.get("timings"):
                tokens = chunk["timings"].get("predicted_n", tokens)
    tokens = tokens if tokens is not None else len(stamps)
    gaps = [b - a for a, b in zip(stamps, stamps[1:])]
    return (stamps[0] - start if stamps else None), gaps, tokens


def load(url, body_of, clients):
    """`clients` threads, `a.rounds` streamed completions each: the figures."""
    ttft, gaps, tokens, lock = [], [], [], threading.Lock()

    def client(k):
        for i in range(a.rounds):
            first, between, n = stream(url, body_of(PROMPTS[(k + i) % len(PROMPTS)]))
            with lock:
                ttft.append(first)
                gaps.extend(between)
                tokens.append(n)

    started = time.perf_counter()
    threads = [threading.Thread(target=client, args=(k,)) for k in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - started
    pct = lambda v, q: round(sorted(v)[min(len(v) - 1, int(len(v) * q))] * 1e3, 1) if v else None
    return {"clients": clients, "completions": len(tokens), "new_tokens": sum(tokens), "wall_s": round(wall, 2),
            "tokens_per_second": round(sum(tokens) / wall, 1), "ttft_p50_ms": pct(ttft, 0.5),
            "token_p50_ms": pct(gaps, 0.5), "token_p95_ms": pct(gaps, 0.95)}


def wait_up(url, proc):
    for _ in range(600):
        if proc.poll() is not None:
            raise SystemExit(f"the server exited ({proc.returncode})")
        try:
            with urllib.request.urlopen(url, timeout=1):
                return
        except Exception:
            time.sleep(0.5)
    raise SystemExit(f"{url} did not answer")


def report(side, precision, figures):
    figures.update(side=side, precision=precision, model=a.model, threads=a.threads, cpu=cpu())
    print(json.dumps(figures), flush=True)


counts = [int(c) for c in a.clients.split(",")]
out = pathlib.Path(a.out)
out.mkdir(parents=True, exist_ok=True)
env = dict(os.environ, RAYON_NUM_THREADS=str(a.threads))
env.pop("TP06_API_KEY", None)
for precision in a.precisions.split(","):
    port = free_port()
    ours = subprocess.Popen([a.exe, "serve", "--model", a.model, "--base", "none", "--precision", precision,
                             "--addr", f"127.0.0.1:{port}", "--max-batch", str(max(counts)),
                             "--queue", str(max(counts) * 2)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    try:
        wait_up(f"http://127.0.0.1:{port}/health", ours)
        url = f"http://127.0.0.1:{port}/v1/completions"
        for n in counts:
            body = lambda prompt: {"model": "tp06", "prompt": prompt, "max_tokens": a.tokens, "temperature": 0,
                                   "stream": True, "stream_options": {"include_usage": True}}
            report("tp06", precision, load(url, body, n))
    finally:
        ours.terminate()
        ours.wait()
    if not a.llama_server:
        continue
    gguf = out / f"model-{GGUF[precision]}.gguf"
    subprocess.run([a.exe, "export", "--model", a.model, "--format", "gguf", "--precision", GGUF[precision],
                    "--out", str(gguf), "--run-dir", str(out / "run"), "--quiet"],
                   check=True, env=env, stdout=subprocess.DEVNULL)
    for n in counts:
        port = free_port()
        theirs = subprocess.Popen([a.llama_server, "-m", str(gguf), "-np", str(n), "-c", str(n * 512), "-t",
                                   str(a.threads), "-tb", str(a.threads), "--port", str(port), "--no-warmup"],
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            wait_up(f"http://127.0.0.1:{port}/health", theirs)
            url = f"http://127.0.0.1:{port}/v1/completions"
            body = lambda prompt: {"prompt": prompt, "max_tokens": a.tokens, "temperature": 0, "stream": True,
                                   "ignore_eos": True, "stream_options": {"include_usage": True}}
            report(f"llama.cpp -np {n}", GGUF[precision], load(url, body, n))
        finally:
            theirs.terminate()
            theirs.wait()
