//! The course model's width, end to end against transformers: a GPT-2 with
//! `n_embd` 1792 and 14 heads of 128 — `asi/gpt-fr-cased-base`'s — but 2
//! blocks and a 64-token vocabulary, written as the hub ships it
//! (`pytorch_model.bin` through torch's zip pickle) by
//! `fixtures/make_midsize.py` into a temporary directory (≈310 MB, never
//! committed). Loaded from that file, on the backend's kernels and on the
//! composed ops: the logits, the logits behind a padding mask, greedy decoding
//! through the KV cache, and the next-token loss with the gradients of
//! parameters at both ends of the model, all against transformers' own.
//!
//! Tolerances, relative to the largest magnitude of what is compared (at
//! least 1): logits and loss 1e-5, gradients 2e-5. Each entry is a sum over
//! 1792 (or 7168) products; two f32 orders of summation differ by a few ulps
//! of the largest term. Measured when written: at most 3.2e-6 on both routes
//! (logits 2.8e-6 fused, 3.1e-6 composed; gradients 1e-7 to 3.2e-6, the
//! largest at `wte`, which sums over every position and the tied head).
//! Attention is peaked (largest probability 0.66 per query on average) and
//! the loss is 13.2, so a wrong scale, epsilon or mask moves these numbers
//! by orders of magnitude more.

use std::path::Path;
use std::process::Command;

use burn::backend::autodiff::grads::Gradients;
use burn::prelude::*;
use burn::tensor::activation::log_softmax;
use safetensors::SafeTensors;
use tp06_model::backend::{Cpu, CpuAutodiff};
use tp06_model::{Gpt2, Gpt2Config, HfConfig, Kernels, KvCache, Layout, Pass};

const LOGITS: f32 = 1e-5;
const GRADS: f32 = 2e-5;

struct Golden {
    bytes: Vec<u8>,
}

impl Golden {
    fn st(&self) -> SafeTensors<'_> {
        SafeTensors::deserialize(&self.bytes).unwrap()
    }
    fn f32s(&self, name: &str) -> Vec<f32> {
        let st = self.st();
        let t = st.tensor(name).unwrap_or_else(|e| panic!("golden `{name}`: {e}"));
        t.data().chunks_exact(4).map(|b| f32::from_le_bytes(b.try_into().unwrap())).collect()
    }
    fn i64s(&self, name: &str) -> (Vec<i64>, Vec<usize>) {
        let st = self.st();
        let t = st.tensor(name).unwrap();
        (t.data().chunks_exact(8).map(|b| i64::from_le_bytes(b.try_into().unwrap())).collect(), t.shape().to_vec())
    }
}

fn values<B: Backend, const D: usize>(t: Tensor<B, D>) -> Vec<f32> {
    t.into_data().convert::<f32>().into_vec().unwrap()
}

fn ids<B: Backend>((values, shape): &(Vec<i64>, Vec<usize>)) -> Tensor<B, 2, Int> {
    Tensor::from_data(TensorData::new(values.clone(), [shape[0], shape[1]]), &Default::default())
}

/// Max |a − b| over max(|b|, 1): the difference relative to the reference's scale.
fn relative_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    let scale = b.iter().fold(1.0f32, |m, v| m.max(v.abs()));
    a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0.0, f32::max) / scale
}

/// HF's causal-LM loss with `labels = input_ids`: the mean over every row's
/// positions but the last of −log p(next token), composed from Burn ops.
fn next_token_loss<B: Backend>(logits: Tensor<B, 3>, input: &Tensor<B, 2, Int>) -> Tensor<B, 1> {
    let [b, t, v] = logits.dims();
    let logp = log_softmax(logits.slice([0..b, 0..t - 1, 0..v]), 2);
    let next = input.clone().slice([0..b, 1..t]).reshape([b, t - 1, 1]);
    logp.gather(2, next).mean().neg().reshape([1])
}

fn grads_by_name(model: &Gpt2<CpuAutodiff>, grads: &Gradients) -> Vec<(&'static str, Vec<f32>)> {
    let g = |t: Tensor<CpuAutodiff, 2>| values(t.grad(grads).expect("a gradient"));
    let g1 = |t: Tensor<CpuAutodiff, 1>| values(t.grad(grads).expect("a gradient"));
    vec![
        ("transformer.wte.weight", g(model.wte.weight.val())),
        ("transformer.wpe.weight", g(model.wpe.weight.val())),
        ("transformer.h.0.attn.c_attn.weight", g(model.h[0].attn.c_attn.weight.val())),
        ("transformer.h.0.ln_1.weight", g1(model.h[0].ln_1.weight.val())),
        ("transformer.h.1.attn.c_proj.weight", g(model.h[1].attn.c_proj.weight.val())),
        ("transformer.h.1.mlp.c_fc.weight", g(model.h[1].mlp.c_fc.weight.val())),
        ("transformer.h.1.mlp.c_proj.bias", g1(model.h[1].mlp.c_proj.bias.val())),
        ("transformer.ln_f.bias", g1(model.ln_f.bias.val())),
    ]
}

