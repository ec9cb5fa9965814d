//! Picks the compiled backend a command runs on (`--backend`).

use anyhow::{Result, bail};
use burn::tensor::backend::AutodiffBackend;

/// Work generic over the training backend.
pub trait WithBackend {
    /// What the work returns.
    type Output;
    /// Runs the work on `B` (with gradients; `B::InnerBackend` without).
    fn run<B: AutodiffBackend>(self, device: B::Device, name: &'static str) -> Self::Output;
}

/// Runs `work` on the backend named `name` (`None`: the best compiled one).
pub fn dispatch<W: WithBackend>(name: Option<&str>, work: W) -> Result<W::Output> {
    let compiled = tp06_model::backend::compiled();
    let name = match name {
        Some(n) => n,
        None if compiled.contains(&"cuda") => "cuda",
        None => "flex",
    };
    Ok(match name {
        "flex" => work.run::<tp06_model::backend::CpuAutodiff>(Default::default(), "flex"),
        #[cfg(feature = "ndarray")]
        "ndarray" => work.run::<burn::backend::Autodiff<tp06_model::backend::NdArray>>(Default::default(), "ndarray"),
        #[cfg(feature = "cuda")]
        "cuda" => work.run::<burn::backend::Autodiff<tp06_model::backend::Cuda>>(Default::default(), "cuda"),
        other => bail!(
            "backend `{other}` is not compiled into this build (compiled: {}); build it with `cargo xtask --features {other} …`",
            compiled.join(", ")
        ),
    })
}
