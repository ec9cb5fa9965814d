//! The concrete backends, picked by cargo features: the one place that names them.
//!
//! - `Flex`: Burn's pure-Rust CPU backend (threads + SIMD), always available.
//! - `NdArray`: the older CPU backend (feature `ndarray`).
//! - `Cuda`: NVIDIA GPUs (feature `cuda`; CUDA is loaded at run time).

/// The default CPU backend.
pub type Cpu = burn::backend::Flex;
/// The default CPU backend with gradients.
pub type CpuAutodiff = burn::backend::Autodiff<Cpu>;

/// The NdArray CPU backend.
#[cfg(feature = "ndarray")]
pub type NdArray = burn::backend::NdArray;

/// The CUDA backend (f32).
#[cfg(feature = "cuda")]
pub type Cuda = burn::backend::Cuda;

/// The backends compiled into this build, by name.
pub fn compiled() -> Vec<&'static str> {
    let mut names = vec!["flex"];
    if cfg!(feature = "ndarray") {
        names.push("ndarray");
    }
    if cfg!(feature = "cuda") {
        names.push("cuda");
    }
    names
}
