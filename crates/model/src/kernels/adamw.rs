//! One AdamW step over a flattened parameter in a single parallel pass: the
//! clipped gradient, both moments and the parameter, elementwise, written in
//! place where nothing else holds the storage. The composed form reads and
//! writes every tensor once per operation — eleven passes and as many fresh
//! buffers per parameter per step, which on a 1 B model is gigabytes of
//! page-faulted memory each step.
//!
//! Each element goes through the composed form's f32 operations in the same
//! order (each scalar rounded to f32 first, as Burn's scalar operations do),
//! so both give the same bits.

use burn::backend::flex::Flex;
use burn::prelude::*;
use burn::tensor::TensorMetadata;
use rayon::prelude::*;

use super::host::{host, into_values, is_f32, new_tensor, tensor, values};

/// The scalars of one AdamW step for one parameter (`torch.optim.AdamW`,
/// single-tensor form, at 1-based step `t`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AdamWStep {
    /// The learning rate.
    pub lr: f64,
    /// β₁.
    pub beta1: f64,
    /// β₂.
    pub beta2: f64,
    /// ε.
    pub epsilon: f64,
    /// The decoupled weight decay of this parameter (0: it does not decay).
    pub weight_decay: f64,
    /// The 1-based step, for the bias corrections.
    pub t: u64,
    /// What the gradient is multiplied by first (the clipping coefficient;
    /// 1: not clipped, and no product).
    pub grad_scale: f64,
}

impl AdamWStep {
    fn bias1(&self) -> f64 {
        1.0 - self.beta1.powi(self.t as i32)
    }

    fn bias2_sqrt(&self) -> f64 {
        (1.0 - self.beta2.powi(self.t as i32)).sqrt()
    }

    fn decays(&self) -> bool {
        self.weight_decay != 0.0
    }

    fn scaled(&self) -> bool {
        self.grad_scale < 1.0
    }
}

/// The step composed of Burn ops: `g ← g·scale`, `p ← p·(1 − lr·wd)`,
/// `m ← m + (g − m)(1 − β₁)`, `v ← β₂v + (1 − β₂)g²`,
/// `p ← p − lr/(1 − β₁ᵗ) · m / (√v / √(1 − β₂ᵗ) + ε)`. Returns `[p, m, v]`.
pub fn composed<B: Backend>(
    param: Tensor<B, 1>,
    grad: Tensor<B, 1>,
    m: Tensor<B, 1>,
    v: Tensor<B, 1>,
    s: &AdamWStep,
) -> [Tensor<B, 1>; 3] {
    let grad = if s.scaled() { grad * s.grad_scale } else { grad };
    let param = if s.decays() { param * (1.0 - s.lr * s.weight_decay) } else { param };
    let m = m.clone() + (grad.clone() - m) * (1.0 - s.beta1);
    let v = v * s.beta2 + grad.clone() * grad * (1.0 - s.beta2);
    let denom = v.clone().sqrt() / s.bias2_sqrt() + s.epsilon;
    let param = param - m.clone() / denom * (s.lr / s.bias1());
    [param, m, v]
}

const ELEMENTS_PER_TASK: usize = 1 << 16;

/// The step's scalars, each rounded to f32 as Burn's scalar operations round them.
#[derive(Clone, Copy)]
struct Scalars {
    scale: f32,
    keep: f32,
    one_minus_beta1: f32,
    beta2: f32,
    one_minus_beta2: f32,
    bias2_sqrt: f32,
    epsilon: f32,
    step: f32,
}

/// [`super::Gpt2Ops::adamw`] on Flex: one parallel pass, in place. The
/// parameter is written in place when nothing else holds it, else into a
/// parallel copy (the model being trained still holds its old value).
pub(super) fn flex(
    param: Tensor<Flex, 1>,
    grad: Tensor<Flex, 1>,
    m: Tensor<Flex, 1>,
    v: Tensor<Flex, 1>,
    s: &AdamWStep,
) -> [Tensor<Flex, 1>; 3] {
    if ![&param, &grad, &m, &v].iter().all(|t| is_f32(*t)) {
        return composed(param, grad, m, v, s);
    }
    let param = host(param);
    let shape = param.shape();
    let mut p = match param.is_unique() {
        true => into_values(param).0,
        false => values(&param).par_iter().copied().collect(),
    };
    let (mut m, _) = into_values(host(m));
    let (mut v, _) = into_values(host(v));
    let grad = host(grad);
    let g = values(&grad);
    assert!(
        p.len() == g.len() && m.len() == g.len() && v.len() == g.len(),
        "AdamW: parameter, gradient, moments differ"
    );
    let c = Scalars {
        scale: s.grad_scale as f32,
        keep: (1.0 - s.lr * s.weight_decay) as f32,
        one_minus_beta1: (1.0 - s.beta1) as f32,
        beta2: s.beta2 as f32,
        one_minus_beta2: (1.0 - s.beta2) as f32,
        bias2_sqrt: s.bias2_sqrt() as f32,
        epsilon: s.epsilon as f32,
        step: (s.lr / s.bias1()) as f32,
    };
    let chunk = match (s.scaled(), s.decays()) {
        (true, true) => update::<true, true>,
        (true, false) => update::<true, false>,
        (false, true) => update::<false, true>,
        (false, false) => update::<false, false>,
    };
    p.par_chunks_mut(ELEMENTS_PER_TASK)
        .zip(m.par_chunks_mut(ELEMENTS_PER_TASK))
        .zip(v.par_chunks_mut(ELEMENTS_PER_TASK))
        .zip(g.par_chunks(ELEMENTS_PER_TASK))
        .for_each(|(((p, m), v), g)| chunk(p, m, v, g, c));
    [tensor(new_tensor(p, shape.clone())), tensor(new_tensor(m, shape.clone())), tensor(new_tensor(v, shape))]
}

