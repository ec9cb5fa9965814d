//! Dropout: the rate of each site ([`Dropout`], a field of the modules), the
//! stream a training pass draws its masks from ([`DropoutStream`], owned by the
//! pass) and one site's mask ([`Mask`]).
//!
//! On the CPU backends a mask is drawn on the host, one counter-based draw per
//! element ([`HostMask`]): several times cheaper than the backend's scalar
//! Bernoulli sampler, and a pure function of the element's index, so that a
//! fused kernel redraws it in its backward pass instead of storing it. On the
//! other backends (GPUs) the mask stays on the device, drawn by the backend's
//! own sampler (seeded by `B::seed`).

use burn::prelude::*;
use rayon::prelude::*;

use crate::rng::splitmix64;

/// The dropout of one site of the model: rate `p`, applied only in a pass
/// that has a [`DropoutStream`] (training).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Dropout {
    /// Probability of zeroing an element.
    pub p: f64,
}

/// Where the masks of a training pass come from: a seed and the number of
/// masks drawn since, so that every mask is a pure function of (seed, its
/// rank in the pass). The training loop seeds one per micro-batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DropoutStream {
    state: u64,
}

impl DropoutStream {
    /// The stream of a pass seeded with `seed`.
    pub fn new(seed: u64) -> Self {
        Self { state: splitmix64(seed) }
    }

    /// The next mask of rate `p` drawn on the host.
    pub fn next_host(&mut self, p: f64) -> HostMask {
        let stream = splitmix64(self.state);
        self.state = self.state.wrapping_add(0x9e37_79b9_7f4a_7c15);
        HostMask { stream, threshold: ((1.0 - p) * 4_294_967_296.0) as u64, keep: (1.0 / (1.0 - p)) as f32 }
    }
}

/// One host-drawn mask: element `i` is kept (and scaled by 1/(1 − p)) when the
/// `i`-th draw of its stream falls under 1 − p.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct HostMask {
    stream: u64,
    threshold: u64,
    keep: f32,
}

impl HostMask {
    /// The factor of element `index`: 1/(1 − p) or 0.
    #[inline]
    pub fn factor(&self, index: u64) -> f32 {
        if splitmix64(self.stream ^ index) >> 32 < self.threshold { self.keep } else { 0.0 }
    }

    /// `out[j] = x[j] · factor(first + j)`: a run of elements starting at index `first`.
    #[inline]
    pub fn apply(&self, first: u64, x: &[f32], out: &mut [f32]) {
        for (j, (o, &v)) in out.iter_mut().zip(x).enumerate() {
            *o = v * self.factor(first + j as u64);
        }
    }
}

/// The mask of one dropout site in one pass.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Mask {
    /// Nothing dropped: inference, evaluation, or a rate of 0.
    Off,
    /// Drawn on the host (CPU backends).
    Host(HostMask),
    /// Drawn by the backend's sampler, rate `p` (GPUs).
    Device(f64),
}

impl Mask {
    /// Inverted dropout of `x`: each element kept with probability 1 − p and
    /// scaled by 1/(1 − p).
    pub fn apply<B: Backend, const D: usize>(self, x: Tensor<B, D>) -> Tensor<B, D> {
        match self {
            Mask::Off => x,
            Mask::Host(mask) => {
                let shape = x.shape();
                let factors: Vec<f32> =
                    (0..shape.num_elements() as u64).into_par_iter().map(|i| mask.factor(i)).collect();
                let device = x.device();
                x * Tensor::from_data(TensorData::new(factors, shape), &device)
            }
            Mask::Device(p) => {
                let keep = x.random_like(burn::tensor::Distribution::Bernoulli(1.0 - p));
                x * keep * (1.0 / (1.0 - p))
            }
        }
    }

