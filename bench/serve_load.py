#!/usr/bin/env python3
"""A load on `tp06 serve`: 8 clients send 8 greedy completions each (32 new
tokens, the course's prompts in turn) to the server started on MODEL in each
precision asked, one server after the other; prints the wall time, the
latency percentiles and the server's peak memory per precision, as JSON lines.

    cargo build --release -p tp06-cli
    python bench/serve_load.py MODEL_DIR [--precisions f32,int8] [--threads 2]

The server generates one request at a time (its engine thread), so a
request's latency is its queueing behind the others plus its own generation.
"""
import argparse
import json
import os
import pathlib
import subprocess
import threading
import time
import urllib.request

ROOT = pathlib.Path(__file__).resolve().parent.parent
PROMPTS = ["Pikachu est un Pokémon de type", "Dracaufeu est un Pokémon de type",
           "Aqualis est un Pokémon de type Eau. Il", "Flamador est un Pokémon légendaire de type Feu et Dragon. Ce"]

p = argparse.ArgumentParser()
p.add_argument("model")
p.add_argument("--precisions", default="f32,int8")
p.add_argument("--threads", type=int, default=2)
p.add_argument("--clients", type=int, default=8)
p.add_argument("--requests", type=int, default=8, help="per client")
p.add_argument("--tokens", type=int, default=32)
p.add_argument("--exe", default=str(ROOT / "target/release/tp06"))
a = p.parse_args()

for precision in a.precisions.split(","):
    env = dict(os.environ, RAYON_NUM_THREADS=str(a.threads))
    env.pop("TP06_API_KEY", None)
    server = subprocess.Popen([a.exe, "serve", "--model", a.model, "--base", "none", "--precision", precision,
                               "--addr", "127.0.0.1:0", "--queue", str(a.clients * a.requests)],
                              stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=env)
    url = next(w for line in server.stdout for w in line.split() if w.startswith("http://"))
    latencies, tokens, lock = [], [], threading.Lock()

    def client(k):
        for i in range(a.requests):
            body = json.dumps({"model": "tp06", "prompt": PROMPTS[(k + i) % len(PROMPTS)], "max_tokens": a.tokens,
                               "temperature": 0}).encode()
            request = urllib.request.Request(url.rstrip("/") + "/v1/completions", body,
                                             {"Content-Type": "application/json"})
            start = time.perf_counter()
            with urllib.request.urlopen(request, timeout=600) as r:
                answer = json.loads(r.read())
            with lock:
                latencies.append(time.perf_counter() - start)
                tokens.append(answer["usage"]["completion_tokens"])

    started = time.perf_counter()
    threads = [threading.Thread(target=client, args=(k,)) for k in range(a.clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - started
    status = pathlib.Path(f"/proc/{server.pid}/status").read_text()
    peak = next(int(l.split()[1]) / 1024 for l in status.splitlines() if l.startswith("VmHWM:"))
    server.terminate()
    server.wait()
    latencies.sort()
    n = len(latencies)
    print(json.dumps({"precision": precision, "requests": n, "wall_s": round(wall, 2),
                      "new_tokens": sum(tokens), "tokens_per_second": round(sum(tokens) / wall, 1),
                      "p50_ms": round(latencies[n // 2] * 1e3), "p95_ms": round(latencies[int(n * 0.95) - 1] * 1e3),
                      "server_peak_mb": round(peak), "model": a.model, "threads": a.threads}), flush=True)
