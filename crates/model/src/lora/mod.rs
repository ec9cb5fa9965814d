//! LoRA adapters on GPT-2's `Conv1D` layers, exactly as Hugging Face peft
//! makes, trains, saves, loads and merges them.
//!
//! A layer with an adapter computes `y = x W + b + (dropout(x) Aᵀ) Bᵀ · s`
//! with `A [r, in]`, `B [out, r]` and `s = α / r` (`α / √r` with rsLoRA);
//! `A` starts as peft's `kaiming_uniform_(a = √5)`, which is U(±1/√in), and
//! `B` as 0, so a fresh adapter changes nothing. The base weights are frozen
//! under LoRA; the adapters, and the added names' rows of `wte` when the
//! freeze plan trains them, are what train.
//!
//! One file per concern: [`config`] (`[model.lora]`), this file (a fresh
//! adapter), [`peft`] (the peft adapter directory, written and read) and
//! [`merge`] (adapters folded into the weights, and the values a checkpoint
//! holds). The adapter itself, [`Lora`], is a field of
//! [`Conv1D`](crate::Conv1D) in the model file.
//!
//! On disk an adapter is a peft adapter directory: `adapter_config.json`
//! (peft's `LoraConfig`) and `adapter_model.safetensors`, whose keys are
//! peft's (`base_model.model.transformer.h.0.attn.c_attn.lora_A.weight`);
//! the added rows of `wte` are saved as peft's trainable tokens
//! (`trainable_token_indices`), so `PeftModel.from_pretrained` loads them into
//! a base resized to the tokenizer. The same reader loads the adapters peft
//! writes.

mod config;
mod merge;
mod peft;

use burn::module::Param;
use burn::prelude::*;
use rand::SeedableRng;
use rand_distr::{Distribution, Uniform};

pub use self::config::{Blocks, LoraConfig, Target, trains_under_lora};
pub use self::merge::{merge, unload, with_adapter_values, with_trained_values};
pub use self::peft::{
    ADAPTER_CONFIG, ADAPTER_WEIGHTS, AdapterInfo, load_adapter, peft_key, read_adapter_info, write_adapter,
    write_adapter_like,
};
use crate::gpt2::Gpt2;
pub use crate::gpt2::Lora;
use crate::kernels::Dropout;
pub use crate::names::is_lora;
use crate::names::{self, Factor};

/// `model` with fresh adapters as `config` places them: A as peft draws it
/// (U(±1/√in), seeded per layer by `seed` and its name), B = 0.
pub fn attach<B: Backend>(mut model: Gpt2<B>, config: &LoraConfig, seed: u64, device: &B::Device) -> Gpt2<B> {
    let n_layer = model.h.len();
    for i in config.blocks.resolve(n_layer) {
        for &target in &config.targets {
            let layer = model.h[i].conv_mut(target.layer()).expect("a target is a Conv1D");
            let [inputs, outputs] = layer.weight.dims();
            let name = names::lora(i, target.layer(), Factor::A);
            let a = uniform_values(seed, &name, 1.0 / (inputs as f64).sqrt(), config.r * inputs);
            layer.lora = Some(Lora {
                a: Param::from_tensor(Tensor::from_data(TensorData::new(a, [config.r, inputs]), device)),
                b: Param::from_tensor(Tensor::zeros([outputs, config.r], device)),
                scaling: config.scaling(),
                dropout: Dropout { p: config.dropout },
            });
        }
    }
    model
}

/// A stream of U(−bound, bound) values for the tensor `name`.
fn uniform_values(seed: u64, name: &str, bound: f64, n: usize) -> Vec<f32> {
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed ^ crate::init::name_hash(name));
    let uniform = Uniform::new_inclusive(-bound, bound).expect("a finite bound");
    (0..n).map(|_| uniform.sample(&mut rng) as f32).collect()
}
