//! The `gemm` crate (the matrix kernels under Burn's CPU backend and the fused
//! attention) alone, on the products of a training step of the bench
//! shapes, with and without transposed operands, 2 threads: GFLOP/s.
//! `bench/gemm_probe.py` runs the same products in PyTorch, for the
//! comparison in BENCHMARKS.md:
//!
//!     cargo run --release -p tp06-model --example gemm_probe
//!     python bench/gemm_probe.py

use std::time::Instant;

fn main() {
    // (m, k, n, lhs transposed, rhs transposed)
    let shapes = [
        (512usize, 256usize, 8000usize),
        (512, 768, 2304),
        (512, 768, 50000),
        (256, 512, 768),
        (768, 512, 2304),
        // The base shape's (gpt-fr-cased-base, n_embd 1792), m×k×n for one micro-batch of 2 × 256:
        // the forward products (c_attn, c_fc, mlp.c_proj; the head, wte read transposed), the
        // inputs' gradients (weights transposed), the weights' gradients (inputs transposed).
        (512, 1792, 5376),
        (512, 1792, 7168),
        (512, 7168, 1792),
        (510, 1792, 50000),
        (512, 5376, 1792),
        (510, 50000, 1792),
        (1792, 512, 5376),
        (1792, 512, 7168),
        (7168, 512, 1792),
    ];
    for (m, k, n) in shapes {
        for (lt, rt) in [(false, false), (false, true), (true, false)] {
            let a = vec![0.5f32; m * k];
            let b = vec![0.25f32; k * n];
            let mut c = vec![0.0f32; m * n];
            let flops = 2.0 * (m * k * n) as f64;
            let reps = (10e9 / flops).ceil() as usize;
            // lhs [m,k]: row-major (rs=k, cs=1) or transposed storage [k,m] (rs=1, cs=m)
            let (lrs, lcs) = if lt { (1isize, m as isize) } else { (k as isize, 1) };
            let (rrs, rcs) = if rt { (1isize, k as isize) } else { (n as isize, 1) };
            let run = |c: &mut [f32]| unsafe {
                gemm::gemm(
                    m,
                    n,
                    k,
                    c.as_mut_ptr(),
                    1,
                    n as isize,
                    false,
                    a.as_ptr(),
                    lcs,
                    lrs,
                    b.as_ptr(),
                    rcs,
                    rrs,
                    0.0,
                    1.0,
                    false,
                    false,
                    false,
                    gemm::Parallelism::Rayon(2),
                )
            };
            run(&mut c);
            let t = Instant::now();
            for _ in 0..reps {
                run(&mut c);
            }
            let g = flops * reps as f64 / t.elapsed().as_secs_f64() / 1e9;
            println!("{m}x{k}x{n} lhsT={lt} rhsT={rt}: {g:.1} GFLOP/s");
        }
    }
}
