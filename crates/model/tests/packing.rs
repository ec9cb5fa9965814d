//! Packed documents: a block holding several articles, its position ids
//! restarting at each (HF's `DataCollatorWithFlattening`), computes what each
//! article computes alone — logits and every parameter's gradient — on the
//! fused kernels and on the composed ops; padding after the last one too.
//!
//! Tolerance 1e-5, relative to each tensor's largest entry (the products sum
//! the same terms in other blocks and orders): the independent expectation is
//! the articles run one by one.

mod common;

use burn::backend::autodiff::grads::Gradients;
use burn::prelude::*;
use tp06_model::backend::CpuAutodiff;
use tp06_model::{Documents, Gpt2, Gpt2Config, Kernels, Layout, Pass, ScratchInit, init_from_scratch};

type Ad = CpuAutodiff;

fn config() -> Gpt2Config {
    // Larger than GPT-2's 0.02, so that attention is far from uniform and
    // a key of another article would show.
    Gpt2Config { initializer_range: 0.3, ..common::tiny_config(61, 24, 32) }
}

fn values<B: Backend, const D: usize>(t: Tensor<B, D>) -> Vec<f32> {
    t.into_data().convert::<f32>().into_vec().unwrap()
}

fn ids(rows: &[Vec<u32>]) -> Tensor<Ad, 2, Int> {
    let t = rows[0].len();
    let flat: Vec<i64> = rows.iter().flatten().map(|&i| i as i64).collect();
    Tensor::from_data(TensorData::new(flat, [rows.len(), t]), &Default::default())
}

/// A weight per (position, vocabulary entry), so that the loss reaches every logit.
fn weights(n: usize, vocab: usize, seed: u64) -> Vec<f32> {
    (0..n * vocab).map(|i| (((i as u64 * 2654435761 + seed) % 1000) as f32 / 500.0) - 1.0).collect()
}

/// Logits `[n, vocab]` of the positions `rows × t`, and the gradient of
/// `Σ logits · w` with respect to every parameter, by name.
/// Logits, and gradients by parameter name.
type Run = (Vec<f32>, Vec<(String, Vec<f32>)>);

fn run(model: &Gpt2<Ad>, rows: &[Vec<u32>], layout: &Layout<Ad>, w: &[f32], kernels: Kernels) -> Run {
    let mut pass = Pass::inference().with_kernels(kernels);
    let logits = model.forward_with(ids(rows), layout, &mut pass); // [b, t, vocab]
    let [b, t, v] = logits.dims();
    let w = Tensor::<Ad, 3>::from_data(TensorData::new(w.to_vec(), [b, t, v]), &Default::default());
    let grads: Gradients = (logits.clone() * w).sum().backward();
    let g1 = |name: String, p: &burn::module::Param<Tensor<Ad, 1>>| (name, values(p.val().grad(&grads).unwrap()));
    let g2 = |name: String, p: &burn::module::Param<Tensor<Ad, 2>>| (name, values(p.val().grad(&grads).unwrap()));
    let mut named = vec![g2("wte".into(), &model.wte.weight), g2("wpe".into(), &model.wpe.weight)];
    for (i, block) in model.h.iter().enumerate() {
        named.push(g1(format!("h.{i}.ln_1.weight"), &block.ln_1.weight));
        named.push(g2(format!("h.{i}.attn.c_attn.weight"), &block.attn.c_attn.weight));
        named.push(g1(format!("h.{i}.attn.c_attn.bias"), &block.attn.c_attn.bias));
        named.push(g2(format!("h.{i}.attn.c_proj.weight"), &block.attn.c_proj.weight));
        named.push(g1(format!("h.{i}.ln_2.bias"), &block.ln_2.bias));
        named.push(g2(format!("h.{i}.mlp.c_fc.weight"), &block.mlp.c_fc.weight));
        named.push(g2(format!("h.{i}.mlp.c_proj.weight"), &block.mlp.c_proj.weight));
    }
    named.push(g1("ln_f.weight".into(), &model.ln_f.weight));
    (values(logits.inner()), named)
}

/// Within 1e-5 of `expected`, relative to its largest entry (or 1): a
/// gradient sums many terms, whose rounding scales with the largest.
fn assert_close(what: &str, ours: &[f32], expected: &[f32]) {
    assert_eq!(ours.len(), expected.len(), "{what}: lengths");
    let scale = expected.iter().fold(1.0f32, |m, v| m.max(v.abs()));
    for (i, (a, b)) in ours.iter().zip(expected).enumerate() {
        assert!((a - b).abs() <= 1e-5 * scale, "{what}[{i}]: packed {a} vs alone {b} (scale {scale})");
    }
}

