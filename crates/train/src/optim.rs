//! The course's optimisation, as HF `Trainer` runs it: AdamW exactly as
//! `torch.optim.AdamW`, weight decay except on biases and LayerNorm weights,
//! linear warm-up then linear decay to 0, and clipping of the global norm.
//!
//! Parameters, gradients and moments are handled flattened, by HF name.

use burn::prelude::*;
use tp06_model::{AdamWStep, Gpt2Ops};

/// AdamW hyper-parameters.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AdamW {
    /// β₁.
    pub beta1: f64,
    /// β₂.
    pub beta2: f64,
    /// ε.
    pub epsilon: f64,
    /// Decoupled weight decay (for the parameters that decay).
    pub weight_decay: f64,
}

/// One parameter's moments.
#[derive(Debug, Clone)]
pub struct Moments<B: Backend> {
    /// First moment.
    pub m: Tensor<B, 1>,
    /// Second moment.
    pub v: Tensor<B, 1>,
}

/// Whether HF's Trainer decays `name`: everything but biases and LayerNorm
/// weights (`get_decay_parameter_names`).
pub fn decays(name: &str) -> bool {
    let module = name.rsplit_once('.').map_or("", |(m, _)| m);
    let is_norm = module.rsplit('.').next().is_some_and(|last| last.starts_with("ln_"));
    !(name.contains("bias") || is_norm)
}

impl AdamW {
    /// One `torch.optim.AdamW` step (single-tensor form) at step `t` (1-based),
    /// of the gradient times `grad_scale` (the clipping coefficient):
    /// `p ← p·(1 − lr·wd)`, `m ← lerp(m, g, 1 − β₁)`, `v ← β₂·v + (1 − β₂)·g²`,
    /// `p ← p − lr/(1 − β₁ᵗ) · m / (√v / √(1 − β₂ᵗ) + ε)`. The moments are
    /// taken and given back: the backend may update them in place
    /// ([`Gpt2Ops::adamw`]).
    #[allow(clippy::too_many_arguments)]
    pub fn step<B: Gpt2Ops>(
        &self,
        param: Tensor<B, 1>,
        grad: Tensor<B, 1>,
        grad_scale: f64,
        moments: Moments<B>,
        t: u64,
        lr: f64,
        decay: bool,
    ) -> (Tensor<B, 1>, Moments<B>) {
        let weight_decay = if decay { self.weight_decay } else { 0.0 };
        let (beta1, beta2, epsilon) = (self.beta1, self.beta2, self.epsilon);
        let step = AdamWStep { lr, beta1, beta2, epsilon, weight_decay, t, grad_scale };
        let [param, m, v] = B::adamw(param, grad, moments.m, moments.v, &step);
        (param, Moments { m, v })
    }
}

/// `get_linear_schedule_with_warmup`: the learning rate of optimiser step `step`
/// (0-based; the first step of a warm-up runs at 0, as in HF).
pub fn linear_schedule(peak: f64, step: u64, warmup: u64, total: u64) -> f64 {
    let factor = if step < warmup {
        step as f64 / warmup.max(1) as f64
    } else {
        ((total.saturating_sub(step)) as f64 / (total.saturating_sub(warmup)).max(1) as f64).max(0.0)
    };
    peak * factor
}

/// The global L2 norm of `grads` (`clip_grad_norm_`'s total norm).
pub fn global_norm<B: Backend>(grads: &[Tensor<B, 1>]) -> f64 {
    if grads.is_empty() {
        return 0.0;
    }
    let squares: Vec<Tensor<B, 1>> = grads.iter().map(|g| g.clone().square().sum()).collect();
    let total: f32 = Tensor::cat(squares, 0).sum().into_scalar().elem();
    (total as f64).sqrt()
}

