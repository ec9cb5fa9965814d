//! What every stage runs with besides its own settings.

use std::sync::atomic::AtomicBool;

use crate::hub::Hub;
use crate::progress::NEVER;
use crate::{Progress, RunDir, Stage, Watch};

/// A stage stopped at a safe point because it was asked to (Ctrl-C, SIGTERM):
/// it wrote no manifest, so nothing of it is taken as done.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "interrupted: the {stage} stage stopped before it finished and kept nothing as done; run `{rerun}` to do it again"
)]
pub struct Interrupted {
    /// The stage that stopped.
    pub stage: Stage,
    /// The command that runs it again.
    pub rerun: String,
}

impl Interrupted {
    /// `stage` of `run` stopped.
    pub fn of(stage: Stage, run: &RunDir) -> Self {
        Self { stage, rerun: stage.rerun_hint(run.root()) }
    }
}

/// Whether a stage continues interrupted work (training, from a checkpoint).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Resume {
    /// Continue from this run's last checkpoint when there is one.
    Auto,
    /// Continue from this run's last checkpoint; fail when there is none.
    Require,
}

/// The context of a stage: where it runs, where its sources come from, on
/// which device, how it reports progress and learns that it must stop, and
/// whether to redo work that is up to date. Every stage's entry point is
/// `run(&StageContext, &Config)`; the stages before the model run on no
/// device (`D = ()`).
pub struct StageContext<'a, D = ()> {
    /// The run directory.
    pub run: &'a RunDir,
    /// Where hub sources (`hf:…`) are fetched or found.
    pub hub: &'a Hub,
    /// The device the stage computes on.
    pub device: D,
    /// The name of the backend `device` belongs to, as the manifests record it
    /// (empty for the stages that run on none).
    pub backend: &'a str,
    /// Progress of long work.
    pub progress: &'a dyn Progress,
    /// Set (by Ctrl-C or SIGTERM) when long work must stop at its next safe point.
    pub stop: &'a AtomicBool,
    /// Redo the stage even when it is up to date (training: from the start).
    pub force: bool,
    /// Whether training continues from a checkpoint.
    pub resume: Resume,
}

impl<'a> StageContext<'a> {
    /// A context in `run` with `hub`, on no device, that shows no progress, is
    /// never stopped, redoes nothing up to date and resumes when it can (what
    /// tests and other library callers start from; set the fields to change it).
    pub fn new(run: &'a RunDir, hub: &'a Hub) -> Self {
        Self {
            run,
            hub,
            device: (),
            backend: "",
            progress: &crate::NoProgress,
            stop: &NEVER,
            force: false,
            resume: Resume::Auto,
        }
    }
}

impl<'a, D> StageContext<'a, D> {
    /// The same context on `device` of the backend named `backend`.
    pub fn on<E>(&self, device: E, backend: &'a str) -> StageContext<'a, E> {
        StageContext {
            run: self.run,
            hub: self.hub,
            device,
            backend,
            progress: self.progress,
            stop: self.stop,
            force: self.force,
            resume: self.resume,
        }
    }

    /// Its progress and stop flag, for the long work it hands them to.
    pub fn watch(&self) -> Watch<'a> {
        Watch { progress: self.progress, stop: self.stop }
    }

    /// Whether the stage was asked to stop.
    pub fn stopped(&self) -> bool {
        self.watch().stopped()
    }

    /// `Err` when `stage` was asked to stop: what its long work calls between
    /// two pieces (files, batches, generations).
    pub fn check_stop(&self, stage: Stage) -> Result<(), Interrupted> {
        match self.stopped() {
            true => Err(Interrupted::of(stage, self.run)),
            false => Ok(()),
        }
    }
}
