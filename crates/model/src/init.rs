//! Weights made here rather than read: a GPT-2 from scratch (for the offline demo
//! and the tests), and new embedding rows for added tokens.

use burn::module::Param;
use burn::prelude::*;
use rand::SeedableRng;
use rand_distr::{Distribution, Normal};

use crate::config::Gpt2Config;
use crate::gpt2::{Gpt2, assemble};
use crate::names::{self, Entry, Kind};

/// How a from-scratch model is initialised: HF's `GPT2PreTrainedModel._init_weights`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ScratchInit {
    /// Seed; each tensor draws from its own stream derived from the seed and its
    /// name, so the values do not depend on construction order.
    pub seed: u64,
}

/// A stream of N(0, std²) values for the tensor `name`.
pub(crate) fn normal_values(seed: u64, name: &str, std: f64, n: usize) -> Vec<f32> {
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed ^ name_hash(name));
    let normal = Normal::new(0.0f64, std).expect("a finite, non-negative std");
    (0..n).map(|_| normal.sample(&mut rng) as f32).collect()
}

/// FNV-1a of a tensor's name, mixed with a seed for a stable per-tensor stream.
pub(crate) fn name_hash(name: &str) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in name.bytes() {
        hash = (hash ^ byte as u64).wrapping_mul(0x0100_0000_01b3);
    }
    hash
}

/// A GPT-2 of shape `config` with HF's initialisation: weights and embeddings
/// N(0, initializer_range²), residual projections `c_proj` N(0, (range/√(2·n_layer))²),
/// biases 0, LayerNorm weights 1.
pub fn init_from_scratch<B: Backend>(config: &Gpt2Config, init: ScratchInit, device: &B::Device) -> Gpt2<B> {
    init_from_scratch_in(config, init, crate::Precision::F32, device)
}

/// [`init_from_scratch`] with each weight stored in `precision` as it is
/// made (a large model is never whole in f32 on its way to int8).
pub fn init_from_scratch_in<B: Backend>(
    config: &Gpt2Config,
    init: ScratchInit,
    precision: crate::Precision,
    device: &B::Device,
) -> Gpt2<B> {
    let range = config.initializer_range;
    let proj_std = range / (2.0 * config.n_layer as f64).sqrt();
    let values = |entry: &Entry| match entry.kind {
        Kind::NormWeight => vec![1.0; entry.len()],
        Kind::Bias => vec![0.0; entry.len()],
        Kind::Embedding | Kind::Weight { residual: false } => normal_values(init.seed, &entry.name, range, entry.len()),
        Kind::Weight { residual: true } => normal_values(init.seed, &entry.name, proj_std, entry.len()),
    };
    assemble::<B>(config, values, precision, device)
}

/// How one new embedding row starts.
#[derive(Debug, Clone, PartialEq)]
pub enum RowInit {
    /// The row of `id` plus N(0, noise_std²) noise (the course's "smart" init).
    Reference {
        /// The reference token's id.
        id: u32,
        /// Standard deviation of the noise.
        noise_std: f64,
    },
    /// The mean of all pretrained rows (Hewitt, 2021; transformers' default when resizing).
    Mean,
    /// The mean of the given rows (the pieces the name used to be split into).
    SubwordMean(Vec<u32>),
    /// N(0, std²).
    Random {
        /// Standard deviation.
        std: f64,
    },
    /// Zeros: rows a caller fills afterwards (an adapter's trainable tokens).
    Zero,
}

/// `model` with `wte` resized to `rows` rows, as transformers'
/// `resize_token_embeddings(rows)`: the first rows kept, and each added row
/// `r` initialised as `init(r)` says (its noise seeded by `seed`), or the
/// last rows dropped. The one resize of `wte` in the workspace.
pub fn resize_wte<B: Backend>(mut model: Gpt2<B>, rows: usize, seed: u64, init: impl Fn(usize) -> RowInit) -> Gpt2<B> {
    let wte = model.wte.weight.val();
    let ([old_rows, n_embd], device) = (wte.dims(), wte.device());
    let old = wte.reshape([old_rows * n_embd]).into_data().convert::<f32>();
    let old = old.as_slice::<f32>().expect("converted to f32");
    let values = resized_embeddings(old, n_embd, rows, seed, init);
    model.wte.weight = Param::from_tensor(Tensor::from_data(TensorData::new(values, [rows, n_embd]), &device));
    model
}

