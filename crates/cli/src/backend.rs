//! Picks the compiled backend a command runs on (`--backend`).

use anyhow::{Result, bail};
use tp06_model::TrainBackend;

/// Work generic over the training backend.
pub trait WithBackend {
    /// What the work returns.
    type Output;
    /// Runs the work on `B` (with gradients; `B::InnerBackend` without).
    fn run<B: TrainBackend>(self, device: B::Device, name: &'static str) -> Self::Output;
}

/// Whether CUDA's driver library can be loaded (Burn's CUDA backend panics,
/// on a thread of its own, when it cannot).
#[cfg(feature = "cuda")]
fn cuda_driver_loads() -> bool {
    // SAFETY: loading the NVIDIA driver runs only its own initialisers, as
    // Burn's CUDA backend would a moment later.
    ["libcuda.so.1", "libcuda.so"].into_iter().any(|name| unsafe { libloading::Library::new(name) }.is_ok())
}

#[cfg(not(feature = "cuda"))]
fn cuda_driver_loads() -> bool {
    false
}

/// The backend `name` asks for (`None`: the best compiled one that can run here).
pub fn resolve(name: Option<&str>) -> Result<String> {
    let compiled = tp06_model::backend::compiled();
    let name = match name {
        Some(n) => n,
        None if compiled.contains(&"cuda") && cuda_driver_loads() => "cuda",
        None if compiled.contains(&"cuda") => {
            tracing::warn!(
                "built with CUDA, but the NVIDIA driver library (libcuda.so) does not load here: running on the CPU (flex)"
            );
            "flex"
        }
        None => "flex",
    };
    if name == "cuda" && compiled.contains(&"cuda") && !cuda_driver_loads() {
        bail!(
            "backend `cuda`: the NVIDIA driver library (libcuda.so) does not load on this machine; install the NVIDIA driver (or add its directory to LD_LIBRARY_PATH), or use --backend flex"
        );
    }
    Ok(name.to_string())
}

/// Runs `work` on the backend named `name` (`None`: the best compiled one).
pub fn dispatch<W: WithBackend>(name: Option<&str>, work: W) -> Result<W::Output> {
    let compiled = tp06_model::backend::compiled();
    let name = resolve(name)?;
    Ok(match name.as_str() {
        "flex" => work.run::<tp06_model::backend::CpuAutodiff>(Default::default(), "flex"),
        #[cfg(feature = "ndarray")]
        "ndarray" => work.run::<burn::backend::Autodiff<tp06_model::backend::NdArray>>(Default::default(), "ndarray"),
        #[cfg(feature = "cuda")]
        "cuda" => work.run::<burn::backend::Autodiff<tp06_model::backend::Cuda>>(Default::default(), "cuda"),
        other => bail!(
            "backend `{other}` is not compiled into this build (compiled: {}); build it with `cargo xtask --features {other} …` (or `cargo build --release -p tp06-cli --features {other}`)",
            compiled.join(", ")
        ),
    })
}
