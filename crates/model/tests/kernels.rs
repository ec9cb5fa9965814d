//! The CPU backend's kernels against the composed Burn ops they replace: values
//! and gradients of every input, with padding, a cache offset and dropout;
//! the same bits whatever the number of threads; NaN goes through.
//!
//! Tolerances: the kernels' `exp` is within 2.5e-7 of libm's and they sum in
//! another order, so values agree to 1e-5 relative and gradients to 1e-5
//! absolute on inputs of unit scale.

use burn::backend::autodiff::grads::Gradients;
use burn::prelude::*;
use burn::tensor::{Bool, Distribution};
use tp06_model::backend::{Cpu, CpuAutodiff};
use tp06_model::kernels::{BF16_STREAMED_ROWS, FEW_ROWS};
use tp06_model::{Dropout, Kernels, Pass};

type Ad = CpuAutodiff;

fn random<const D: usize>(shape: [usize; D], seed: u64, scale: f64) -> Tensor<Ad, D> {
    let device = Default::default();
    <Ad as Backend>::seed(&device, seed);
    Tensor::<Ad, D>::random(shape, Distribution::Uniform(-scale, scale), &device).require_grad()
}

fn values<B: Backend, const D: usize>(t: Tensor<B, D>) -> Vec<f32> {
    t.into_data().convert::<f32>().into_vec().unwrap()
}

fn grad<const D: usize>(t: &Tensor<Ad, D>, grads: &Gradients) -> Vec<f32> {
    values(t.grad(grads).expect("a gradient"))
}

fn assert_close(what: &str, ours: &[f32], reference: &[f32], tolerance: f32) {
    assert_eq!(ours.len(), reference.len(), "{what}: lengths");
    for (i, (a, b)) in ours.iter().zip(reference).enumerate() {
        assert!((a - b).abs() <= tolerance * b.abs().max(1.0), "{what}[{i}]: fused {a} vs composed {b}");
    }
}

/// A training pass (dropout seeded with `seed`) on `kernels`.
fn pass(kernels: Kernels, seed: u64) -> Pass {
    Pass::training(seed).with_kernels(kernels)
}

/// Runs `f` twice, on the backend's kernels then on the composed ops, and
/// returns (value, gradients of `inputs`) of each.
fn both<const D: usize>(
    inputs: &[Tensor<Ad, D>],
    f: impl Fn(Kernels) -> Tensor<Ad, 1>,
) -> [(Vec<f32>, Vec<Vec<f32>>); 2] {
    let run = |kernels| {
        let out = f(kernels);
        let grads = out.backward();
        (values(out.inner()), inputs.iter().map(|t| grad(t, &grads)).collect::<Vec<_>>())
    };
    [run(Kernels::Backend), run(Kernels::Composed)]
}

fn compare(what: &str, [fused, composed]: [(Vec<f32>, Vec<Vec<f32>>); 2]) {
    assert_close(&format!("{what} value"), &fused.0, &composed.0, 1e-5);
    for (i, (a, b)) in fused.1.iter().zip(&composed.1).enumerate() {
        assert_close(&format!("{what} gradient {i}"), a, b, 1e-5);
    }
}

#[test]
fn nll_sum_and_its_gradient_equal_log_softmax_and_gather() {
    let (n, vocab) = (7, 300);
    let logits = random([n, vocab], 1, 4.0);
    let targets: Vec<u32> = (0..n as u32).map(|i| (i * 37 + 5) % vocab as u32).collect();
    let weights = vec![1.0, 1.0, 0.0, 1.0, 1.0, 0.0, 1.0];
    let results = both(std::slice::from_ref(&logits), |k| pass(k, 0).nll_sum(logits.clone(), &targets, &weights) * 0.5);
    // Rows of weight 0 get no gradient at all.
    let row2 = &results[0].1[0][2 * vocab..3 * vocab];
    assert!(row2.iter().all(|&g| g == 0.0));
    compare("nll_sum", results);
}