/// A new `[new_rows, n_embd]` embedding: the first rows copied from `old`
/// (`[old_rows, n_embd]`, row-major), each further row `r` from `init(r)`.
/// Noise streams are seeded per row, so values do not depend on order.
pub fn resized_embeddings(
    old: &[f32],
    n_embd: usize,
    new_rows: usize,
    seed: u64,
    init: impl Fn(usize) -> RowInit,
) -> Vec<f32> {
    let old_rows = old.len() / n_embd;
    let row = |r: usize| &old[r * n_embd..(r + 1) * n_embd];
    let mean_of = |rows: &mut dyn Iterator<Item = usize>| -> Vec<f32> {
        let mut sum = vec![0f64; n_embd];
        let mut count = 0usize;
        for r in rows {
            for (s, v) in sum.iter_mut().zip(row(r)) {
                *s += *v as f64;
            }
            count += 1;
        }
        sum.into_iter().map(|s| (s / count.max(1) as f64) as f32).collect()
    };
    let mean: std::cell::OnceCell<Vec<f32>> = std::cell::OnceCell::new();
    let mut out = Vec::with_capacity(new_rows * n_embd);
    out.extend_from_slice(&old[..old_rows.min(new_rows) * n_embd]);
    for r in old_rows..new_rows {
        let values = match init(r) {
            RowInit::Reference { id, noise_std } => {
                let noise = normal_values(seed, &names::row_stream(r), noise_std, n_embd);
                row(id as usize).iter().zip(noise).map(|(v, n)| v + n).collect()
            }
            RowInit::Mean => mean.get_or_init(|| mean_of(&mut (0..old_rows))).clone(),
            RowInit::SubwordMean(pieces) => mean_of(&mut pieces.iter().map(|&p| p as usize).filter(|&p| p < old_rows)),
            RowInit::Random { std } => normal_values(seed, &names::row_stream(r), std, n_embd),
            RowInit::Zero => vec![0.0; n_embd],
        };
        out.extend(values);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn new_rows_by_hand() {
        // Three old rows of width 2.
        let old = [1.0, 2.0, 3.0, 4.0, 5.0, 9.0];
        let new = resized_embeddings(&old, 2, 7, 0, |r| match r {
            3 => RowInit::Reference { id: 1, noise_std: 0.0 },
            4 => RowInit::Mean,
            5 => RowInit::SubwordMean(vec![0, 2]),
            _ => RowInit::Random { std: 0.0 },
        });
        assert_eq!(&new[..6], &old, "old rows are kept bit for bit");
        assert_eq!(&new[6..8], &[3.0, 4.0], "reference: a copy of row 1");
        assert_eq!(&new[8..10], &[3.0, 5.0], "mean of all old rows");
        assert_eq!(&new[10..12], &[3.0, 5.5], "mean of rows 0 and 2");
        assert_eq!(&new[12..14], &[0.0, 0.0]);
    }

    #[test]
    fn reference_noise_has_the_asked_spread_and_is_seeded() {
        let old = vec![0.0f32; 4 * 64];
        let rows =
            |seed| resized_embeddings(&old, 64, 4 + 200, seed, |_| RowInit::Reference { id: 0, noise_std: 0.01 });
        let a = rows(42);
        assert_eq!(a, rows(42));
        assert_ne!(a, rows(43));
        let noise = &a[4 * 64..];
        let std = (noise.iter().map(|v| (*v as f64).powi(2)).sum::<f64>() / noise.len() as f64).sqrt();
        assert!((std - 0.01).abs() < 0.0005, "std {std}");
    }

    #[test]
    fn reference_rows_add_their_noise_and_pieces_outside_the_vocabulary_are_ignored() {
        let old = [1.0, 2.0, 3.0, 4.0, 5.0, 9.0];
        let new = resized_embeddings(&old, 2, 5, 7, |r| match r {
            3 => RowInit::Reference { id: 1, noise_std: 0.5 },
            _ => RowInit::SubwordMean(vec![0, 3, 99]),
        });
        let noise = normal_values(7, &names::row_stream(3), 0.5, 2);
        assert_eq!(&new[6..8], &[3.0 + noise[0], 4.0 + noise[1]], "row 1 plus its noise");
        assert_eq!(&new[8..10], &[1.0, 2.0], "ids 3 and 99 are not rows of the old embedding");
    }

    /// HF's `_init_weights` on a from-scratch model: matrices and embeddings
    /// N(0, 0.02²), the residual projections N(0, (0.02/√(2·n_layer))²), biases
    /// 0, LayerNorm weights 1; every tensor its own stream, the seed changing all.
    #[test]
    fn from_scratch_follows_hf_init() {
        let json =
            r#"{"model_type": "gpt2", "vocab_size": 512, "n_positions": 64, "n_embd": 64, "n_layer": 8, "n_head": 4}"#;
        let config = crate::HfConfig::from_json_str(json, "test").unwrap().resolve().unwrap();
        let device = Default::default();
        let model = init_from_scratch::<crate::backend::Cpu>(&config, ScratchInit { seed: 1 }, &device);
        let other = init_from_scratch::<crate::backend::Cpu>(&config, ScratchInit { seed: 2 }, &device);
        type P = crate::NamedParams<crate::backend::Cpu>;
        let named = |m: &Gpt2<crate::backend::Cpu>| -> Vec<(String, Vec<f32>)> {
            P::of(m).params.into_iter().map(|(name, _, t)| (name, P::values(&t))).collect()
        };
        let (tensors, others) = (named(&model), named(&other));
        let std = |v: &[f32]| (v.iter().map(|x| (*x as f64).powi(2)).sum::<f64>() / v.len() as f64).sqrt();
        let mut seen: Vec<&Vec<f32>> = Vec::new();
        for ((name, values), (_, second)) in tensors.iter().zip(&others) {
            if name.ends_with("bias") {
                assert!(values.iter().all(|&v| v == 0.0), "{name}");
            } else if name.contains("ln_") {
                assert!(values.iter().all(|&v| v == 1.0), "{name}");
            } else {
                use names::{Layer, Part};
                let residual = (0..8).any(|i| {
                    [Layer::AttnCProj, Layer::MlpCProj].into_iter().any(|l| *name == names::param(i, l, Part::Weight))
                });
                let expected = if residual { 0.02 / 4.0 } else { 0.02 };
                // ≥ 4,096 draws: the sample std is within 5 % of the true one.
                assert!((std(values) / expected - 1.0).abs() < 0.05, "{name}: std {} vs {expected}", std(values));
                assert!(seen.iter().all(|s| s[..64] != values[..64]), "{name} draws its own stream");
                assert_ne!(values, second, "{name}: another seed, other values");
                seen.push(values);
            }
        }
    }

    #[test]
    fn shrinking_keeps_the_first_rows() {
        let old = [1.0, 2.0, 3.0, 4.0];
        assert_eq!(resized_embeddings(&old, 2, 1, 0, |_| RowInit::Mean), [1.0, 2.0]);
    }
}
