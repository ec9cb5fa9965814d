#!/usr/bin/env bash
# The GPU comparison in one go, for a machine with an NVIDIA GPU, PyTorch and
# transformers: `tp06 bench` on the CUDA backend beside PyTorch on the same GPU,
# in f32 and in bf16, both shapes, the three works.
#
#   bench/gpu.sh [TP06] [OUT_DIR]
#
# TP06 is a tp06 built with CUDA (default target/release/tp06, from
# `CUDARC_CUDA_VERSION=13000 cargo build --release -p tp06-cli --bin tp06 --features cuda`);
# it may be an .xz of one. OUT_DIR (default data/bench) receives
# gpu-{f32,bf16}-{generate,forward,train}.json and gpu.log. Each (precision,
# work) is its own `tp06 bench` with its own time limit (GPU_BENCH_LIMIT
# seconds, default 150), so that one slow or stuck run cannot eat the others'
# time; rows are written as they finish. One run per side (GPU_BENCH_REPEATS,
# default 1): a lent GPU's minutes are few, and a GPU is far less noisy than
# these shared CPUs.
set -uo pipefail

tp06=${1:-target/release/tp06}
out=${2:-data/bench}
limit=${GPU_BENCH_LIMIT:-150}
repeats=${GPU_BENCH_REPEATS:-1}
mkdir -p "$out"
log="$out/gpu.log"

if [[ $tp06 == *.xz ]]; then
    xz -dc "$tp06" > /tmp/tp06-cuda && chmod +x /tmp/tp06-cuda && tp06=/tmp/tp06-cuda
fi
if [[ ! -x $tp06 ]]; then
    echo "bench/gpu.sh: no tp06 executable at \`$tp06\`; build one with --features cuda" >&2
    exit 2
fi

{
    date -u
    nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader || echo "nvidia-smi: not available"
} 2>&1 | tee "$log"
# Without a GPU that PyTorch sees, every bench below would fail: say so once.
if ! python3 -c 'import torch, transformers; assert torch.cuda.is_available(); print("torch", torch.__version__, "cuda", torch.version.cuda, torch.cuda.get_device_name(0), "transformers", transformers.__version__)' 2>&1 | tee -a "$log"; then
    echo "bench/gpu.sh: python3 has no torch + transformers that sees a CUDA GPU; nothing measured" | tee -a "$log" >&2
    exit 2
fi

status=0
for precision in f32 bf16; do
    for work in generate forward train; do
        echo "== $precision $work" | tee -a "$log"
        timeout "$limit" "$tp06" bench --backend cuda --precision "$precision" --works "$work" --shapes mini,small \
            --repeats "$repeats" --steps 3 --threads 8 --json "$out/gpu-$precision-$work.json" 2>&1 | tee -a "$log"
        rc=${PIPESTATUS[0]}
        [[ $rc == 0 ]] || { echo "== $precision $work: exit $rc" | tee -a "$log"; status=1; }
    done
done
exit $status
