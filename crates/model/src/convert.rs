//! A model's weights converted between formats ([`Precision`]): the
//! `Conv1D` weights and `wte` cast to bf16 or quantised to Q8_0 (the
//! adapters merged first), and back.

use burn::module::{Module, ModuleMapper, Param};
use burn::prelude::*;
use burn::tensor::FloatDType;

use crate::gpt2::{Gpt2, quantized_conv, quantized_table};
use crate::names::Layer;
use crate::precision::Precision;
use crate::q8::Q8Matrix;

/// Casts every float parameter of a module to one dtype.
struct CastParams(FloatDType);

impl<B: Backend> ModuleMapper<B> for CastParams {
    fn map_float<const D: usize>(&mut self, param: Param<Tensor<B, D>>) -> Param<Tensor<B, D>> {
        let dtype = self.0;
        param.map(|t| t.cast(dtype))
    }
}

impl<B: Backend> Gpt2<B> {
    /// The model with its weights in `precision` (a no-op for the format it
    /// is already in). For inference: training keeps f32 weights. From
    /// int8 back to a float format the weights are the blocks' values.
    pub fn with_precision(self, precision: Precision) -> Self {
        match (self.precision(), precision) {
            (from, to) if from == to => self,
            (Precision::Int8, to) => self.dequantized().with_precision(to),
            (_, Precision::Int8) => self.with_precision(Precision::F32).quantized(),
            (_, Precision::Bf16) => self.with_precision(Precision::F32).in_bf16(),
            (_, Precision::F32) => self.map(&mut CastParams(FloatDType::F32)),
        }
    }

    /// The format the weights are in (that of `wte`).
    pub fn precision(&self) -> Precision {
        match (&self.wte.q8, self.wte.weight.dtype()) {
            (Some(_), _) => Precision::Int8,
            (None, burn::tensor::DType::BF16) => Precision::Bf16,
            _ => Precision::F32,
        }
    }

    /// The f32 model with its adapters merged and its `Conv1D` weights and
    /// `wte` in Q8_0, each weight replaced by an empty placeholder as it is
    /// quantised.
    fn quantized(self) -> Self {
        let mut model = crate::lora::merge(self);
        let device = model.wpe.weight.device();
        for block in &mut model.h {
            for layer in Layer::ALL {
                if let Some(conv) = block.conv_mut(layer) {
                    (conv.weight, conv.q8) = quantized_conv(&host(conv.weight.val()), conv.weight.dims(), &device);
                }
            }
        }
        let wte = &mut model.wte;
        (wte.weight, wte.q8) = quantized_table(&host(wte.weight.val()), wte.weight.dims(), &device);
        model
    }

    /// The f32 model with its adapters merged and its `Conv1D` weights and
    /// `wte` in bf16.
    fn in_bf16(self) -> Self {
        let mut model = crate::lora::merge(self);
        let bf16 = |p: Param<Tensor<B, 2>>| p.map(|t| t.cast(FloatDType::BF16));
        for block in &mut model.h {
            for layer in Layer::ALL {
                if let Some(conv) = block.conv_mut(layer) {
                    conv.weight = bf16(conv.weight.clone());
                }
            }
        }
        model.wte.weight = bf16(model.wte.weight.clone());
        model
    }

    /// The int8 model with f32 weights made from its blocks.
    fn dequantized(mut self) -> Self {
        let device = self.wpe.weight.device();
        let f32 = |q8: &Q8Matrix, shape: [usize; 2]| {
            Param::from_tensor(Tensor::from_data(TensorData::new(q8.dequantize(), shape), &device))
        };
        for block in &mut self.h {
            for layer in Layer::ALL {
                if let Some(conv) = block.conv_mut(layer)
                    && let Some(q8) = conv.q8.take()
                {
                    // The blocks are `[out, in]`; `Conv1D` stores `[in, out]`.
                    conv.weight = Param::from_tensor(f32(&q8, [q8.rows(), q8.cols()]).val().transpose());
                }
            }
        }
        if let Some(q8) = self.wte.q8.take() {
            self.wte.weight = f32(&q8, [q8.rows(), q8.cols()]);
        }
        self
    }
}

/// A tensor's values on the host, as f32.
fn host<const D: usize, B: Backend>(t: Tensor<B, D>) -> Vec<f32> {
    t.into_data().convert::<f32>().into_vec::<f32>().expect("converted to f32")
}
