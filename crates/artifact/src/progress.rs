//! The seam through which libraries report long work.
//!
//! Libraries never print: they ask a [`Progress`] for a task and advance it. The
//! binary implements it with progress bars; tests and quiet runs use [`NoProgress`].

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