    /// The host mask, if this is one.
    pub fn host(self) -> Option<HostMask> {
        match self {
            Mask::Host(mask) => Some(mask),
            Mask::Off | Mask::Device(_) => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Pass;
    use crate::backend::{Cpu, CpuAutodiff};

    fn dropped(seed: u64, p: f64) -> Vec<f32> {
        let device = Default::default();
        let x = Tensor::<CpuAutodiff, 2>::ones([1000, 1000], &device);
        Pass::training(seed).dropout(Dropout { p }, x).into_data().convert::<f32>().into_vec().unwrap()
    }

    /// The backend-drawn masks (the path GPUs take) keep 1 − p of the elements,
    /// scaled by 1/(1 − p); run here on the CPU backend's own sampler.
    #[test]
    fn device_drawn_dropout_keeps_1_minus_p_scaled() {
        let device = Default::default();
        Cpu::seed(&device, 5);
        let x = Tensor::<Cpu, 2>::ones([1000, 1000], &device);
        let out: Vec<f32> = Mask::Device(0.2).apply(x).into_data().convert::<f32>().into_vec().unwrap();
        let zeros = out.iter().filter(|&&v| v == 0.0).count() as f64 / out.len() as f64;
        // 10⁶ Bernoulli(0.2) draws: within 5 standard deviations (0.002).
        assert!((zeros - 0.2).abs() < 0.002, "{zeros}");
        assert!(out.iter().all(|&v| v == 0.0 || (v - 1.25).abs() < 1e-6), "kept values are 1/(1 − p)");
    }

    /// The masks are independent Bernoulli draws, not just the right share of
    /// zeros: neighbouring elements, and the same element under two seeds,
    /// are kept together a quarter of the time at p = 0.5 (a badly
    /// broken hash correlates them).
    #[test]
    fn dropout_masks_are_independent_draws() {
        let kept = |seed| dropped(seed, 0.5).into_iter().map(|v| v != 0.0).collect::<Vec<bool>>();
        let (a, b) = (kept(11), kept(12));
        let n = a.len() as f64;
        let share = |count: usize, of: f64| count as f64 / of;
        // 10⁶ draws, 5 standard deviations: 0.0025 for a share near 0.5, 0.0022 near 0.25,
        // 0.0028 for overlapping neighbour pairs (adjacent pairs covary: variance 5/16 per pair).
        assert!((share(a.iter().filter(|&&k| k).count(), n) - 0.5).abs() < 0.0025);
        let neighbours = a.windows(2).filter(|w| w[0] && w[1]).count();
        assert!(
            (share(neighbours, n - 1.0) - 0.25).abs() < 0.0022,
            "neighbours kept together: {}",
            share(neighbours, n - 1.0)
        );
        let both = a.iter().zip(&b).filter(|(x, y)| **x && **y).count();
        assert!((share(both, n) - 0.25).abs() < 0.0022, "kept under both seeds: {}", share(both, n));
        let rows = (0..1000).filter(|&r| a[r * 1000] && a[r * 1000 + 1]).count();
        assert!(rows > 150 && rows < 350, "row starts: {rows}");
    }

    #[test]
    fn dropout_keeps_1_minus_p_scaled_repeats_under_a_seed_and_is_off_without_a_stream() {
        let a = dropped(7, 0.1);
        let zeros = a.iter().filter(|&&v| v == 0.0).count() as f64 / a.len() as f64;
        // 10⁶ Bernoulli(0.1) draws: the share of zeros is within 5 standard deviations (0.0015).
        assert!((zeros - 0.1).abs() < 0.0015, "{zeros}");
        assert!(a.iter().all(|&v| v == 0.0 || v == (1.0 / 0.9) as f32));
        assert_eq!(a, dropped(7, 0.1), "same seed, same mask");
        assert_ne!(a, dropped(8, 0.1), "another seed, another mask");
        let heavy = dropped(7, 0.5);
        let zeros = heavy.iter().filter(|&&v| v == 0.0).count() as f64 / heavy.len() as f64;
        assert!((zeros - 0.5).abs() < 0.0025, "{zeros}");
        // Inference, even with gradients recorded: identity.
        let x = Tensor::<CpuAutodiff, 1>::ones([10], &Default::default());
        let out = Pass::inference().dropout(Dropout { p: 0.5 }, x);
        assert_eq!(out.into_data().convert::<f32>().into_vec::<f32>().unwrap(), vec![1.0; 10]);
    }

    /// Each site of a pass draws the next mask of its stream: two sites differ,
    /// and a second pass seeded alike repeats the first site's mask.
    #[test]
    fn a_pass_draws_a_new_mask_per_site_and_rate_zero_draws_none() {
        let mut stream = DropoutStream::new(3);
        let first = stream.next_host(0.5);
        assert_ne!(first, stream.next_host(0.5));
        assert_eq!(first, DropoutStream::new(3).next_host(0.5));
        let mut pass = Pass::training(3);
        assert_eq!(pass.mask::<Cpu>(Dropout { p: 0.0 }), Mask::Off, "rate 0: nothing drawn");
        assert_eq!(pass.mask::<Cpu>(Dropout { p: 0.5 }), Mask::Host(first), "the stream did not advance at rate 0");
    }
}
