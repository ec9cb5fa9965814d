//! Adapters folded into their weights (peft's `merge_and_unload`), and the
//! values a checkpoint holds of what trains under LoRA.

use burn::module::Param;
use burn::prelude::*;

use super::config::trains_under_lora;
use crate::gpt2::{Gpt2, Lora};
use crate::names::{self, Factor, Layer};
use crate::weights::{NamedParams, NamedTensors};

/// `model` with every adapter folded into its layer's weight (peft's
/// `merge_and_unload`): `W + Aᵀ Bᵀ · s`, and no adapters left.
pub fn merge<B: Backend>(mut model: Gpt2<B>) -> Gpt2<B> {
    for block in &mut model.h {
        for layer in Layer::ALL {
            if let Some(conv) = block.conv_mut(layer)
                && let Some(lora) = conv.lora.take()
            {
                conv.weight = Param::from_tensor((conv.weight.val() + lora.delta()).detach());
            }
        }
    }
    model
}

/// `model` without its adapters, its weights left as they are (peft's
/// `unload`): the base an adapter goes on.
pub fn unload<B: Backend>(mut model: Gpt2<B>) -> Gpt2<B> {
    for block in &mut model.h {
        for layer in Layer::ALL {
            if let Some(conv) = block.conv_mut(layer) {
                conv.lora = None;
            }
        }
    }
    model
}

impl<B: Backend> Gpt2<B> {
    /// The adapters' parameters: `(name, shape, values)`, our names (`h.0.attn.c_attn.lora.a`).
    pub fn lora_params(&self) -> Vec<(String, Vec<usize>, Tensor<B, 1>)> {
        NamedParams::of(self).params.into_iter().filter(|(name, _, _)| names::is_lora(name)).collect()
    }

    /// The parameters that may change under LoRA ([`trains_under_lora`]), as [`Self::lora_params`].
    pub fn params_trained_under_lora(&self) -> Vec<(String, Vec<usize>, Tensor<B, 1>)> {
        NamedParams::of(self).params.into_iter().filter(|(name, _, _)| trains_under_lora(name)).collect()
    }
}

/// `model` with the adapters of `like` (their places, scaling and dropout),
/// their values taken from `tensors` by our names (`h.0.attn.c_attn.lora.a`),
/// as a checkpoint holds them. Err: the name of a missing or misshapen tensor.
pub fn with_adapter_values<B: Backend>(
    mut model: Gpt2<B>,
    like: &Gpt2<B>,
    tensors: &NamedTensors,
    device: &B::Device,
) -> Result<Gpt2<B>, String> {
    for i in 0..model.h.len().min(like.h.len()) {
        for layer in Layer::ALL {
            let Some(lora) = like.h[i].conv(layer).and_then(|conv| conv.lora.as_ref()) else { continue };
            let value = |factor, dims| tensor_named(tensors, &names::lora(i, layer, factor), dims, device);
            let (a, b) = (value(Factor::A, lora.a.dims())?, value(Factor::B, lora.b.dims())?);
            let conv = model.h[i].conv_mut(layer).expect("the same layers as `like`");
            conv.lora = Some(Lora {
                a: Param::from_tensor(a),
                b: Param::from_tensor(b),
                scaling: lora.scaling,
                dropout: lora.dropout,
            });
        }
    }
    Ok(model)
}

/// `like` with the values of what trains under LoRA taken from `tensors`
/// ([`Gpt2::params_trained_under_lora`], as a checkpoint holds them): its
/// adapters and `wte`; the frozen rest stays `like`'s own. Err: the name of a
/// missing or misshapen tensor.
pub fn with_trained_values<B: Backend>(
    like: &Gpt2<B>,
    tensors: &NamedTensors,
    device: &B::Device,
) -> Result<Gpt2<B>, String> {
    let mut model = with_adapter_values(like.clone(), like, tensors, device)?;
    model.wte.weight = Param::from_tensor(tensor_named(tensors, names::WTE, like.wte.weight.dims(), device)?);
    Ok(model)
}

/// The tensor `name` of `tensors`, of shape `dims`. Err: `name` missing or misshapen.
fn tensor_named<B: Backend>(
    tensors: &NamedTensors,
    name: &str,
    dims: [usize; 2],
    device: &B::Device,
) -> Result<Tensor<B, 2>, String> {
    match tensors.get(name) {
        Some((shape, values)) if *shape == dims => Ok(Tensor::from_data(TensorData::new(values.clone(), dims), device)),
        Some((shape, _)) => Err(format!("`{name}` is {shape:?}, not {dims:?}")),
        None => Err(format!("no tensor `{name}`")),
    }
}
