#!/usr/bin/env python3
"""llama.cpp's side of `tp06 bench --peer llama.cpp`: the `generate` work of
`tp06 bench-one` (greedy decoding with the KV cache, a 16-token prompt, 128
new tokens; new tokens per second) on a GGUF file that tp06 wrote of the same
shape and weights, through llama-cpp-python (`fixtures/install_llama_cpp.sh`).

    python bench/peer_llama_cpp.py --gguf FILE --shape {small,base} --dtype {f32,f16,q8_0} [--steps N] [--threads T]

Prints one JSON object, as bench/bench.py does (tokens_per_second, seconds,
peak_rss_mb).
"""
import argparse
import json
import random
import time

from llama_cpp import Llama, __version__


def peak_rss_mb():
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return None


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--gguf", required=True)
    p.add_argument("--shape", required=True)
    p.add_argument("--dtype", required=True)
    p.add_argument("--steps", type=int, default=2)
    p.add_argument("--threads", type=int, default=2)
    a = p.parse_args()
    llm = Llama(model_path=a.gguf, n_ctx=256, n_batch=64, n_threads=a.threads, n_threads_batch=a.threads, verbose=False)
    rng = random.Random(3)
    prompt = [rng.randrange(256, llm.n_vocab()) for _ in range(16)]

    def generate(n):
        llm.reset()
        out = 0
        for _ in llm.generate(prompt, temp=0.0, top_k=1, top_p=1.0, min_p=0.0, repeat_penalty=1.0, reset=True):
            out += 1
            if out == n:
                break
        return out

    generate(8)  # warm-up, as tp06 bench-one
    start = time.perf_counter()
    tokens = sum(generate(128) for _ in range(a.steps))
    seconds = time.perf_counter() - start
    print(json.dumps({
        "side": "llama.cpp", "work": "generate", "shape": a.shape, "threads": a.threads, "tokens": tokens,
        "seconds": seconds, "tokens_per_second": tokens / seconds, "peak_rss_mb": peak_rss_mb(), "dtype": a.dtype,
        "llama_cpp_python": __version__,
    }))


if __name__ == "__main__":
    main()