#[test]
fn attention_probs_equal_mask_softmax_dropout_with_padding_and_a_cache_offset() {
    let device = Default::default();
    let (b, h, t, past) = (2, 3, 5, 4);
    let total = past + t;
    let scores = random([b, h, t, total], 2, 3.0);
    let upstream = random([b, h, t, total], 3, 1.0).detach(); // weights a non-trivial gradient
    // Batch 0 pads its last key, batch 1 its first two.
    let mut pad = vec![false; b * total];
    pad[total - 1] = true;
    pad[total] = true;
    pad[total + 1] = true;
    let pad = Tensor::<Ad, 2, Bool>::from_data(TensorData::new(pad, [b, total]), &device);
    for p in [0.0, 0.3] {
        let results = both(std::slice::from_ref(&scores), |k| {
            let probs =
                pass(k, 11).attention_probs(scores.clone(), past, Some(pad.clone()), 8f32.sqrt(), Dropout { p });
            (probs * upstream.clone()).sum()
        });
        compare(&format!("attention p={p}"), results);
    }
    // Inference on the Flex backend itself: no dropout, rows sum to 1.
    let plain = Tensor::<Cpu, 4>::from_data(scores.clone().inner().into_data(), &device);
    let inference = |k| Pass::inference().with_kernels(k);
    let probs = inference(Kernels::Backend).attention_probs(plain.clone(), past, None, 1.0, Dropout { p: 0.3 });
    let reference = inference(Kernels::Composed).attention_probs(plain, past, None, 1.0, Dropout { p: 0.3 });
    let probs = values(probs);
    assert_close("attention inference", &probs, &values(reference), 1e-5);
    for (r, row) in probs.chunks(total).enumerate() {
        let visible = past + r % t + 1;
        assert!((row.iter().sum::<f32>() - 1.0).abs() < 1e-5 && row[visible..].iter().all(|&v| v == 0.0), "row {r}");
    }
}

#[test]
fn a_query_that_sees_no_key_gets_zeros_and_no_gradient_on_both_routes() {
    let device = Default::default();
    let (b, t, h, hd) = (2, 6, 2, 4);
    let qkv = random([b, t, 3 * h * hd], 21, 2.0);
    let upstream = random([b, t, h * hd], 22, 1.0).detach();
    // Batch 1 is left-padded: its first two queries see no key at all.
    let mut pad = vec![false; b * t];
    pad[t..t + 2].fill(true);
    let pad = Tensor::<Ad, 2, Bool>::from_data(TensorData::new(pad, [b, t]), &device);
    let [fused, composed] = both(std::slice::from_ref(&qkv), |k| {
        (pass(k, 0).causal_attention(qkv.clone(), h, Some(pad.clone()), None, (hd as f32).sqrt(), Dropout { p: 0.0 })
            * upstream.clone())
        .sum()
    });
    let width = 3 * h * hd;
    for (route, (value, grads)) in [("fused", &fused), ("composed", &composed)] {
        assert!(value[0].is_finite() && grads[0].iter().all(|g| g.is_finite()), "{route}: finite");
        // The padded positions' q (their outputs are zeros), k and v (no query
        // sees them) get no gradient; the others do.
        let batch1 = &grads[0][t * width..];
        assert!(batch1[..2 * width].iter().all(|&g| g == 0.0), "{route}: {:?}", &batch1[..2 * width]);
        assert!(batch1[2 * width..].iter().any(|&g| g != 0.0), "{route}");
    }
    compare("no key", [fused, composed]);
    // The blind queries' outputs are zeros, for every head.
    let out = values(pass(Kernels::Composed, 0).causal_attention(
        qkv.clone(),
        h,
        Some(pad.clone()),
        None,
        1.0,
        Dropout { p: 0.0 },
    ));
    let row = h * hd;
    let batch1 = &out[t * row..];
    assert!(batch1[..2 * row].iter().all(|&v| v == 0.0), "{:?}", &batch1[..2 * row]);
    assert!(batch1[2 * row..].iter().all(|&v| v != 0.0));
    // The probabilities of a cached step whose keys are all padding: zeros too.
    let scores = random([1, h, 1, 3], 23, 1.0);
    let all_pad = Tensor::<Ad, 2, Bool>::from_data(TensorData::new(vec![true; 3], [1, 3]), &device);
    let probs = values(pass(Kernels::Composed, 0).attention_probs(scores, 2, Some(all_pad), 1.0, Dropout { p: 0.0 }));
    assert_eq!(probs, vec![0.0; h * 3]);
}

#[test]
fn gelu_new_and_its_gradient_equal_the_composed_formula() {
    let x = random([4, 37], 4, 6.0);
    let upstream = random([4, 37], 5, 1.0).detach();
    compare("gelu_new", both(std::slice::from_ref(&x), |k| (pass(k, 0).gelu_new(x.clone()) * upstream.clone()).sum()));
}