/// `clip_grad_norm_`'s coefficient: `min(1, max_norm / (norm + 1e-6))`.
pub fn clip_coefficient(norm: f64, max_norm: f64) -> f64 {
    (max_norm / (norm + 1e-6)).min(1.0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::backend::Flex;

    #[test]
    fn decay_groups_follow_hf() {
        use tp06_model::names::{self, Layer, Part, param};
        let decaying = [
            names::WTE.into(),
            names::WPE.into(),
            param(0, Layer::CAttn, Part::Weight),
            param(3, Layer::MlpCProj, Part::Weight),
        ];
        for name in decaying {
            assert!(decays(&name), "{name}");
        }
        let not = [
            param(0, Layer::Ln1, Part::Weight),
            param(0, Layer::Ln2, Part::Bias),
            names::LN_F_WEIGHT.into(),
            names::LN_F_BIAS.into(),
            param(1, Layer::CAttn, Part::Bias),
        ];
        for name in not {
            assert!(!decays(&name), "{name}");
        }
    }

    #[test]
    fn schedule_warms_up_then_decays_to_zero() {
        assert_eq!(linear_schedule(5e-5, 0, 100, 750), 0.0);
        assert!((linear_schedule(5e-5, 50, 100, 750) - 2.5e-5).abs() < 1e-18);
        assert_eq!(linear_schedule(5e-5, 100, 100, 750), 5e-5);
        assert!((linear_schedule(5e-5, 425, 100, 750) - 2.5e-5).abs() < 1e-18);
        assert_eq!(linear_schedule(5e-5, 750, 100, 750), 0.0);
        assert_eq!(linear_schedule(1.0, 3, 0, 4), 0.25, "no warm-up");
        assert_eq!(linear_schedule(1.0, 0, 0, 4), 1.0, "no warm-up: the first step runs at the peak, as in HF");
    }

    #[test]
    fn adamw_first_steps_by_hand() {
        // p = 1, g = 0.5, lr = 0.1, wd = 0.01, β = (0.9, 0.999), ε = 1e-8.
        let opt = AdamW { beta1: 0.9, beta2: 0.999, epsilon: 1e-8, weight_decay: 0.01 };
        let dev = Default::default();
        let t = |v: f32| Tensor::<Flex, 1>::from_floats([v], &dev);
        let moments = Moments { m: t(0.0), v: t(0.0) };
        let (p1, moments) = opt.step(t(1.0), t(0.5), 1.0, moments, 1, 0.1, true);
        // Step 1: p·(1 − 0.001) = 0.999; m = 0.05, v = 0.00025; m̂ = 0.5, v̂ = 0.25;
        // update = 0.1 · 0.5 / (0.5 + 1e-8) ≈ 0.1.
        let expected1 = 0.999 - 0.1 * 0.5 / (0.5 + 1e-8);
        let got1: f32 = p1.clone().into_scalar().elem();
        assert!((got1 as f64 - expected1).abs() < 1e-6, "{got1} vs {expected1}");
        // Step 2 with g = -0.25: m = 0.9·0.05 − 0.025 = 0.02, v = 0.999·0.00025 + 0.001·0.0625.
        // (Clipped: −0.5 times a scale of ½.)
        let (p2, _) = opt.step(p1, t(-0.5), 0.5, moments, 2, 0.1, true);
        let (m, v): (f64, f64) = (0.02, 0.999 * 0.00025 + 0.001 * 0.0625);
        let expected2 = expected1 * 0.999 - 0.1 / (1.0 - 0.81) * m / ((v / (1.0 - 0.998001)).sqrt() + 1e-8);
        let got2: f32 = p2.into_scalar().elem();
        assert!((got2 as f64 - expected2).abs() < 1e-6, "{got2} vs {expected2}");
    }

    #[test]
    fn global_norm_and_clipping() {
        let dev = Default::default();
        let grads = [Tensor::<Flex, 1>::from_floats([3.0, 0.0], &dev), Tensor::<Flex, 1>::from_floats([4.0], &dev)];
        assert!((global_norm(&grads) - 5.0).abs() < 1e-6);
        assert!((clip_coefficient(5.0, 1.0) - 1.0 / (5.0 + 1e-6)).abs() < 1e-12);
        assert_eq!(clip_coefficient(0.5, 1.0), 1.0);
    }
}
