//! The sample stage: generation with transformers' sampling semantics.

mod config;

pub use config::{Config, Prompt};