#[test]
fn layer_norm_and_the_gradients_of_input_scale_and_shift_equal_burns() {
    let x = random([5, 3, 20], 6, 2.0);
    let weight = random([20], 7, 1.0);
    let bias = random([20], 8, 1.0);
    let upstream = random([5, 3, 20], 9, 1.0).detach();
    let results = both(&[weight.clone(), bias.clone()], |k| {
        (pass(k, 0).layer_norm(x.clone(), weight.clone(), bias.clone(), 1e-5) * upstream.clone()).sum()
    });
    compare("layer_norm scale and shift", results);
    let run = |k| {
        let out = (pass(k, 0).layer_norm(x.clone(), weight.clone(), bias.clone(), 1e-5) * upstream.clone()).sum();
        grad(&x, &out.backward())
    };
    assert_close("layer_norm input gradient", &run(Kernels::Backend), &run(Kernels::Composed), 1e-5);
}

#[test]
fn kernels_give_the_same_bits_on_one_thread_and_on_several() {
    let logits = random([9, 1000], 10, 5.0);
    let targets: Vec<u32> = (0..9).map(|i| i * 101).collect();
    let weights = vec![1.0; 9];
    let run = || {
        let mut pass = Pass::training(3);
        let scores = pass.attention_probs(logits.clone().reshape([1, 1, 9, 1000]), 991, None, 2.0, Dropout { p: 0.1 });
        let loss = pass.nll_sum(scores.reshape([9, 1000]) * 100.0, &targets, &weights);
        let grads = loss.backward();
        (values(loss.inner()), grad(&logits, &grads))
    };
    let one = rayon::ThreadPoolBuilder::new().num_threads(1).build().unwrap().install(run);
    let three = rayon::ThreadPoolBuilder::new().num_threads(3).build().unwrap().install(run);
    assert_eq!(one, three);
}

#[test]
fn a_nan_logit_makes_the_loss_nan() {
    let mut logits = vec![0.5f32; 2 * 50];
    logits[60] = f32::NAN;
    let logits = Tensor::<Ad, 2>::from_data(TensorData::new(logits, [2, 50]), &Default::default());
    let loss = values(Pass::inference().nll_sum(logits, &[3, 4], &[1.0, 1.0]));
    assert!(loss[0].is_nan(), "{loss:?}");
}

#[test]
fn causal_attention_equals_the_composed_heads_with_padding_and_dropout() {
    let device = Default::default();
    // 70 positions: more than one block of queries; 3 heads of 8.
    let (b, t, h, hd) = (2, 70, 3, 8);
    let qkv = random([b, t, 3 * h * hd], 12, 2.0);
    let upstream = random([b, t, h * hd], 13, 1.0).detach();
    let mut pad = vec![false; b * t];
    pad[t - 5..t].fill(true); // batch 0 right-padded
    pad[t + 3] = true; // batch 1: its fourth key hidden
    let pad = Tensor::<Ad, 2, Bool>::from_data(TensorData::new(pad, [b, t]), &device);
    for p in [0.0, 0.2] {
        let results = both(std::slice::from_ref(&qkv), |k| {
            (pass(k, 5).causal_attention(qkv.clone(), h, Some(pad.clone()), None, (hd as f32).sqrt(), Dropout { p })
                * upstream.clone())
            .sum()
        });
        compare(&format!("causal attention p={p}"), results);
    }
    // On Flex itself, with and without dropout.
    let plain = Tensor::<Cpu, 3>::from_data(qkv.clone().inner().into_data(), &device);
    let inference = |k| Pass::inference().with_kernels(k);
    let ours = inference(Kernels::Backend).causal_attention(plain.clone(), h, None, None, 1.0, Dropout { p: 0.2 });
    let reference =
        inference(Kernels::Composed).causal_attention(plain.clone(), h, None, None, 1.0, Dropout { p: 0.2 });
    assert_close("causal attention inference", &values(ours), &values(reference), 1e-5);
    let ours = pass(Kernels::Backend, 9).causal_attention(plain.clone(), h, None, None, 1.0, Dropout { p: 0.2 });
    let reference = pass(Kernels::Composed, 9).causal_attention(plain, h, None, None, 1.0, Dropout { p: 0.2 });
    assert_close("causal attention with dropout, no autodiff", &values(ours), &values(reference), 1e-5);
}

