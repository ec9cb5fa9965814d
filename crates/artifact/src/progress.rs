//! The seam through which libraries report long work.
//!
//! Libraries never print: they ask a [`Progress`] for a task and advance it. The
//! binary implements it with progress bars; tests and quiet runs use [`NoProgress`].

use std::sync::atomic::{AtomicBool, Ordering};

/// A factory of progress tasks, implemented by the binary.
pub trait Progress: Send + Sync {
    /// Starts a task of `total` units (`0` when the total is unknown).
    fn begin(&self, name: &str, total: u64) -> Box<dyn ProgressTask>;
}

/// One running task.
pub trait ProgressTask: Send {
    /// Sets how many units are done.
    fn set_position(&mut self, position: u64);
    /// Sets the free-form status shown beside the bar (loss, lr, …).
    fn set_message(&mut self, message: String);
    /// Ends the task.
    fn finish(&mut self);
}

/// Reports nothing.
#[derive(Debug, Default, Clone, Copy)]
pub struct NoProgress;

impl Progress for NoProgress {
    fn begin(&self, _name: &str, _total: u64) -> Box<dyn ProgressTask> {
        Box::new(NoProgress)
    }
}

impl ProgressTask for NoProgress {
    fn set_position(&mut self, _position: u64) {}
    fn set_message(&mut self, _message: String) {}
    fn finish(&mut self) {}
}

/// What long work inside a stage is handed so that people can watch it and
/// stop it: where it reports progress, and the flag (set by Ctrl-C or
/// SIGTERM) that asks it to stop at its next safe point — between two
/// tensors, batches or generations.
#[derive(Clone, Copy)]
pub struct Watch<'a> {
    /// Progress of the work.
    pub progress: &'a dyn Progress,
    /// Set when the work must stop.
    pub stop: &'a AtomicBool,
}

/// Never set: the stop flag of work nobody interrupts.
pub(crate) static NEVER: AtomicBool = AtomicBool::new(false);

impl Watch<'static> {
    /// Work nobody watches or stops (tests, library callers).
    pub fn none() -> Self {
        Self { progress: &NoProgress, stop: &NEVER }
    }
}

impl<'a> Watch<'a> {
    /// The same progress, but never asked to stop: for work that must end
    /// once begun (a training's export, a checkpoint).
    pub fn unstoppable(self) -> Watch<'a> {
        Watch { progress: self.progress, stop: &NEVER }
    }

    /// Whether the work was asked to stop.
    pub fn stopped(&self) -> bool {
        self.stop.load(Ordering::SeqCst)
    }

    /// Whether the work stops at its safe point `point` (between two
    /// tensors, batches, generations): [`stopped`](Self::stopped), after
    /// [`crate::fault::interrupt`] at `point` (the reliability tests' SIGTERM).
    pub fn stops_at(&self, point: &str) -> bool {
        crate::fault::interrupt(point);
        self.stopped()
    }

    /// Starts a progress task of `total` units (see [`Progress::begin`]).
    pub fn begin(&self, name: &str, total: u64) -> Box<dyn ProgressTask> {
        self.progress.begin(name, total)
    }
}
