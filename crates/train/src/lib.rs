//! The train stage: the course's fine-tuning loop, equal to HF `Trainer`.

mod config;

pub use config::Config;