/// One chunk, the composed form's operations in its order; the branches
/// resolved at compile time and the slices of one length, so that the loop
/// vectorises.
#[inline(never)]
fn update<const SCALED: bool, const DECAYS: bool>(p: &mut [f32], m: &mut [f32], v: &mut [f32], g: &[f32], c: Scalars) {
    let n = p.len();
    let (m, v, g) = (&mut m[..n], &mut v[..n], &g[..n]);
    for i in 0..n {
        let g = if SCALED { g[i] * c.scale } else { g[i] };
        let param = if DECAYS { p[i] * c.keep } else { p[i] };
        let m_i = m[i] + (g - m[i]) * c.one_minus_beta1;
        let v_i = v[i] * c.beta2 + g * g * c.one_minus_beta2;
        let denom = v_i.sqrt() / c.bias2_sqrt + c.epsilon;
        p[i] = param - m_i / denom * c.step;
        m[i] = m_i;
        v[i] = v_i;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::tensor::Distribution;

    fn values(t: Tensor<Flex, 1>) -> Vec<f32> {
        t.into_data().into_vec().unwrap()
    }

    /// The one pass gives the composed form's bits, decayed or not, clipped
    /// or not, early (large bias corrections) and late, over a length that is
    /// no multiple of a task.
    #[test]
    fn the_one_pass_equals_the_composed_step_bit_for_bit() {
        let device = Default::default();
        let n = 3 * ELEMENTS_PER_TASK + 17;
        let random = |seed: u64, scale: f64| {
            <Flex as Backend>::seed(&device, seed);
            Tensor::<Flex, 1>::random([n], Distribution::Uniform(-scale, scale), &device)
        };
        let (param, grad, m) = (random(1, 1.0), random(2, 0.1), random(3, 0.01));
        let v = random(4, 1e-4).abs();
        for (weight_decay, grad_scale, t) in [(0.01, 1.0, 1), (0.0, 0.37, 2), (0.1, 0.5, 1000)] {
            let s = AdamWStep { lr: 5e-5, beta1: 0.9, beta2: 0.999, epsilon: 1e-8, weight_decay, grad_scale, t };
            let reference = composed(param.clone(), grad.clone(), m.clone(), v.clone(), &s);
            let fused = flex(param.clone(), grad.clone(), m.clone(), v.clone(), &s);
            for (what, (a, b)) in ["param", "m", "v"].iter().zip(fused.into_iter().zip(reference)) {
                let (a, b) = (values(a), values(b));
                let same = a.iter().zip(&b).all(|(x, y)| x.to_bits() == y.to_bits());
                assert!(same, "{what} (wd {weight_decay}, scale {grad_scale}, t {t})");
            }
        }
    }

    /// Written in place: moments nothing else holds keep their storage from
    /// the second step on (Burn's zeros are byte buffers, which the first step
    /// turns into f32 ones).
    #[test]
    fn unshared_moments_are_updated_in_their_own_storage() {
        let device = Default::default();
        let zeros = || Tensor::<Flex, 1>::zeros([1000], &device);
        let address = |t: &Tensor<Flex, 1>| super::values(&host(t.clone())).as_ptr() as usize;
        let s =
            AdamWStep { lr: 1e-3, beta1: 0.9, beta2: 0.999, epsilon: 1e-8, weight_decay: 0.0, grad_scale: 1.0, t: 1 };
        let [p, m, v] = flex(zeros() + 1.0, zeros() + 0.5, zeros(), zeros(), &s);
        let before = (address(&p), address(&m), address(&v));
        let [p, m, v] = flex(p, zeros() + 0.5, m, v, &AdamWStep { t: 2, ..s });
        assert_eq!((address(&p), address(&m), address(&v)), before);
        let m = values(m);
        assert!(m.iter().all(|&x| x == m[0]) && (m[0] - 0.095).abs() < 1e-7, "m = 0.05 + (0.5 − 0.05) · 0.1: {}", m[0]);
    }
}