#[test]
fn a_packed_block_computes_what_its_articles_compute_alone_on_both_routes() {
    let config = config();
    let model = init_from_scratch::<Ad>(&config, ScratchInit { seed: 7 }, &Default::default());
    let v = config.vocab_size;
    let articles: [Vec<u32>; 3] = [vec![5, 9, 13, 2, 40], (20..27).collect(), vec![33, 3, 58, 1]];
    let lengths: Vec<usize> = articles.iter().map(Vec::len).collect();
    let t: usize = lengths.iter().sum(); // 16
    // Row 0 packs the three; row 1 holds the second alone, then padding.
    let row0: Vec<u32> = articles.concat();
    let mut row1 = articles[1].clone();
    row1.resize(t, 0);
    let positions: Vec<u32> = lengths
        .iter()
        .flat_map(|&n| 0..n as u32)
        .chain((0..lengths[1] as u32).chain(0..(t - lengths[1]) as u32))
        .collect();
    let pad: Vec<bool> = (0..2 * t).map(|i| i >= t + lengths[1]).collect();
    let layout = Layout {
        pad: Some(Tensor::from_data(TensorData::new(pad, [2, t]), &Default::default())),
        documents: Some(Documents::new(positions, t)),
    };
    // The padded positions' logits weigh nothing: the loss is the articles'.
    let mut w = weights(2 * t, v, 3);
    w[(t + lengths[1]) * v..].fill(0.0);

    for kernels in [Kernels::Backend, Kernels::Composed] {
        let route = format!("{kernels:?}");
        let (packed, packed_grads) = run(&model, &[row0.clone(), row1.clone()], &layout, &w, kernels);
        // The articles one by one, each with its slice of the weights: the
        // packed loss is the sum of theirs, and so is its gradient.
        let mut alone: Vec<Run> = Vec::new();
        let mut start = 0;
        for (article, row_start) in articles.iter().zip([0, lengths[0], lengths[0] + lengths[1]]) {
            let n = article.len();
            alone.push(run(
                &model,
                std::slice::from_ref(article),
                &Layout::plain(),
                &w[row_start * v..(row_start + n) * v],
                kernels,
            ));
            start += n;
        }
        assert_eq!(start, t);
        let n1 = lengths[1];
        alone.push(run(&model, std::slice::from_ref(&articles[1]), &Layout::plain(), &w[t * v..(t + n1) * v], kernels));

        let row0_alone: Vec<f32> = alone[..3].iter().flat_map(|(logits, _)| logits.iter().copied()).collect();
        assert_close(&format!("{route}: row 0 logits"), &packed[..t * v], &row0_alone);
        assert_close(&format!("{route}: row 1 logits"), &packed[t * v..(t + n1) * v], &alone[3].0);
        for (i, (name, ours)) in packed_grads.iter().enumerate() {
            let mut expected = vec![0.0f32; ours.len()];
            for (_, grads) in &alone {
                assert_eq!(grads[i].0, *name);
                expected.iter_mut().zip(&grads[i].1).for_each(|(e, g)| *e += g);
            }
            assert_close(&format!("{route}: gradient of {name}"), ours, &expected);
        }
    }
}

#[test]
fn without_documents_the_articles_of_a_block_see_each_other() {
    // The check above can fail: the same block run as one document differs.
    let config = config();
    let model = init_from_scratch::<Ad>(&config, ScratchInit { seed: 7 }, &Default::default());
    let (a, b): (Vec<u32>, Vec<u32>) = (vec![5, 9, 13, 2], vec![20, 21, 22]);
    let block = [a.clone(), b.clone()].concat();
    let w = weights(block.len(), config.vocab_size, 1);
    let (plain, _) = run(&model, &[block], &Layout::plain(), &w, Kernels::Backend);
    let (alone, _) = run(&model, &[b], &Layout::plain(), &w[a.len() * config.vocab_size..], Kernels::Backend);
    let tail = &plain[a.len() * config.vocab_size..];
    let differs = tail.iter().zip(&alone).any(|(x, y)| (x - y).abs() > 1e-3);
    assert!(differs, "the second article's logits change when it sees the first");
}
