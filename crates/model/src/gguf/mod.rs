//! GGUF export: llama.cpp's model file ([`format`]), a model written in it
//! for llama.cpp's `gpt2` architecture ([`export`]), and a LoRA adapter as
//! llama.cpp's adapter file ([`adapter`]).

pub mod adapter;
pub mod export;
pub mod format;

pub use export::{About, GgufFormat, write, write_dir};