#[test]
fn few_row_products_equal_the_general_product_and_do_not_depend_on_threads() {
    // Sizes off the kernels' blocks: 131 weight rows (four per pass and a
    // rest), 37 columns and 45 wide (16 lanes and a masked rest), 300
    // vocabulary rows (tasks of 64 and a rest). `FEW_ROWS + 1` rows take the
    // general product. The weight also laid out for decoding (`[out, in]`).
    let (k, n, c, vocab) = (131, 37, 45, 300);
    let weight = random([k, n], 30, 1.0).inner();
    let bias = random([n], 31, 1.0).inner();
    let wte = random([vocab, c], 32, 1.0).inner();
    for m in 1..=FEW_ROWS + 1 {
        let x = random([m, k], 33 + m as u64, 1.0).inner();
        let hidden = random([m, c], 43 + m as u64, 1.0).inner();
        let by_rows = <Cpu as tp06_model::Gpt2Ops>::decoding_layout(weight.clone());
        let run = |kernels| {
            let pass = Pass::inference().with_kernels(kernels);
            let y = pass.linear::<Cpu>(x.clone(), weight.clone(), bias.clone());
            let y_by_rows = pass.linear::<Cpu>(x.clone(), by_rows.clone(), bias.clone());
            let logits = pass.tied_head::<Cpu>(hidden.clone(), wte.clone());
            (values(y), values(y_by_rows), values(logits))
        };
        let (y, y_by_rows, logits) = run(Kernels::Backend);
        let (y_ref, y_by_rows_ref, logits_ref) = run(Kernels::Composed);
        assert_close(&format!("linear, general product of either layout, {m} rows"), &y_by_rows_ref, &y_ref, 1e-5);
        assert_close(&format!("linear, {m} rows"), &y, &y_ref, 1e-5);
        assert_close(&format!("linear, weight laid out for decoding, {m} rows"), &y_by_rows, &y_ref, 1e-5);
        assert_close(&format!("tied head, {m} rows"), &logits, &logits_ref, 1e-5);
        let one = rayon::ThreadPoolBuilder::new().num_threads(1).build().unwrap().install(|| run(Kernels::Backend));
        let three = rayon::ThreadPoolBuilder::new().num_threads(3).build().unwrap().install(|| run(Kernels::Backend));
        assert_eq!(one, three, "{m} rows: 1 vs 3 threads");
    }
}

#[test]
fn tied_head_with_only_the_last_rows_trained_gives_their_gradient_and_zeros_above() {
    // 300 vocabulary rows of which the last 50 train; the other gradients and
    // the logits are the full product's.
    let (m, c, vocab, from) = (9, 24, 300, 250);
    let hidden = random([m, c], 50, 1.0);
    let wte = random([vocab, c], 51, 1.0);
    let weights = random([m, vocab], 52, 1.0).detach(); // a loss with a gradient everywhere
    let run = |trained_from: Option<usize>| {
        let logits = Pass::inference().with_wte_trained_from(trained_from).tied_head(hidden.clone(), wte.clone());
        let grads = (logits.clone() * weights.clone()).sum().backward();
        (values(logits.inner()), grad(&hidden, &grads), grad(&wte, &grads))
    };
    let (logits, d_hidden, d_wte) = run(Some(from));
    let (logits_ref, d_hidden_ref, d_wte_ref) = run(None);
    assert_eq!(logits, logits_ref, "the forward product is the same");
    assert_close("hidden gradient", &d_hidden, &d_hidden_ref, 1e-5);
    assert_close("trained rows' gradient", &d_wte[from * c..], &d_wte_ref[from * c..], 1e-5);
    assert!(d_wte[..from * c].iter().all(|&g| g == 0.0), "the pretrained rows' share is left out");
    assert!(d_wte_ref[..from * c].iter().any(|&g| g != 0.0), "the full product has one (the test can fail)");

    // `wte` frozen altogether: no gradient for it, the hidden one unchanged.
    let frozen = wte.clone().detach().set_require_grad(false);
    let logits = Pass::inference().with_wte_trained_from(Some(from)).tied_head(hidden.clone(), frozen.clone());
    let grads = (logits * weights.clone()).sum().backward();
    assert!(frozen.grad(&grads).is_none());
    assert_close("hidden gradient, wte frozen", &grad(&hidden, &grads), &d_hidden_ref, 1e-5);
}