fn load<B: Backend>(dir: &Path, config: &Gpt2Config) -> Gpt2<B> {
    let (model, report) =
        tp06_model::load::<B>(&dir.join(tp06_model::PYTORCH_BIN), config, &Default::default()).unwrap();
    assert!(report.unexpected.is_empty(), "{:?}", report.unexpected);
    assert_eq!(report.applied, 2 + 12 * config.n_layer + 2, "wte, wpe, 12 per block, ln_f");
    model
}

#[test]
fn the_course_models_head_size_equals_transformers_forward_decoding_and_gradients() {
    let Some(python) = tp06_testkit::python_with(&["torch", "transformers", "safetensors"], "the mid-size check")
    else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fixtures/make_midsize.py");
    let out = Command::new(python).arg(&script).arg(dir.path()).output().unwrap();
    assert!(out.status.success(), "make_midsize.py: {}", String::from_utf8_lossy(&out.stderr));
    let golden = Golden { bytes: std::fs::read(dir.path().join("golden.safetensors")).unwrap() };
    let config = HfConfig::from_file(&dir.path().join("config.json")).unwrap().resolve().unwrap();
    assert_eq!((config.n_embd, config.n_head, config.n_embd / config.n_head), (1792, 14, 128), "the course's width");

    // Inference: logits, padded logits, greedy decoding.
    let model = load::<Cpu>(dir.path(), &config);
    let input = golden.i64s("input_ids");
    let expected = golden.f32s("logits");
    for kernels in [Kernels::Backend, Kernels::Composed] {
        let logits = values(model.forward(ids(&input), &mut Pass::inference().with_kernels(kernels)));
        let diff = relative_diff(&logits, &expected);
        assert!(diff <= LOGITS, "{kernels:?}: logits differ by {diff} of their scale");

        let padded = golden.i64s("padded_ids");
        let mask = golden.i64s("padded_mask").0;
        let shape = [padded.1[0], padded.1[1]];
        let pad = mask.iter().map(|&m| m == 0).collect::<Vec<_>>();
        let pad = Tensor::<Cpu, 2, Bool>::from_data(TensorData::new(pad, shape), &Default::default());
        let mut pass = Pass::inference().with_kernels(kernels);
        let hidden = model.hidden(ids(&padded), &Layout::padded(Some(pad)), None, &mut pass);
        let logits = values(model.head(hidden, &pass));
        let vocab = config.vocab_size;
        let real = |l: &[f32]| -> Vec<f32> {
            mask.iter()
                .enumerate()
                .filter(|(_, m)| **m == 1)
                .flat_map(|(i, _)| l[i * vocab..(i + 1) * vocab].to_vec())
                .collect()
        };
        let diff = relative_diff(&real(&logits), &real(&golden.f32s("padded_logits")));
        assert!(diff <= LOGITS, "{kernels:?}: padded logits differ by {diff} of their scale");
    }
    let (prompt, greedy) = (golden.i64s("prompt"), golden.i64s("greedy").0);
    let mut cache = KvCache::new(model.h.len());
    let mut sequence = prompt.0.clone();
    let mut step = ids::<Cpu>(&prompt);
    while sequence.len() < greedy.len() {
        let logits = model.forward_cached(step, &mut cache, &mut Pass::inference());
        let [_, t, v] = logits.dims();
        let last = values(logits.slice([0..1, t - 1..t, 0..v]));
        let next = (0..v).max_by(|&a, &b| last[a].total_cmp(&last[b])).unwrap() as i64;
        sequence.push(next);
        step = ids::<Cpu>(&(vec![next], vec![1, 1]));
    }
    assert_eq!(sequence, greedy, "greedy decoding through the cache");

    // Training: the loss and its gradients.
    let model = load::<CpuAutodiff>(dir.path(), &config);
    let expected_loss = golden.f32s("loss");
    for kernels in [Kernels::Backend, Kernels::Composed] {
        let input = ids::<CpuAutodiff>(&input);
        let logits = model.forward(input.clone(), &mut Pass::inference().with_kernels(kernels));
        let loss = next_token_loss(logits, &input);
        let grads = loss.backward();
        let diff = relative_diff(&values(loss.inner()), &expected_loss);
        assert!(diff <= LOGITS, "{kernels:?}: loss differs by {diff} ({expected_loss:?})");
        for (name, ours) in grads_by_name(&model, &grads) {
            let diff = relative_diff(&ours, &golden.f32s(&format!("grad.{name}")));
            assert!(diff <= GRADS, "{kernels:?}: ∂loss/∂{name} differs by {diff} of its scale");
        }
    }
}
