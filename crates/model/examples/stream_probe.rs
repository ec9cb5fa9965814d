//! Decoding's weight streaming alone: one token's products on the 124 M shape
//! (`Pass::linear` over the 12 blocks' four `Conv1D` weights, `Pass::tied_head`
//! over `wte`), in GB/s of weights read, beside a plain read of the same bytes
//! (eight-lane sums, so that it vectorises). The `Conv1D` weights are laid
//! out as generation lays them out (`Gpt2::for_decoding`). Generation can go no faster than
//! the weights stream; BENCHMARKS.md compares the two.
//!
//! `ROWS=m` runs the products on `m` rows at once (a batched decoding step;
//! 1 by default): the rates are then of the weights read once per step.
//!
//!     RAYON_NUM_THREADS=2 cargo run --release -p tp06-model --example stream_probe

use std::time::Instant;

use burn::prelude::*;
use rayon::prelude::*;
use tp06_model::Pass;
use tp06_model::backend::Cpu;

fn filled<const D: usize>(shape: [usize; D]) -> (Tensor<Cpu, D>, Vec<f32>) {
    let n = shape.iter().product::<usize>();
    let values: Vec<f32> = (0..n).map(|i| (i % 7) as f32 * 0.01).collect();
    (Tensor::from_data(TensorData::new(values.clone(), shape), &Default::default()), values)
}

fn main() {
    let (c, vocab, layers) = (768, 50_000, 12);
    let rows: usize = std::env::var("ROWS").ok().and_then(|r| r.parse().ok()).unwrap_or(1);
    let shapes = [(c, 3 * c), (c, c), (c, 4 * c), (4 * c, c)];
    let mut weights = Vec::new();
    let mut host = Vec::new();
    for _ in 0..layers {
        for (k, n) in shapes {
            let (w, values) = filled([k, n]);
            // As generation lays it out (`Gpt2::for_decoding`).
            let w = <Cpu as tp06_model::kernels::Gpt2Ops>::decoding_layout(w);
            weights.push((w, filled([n]).0, filled([rows, k]).0));
            host.push(values);
        }
    }
    let (wte, wte_values) = filled([vocab, c]);
    host.push(wte_values);
    let hidden = filled([rows, c]).0;
    let block_bytes: usize = shapes.iter().map(|(k, n)| k * n * 4).sum::<usize>() * layers;
    let head_bytes = vocab * c * 4;
    let reps = 10;
    for round in 1..=3 {
        let t = Instant::now();
        for _ in 0..reps {
            for (w, b, x) in &weights {
                let _ = Pass::inference().linear(x.clone(), w.clone(), b.clone()).into_data();
            }
        }
        let blocks = (block_bytes * reps) as f64 / t.elapsed().as_secs_f64() / 1e9;
        let t = Instant::now();
        for _ in 0..reps {
            let _ = Pass::inference().tied_head(hidden.clone(), wte.clone()).into_data();
        }
        let head = (head_bytes * reps) as f64 / t.elapsed().as_secs_f64() / 1e9;
        let t = Instant::now();
        let mut total = 0.0f32;
        for _ in 0..reps {
            total += host
                .par_iter()
                .flat_map(|m| m.par_chunks(1 << 16))
                .map(|chunk| {
                    let mut lanes = [0.0f32; 8];
                    for eight in chunk.chunks_exact(8) {
                        for (l, v) in lanes.iter_mut().zip(eight) {
                            *l += v;
                        }
                    }
                    lanes.iter().sum::<f32>()
                })
                .sum::<f32>();
        }
        let read = ((block_bytes + head_bytes) * reps) as f64 / t.elapsed().as_secs_f64() / 1e9;
        println!(
            "round {round}, {rows} row(s): Conv1D kernel {blocks:.1} GB/s, tied-head kernel {head:.1} GB/s, plain read {read:.1} GB/s ({total:.0})"
        );
    }
}