#[test]
fn the_trained_rows_gradient_is_the_same_bits_on_one_thread_and_on_several() {
    // Large enough for the product to be split between threads.
    let (m, c, vocab, from) = (128, 128, 4000, 1000);
    let hidden = random([m, c], 60, 1.0);
    let wte = random([vocab, c], 61, 1.0);
    let weights = random([m, vocab], 62, 1.0).detach();
    let run = || {
        let logits = Pass::inference().with_wte_trained_from(Some(from)).tied_head(hidden.clone(), wte.clone());
        let grads = (logits * weights.clone()).sum().backward();
        (grad(&hidden, &grads), grad(&wte, &grads))
    };
    let one = rayon::ThreadPoolBuilder::new().num_threads(1).build().unwrap().install(run);
    let three = rayon::ThreadPoolBuilder::new().num_threads(3).build().unwrap().install(run);
    assert!(one == three, "1 vs 3 threads differ");
}

/// Products with bf16 weights under f32 activations: the streaming kernels
/// (up to `BF16_STREAMED_ROWS` rows) and the many-row route (the f32 general product of
/// the rounded values) give the exact sum of the rounded values within 1e-5 of
/// its terms' size; the composed ops (what a GPU runs, rounding the product to
/// bf16) within a bf16 step of it. Odd sizes; the output is f32.
#[test]
fn bf16_weight_products_are_the_exact_sums_of_the_rounded_values() {
    use burn::tensor::{DType, FloatDType};
    let low = |t: Tensor<Ad, 2>| t.inner().cast(FloatDType::BF16);
    let wide = |t: &Tensor<Cpu, 2>| t.clone().cast(FloatDType::BF16).cast(FloatDType::F32);
    for (m, k, n) in [(1, 64, 96), (3, 45, 7), (BF16_STREAMED_ROWS, 256, 1000), (BF16_STREAMED_ROWS + 3, 130, 33)] {
        let x = random([m, k], 1, 1.0).inner();
        let (w, wte) = (low(random([k, n], 2, 0.05)), low(random([n, k], 4, 0.05)));
        let b = random([1, n], 3, 0.1).inner().reshape([n]);
        let linear = |kernels| Pass::inference().with_kernels(kernels).linear(x.clone(), w.clone(), b.clone());
        let head = |kernels| Pass::inference().with_kernels(kernels).tied_head(x.clone(), wte.clone());
        let (ours, composed) = (linear(Kernels::Backend), linear(Kernels::Composed));
        let (our_head, composed_head) = (head(Kernels::Backend), head(Kernels::Composed));
        assert_eq!((ours.dtype(), our_head.dtype()), (DType::F32, DType::F32), "the outputs are f32");
        // The exact products of the rounded values (f64), and their terms' sizes.
        let (xr, wr, wter) = (
            values(wide(&x)),
            values(wide(&w.clone().cast(FloatDType::F32))),
            values(wte.clone().cast(FloatDType::F32)),
        );
        let bias = values(b.clone().reshape([1, n]));
        let sums = |i: usize, j: usize, head: bool| {
            (0..k).fold(
                (if head { 0.0 } else { bias[j] as f64 }, if head { 0.0 } else { bias[j].abs() as f64 }),
                |(s, a), r| {
                    let wv = if head { wter[j * k + r] } else { wr[r * n + j] };
                    let p = xr[i * k + r] as f64 * wv as f64;
                    (s + p, a + p.abs())
                },
            )
        };
        for (what, a, c, is_head) in [("linear", ours, composed, false), ("head", our_head, composed_head, true)] {
            let (a, c) = (values(a), values(c));
            for i in 0..m {
                for j in 0..n {
                    let (sum, size) = sums(i, j, is_head);
                    let (x, y) = (a[i * n + j] as f64, c[i * n + j] as f64);
                    assert!(
                        (x - sum).abs() <= 1e-5 * size + 1e-30,
                        "{what} [{m}, {k}] × [{n}] at ({i}, {j}): {x} vs {sum}"
                    );
                    assert!(
                        (y - sum).abs() <= size / 256.0 * 1.01 + 1e-30,
                        "{what} composed at ({i}, {j}): {y} vs {sum}"
                    );
                }
            }
        }
    }
}
