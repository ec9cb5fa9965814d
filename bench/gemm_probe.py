#!/usr/bin/env python3
"""PyTorch's side of `crates/model/examples/gemm_probe.rs`: the same products
(m×k by k×n, f32, operands transposed or not), 2 threads, GFLOP/s.

    python bench/gemm_probe.py
"""
import time

import torch

torch.set_num_threads(2)
SHAPES = [(512, 256, 8000), (512, 768, 2304), (512, 768, 50000), (256, 512, 768), (768, 512, 2304),
          (512, 1792, 5376), (512, 1792, 7168), (512, 7168, 1792), (510, 1792, 50000),
          (512, 5376, 1792), (510, 50000, 1792), (1792, 512, 5376), (1792, 512, 7168), (7168, 512, 1792)]
for m, k, n in SHAPES:
    for lhs_t, rhs_t in [(False, False), (False, True), (True, False)]:
        a = torch.full((k, m), 0.5).t() if lhs_t else torch.full((m, k), 0.5)
        b = torch.full((n, k), 0.25).t() if rhs_t else torch.full((k, n), 0.25)
        flops = 2 * m * k * n
        reps = int(10e9 / flops) + 1
        a @ b
        start = time.perf_counter()
        for _ in range(reps):
            a @ b
        rate = flops * reps / (time.perf_counter() - start) / 1e9
        print(f"{m}x{k}x{n} lhsT={str(lhs_t).lower()} rhsT={str(rhs_t).lower()}: {rate:.1f} GFLOP/s")
