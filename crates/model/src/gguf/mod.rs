//! GGUF export: llama.cpp's model file ([`format`]) and a model written in
//! it for llama.cpp's `gpt2` architecture ([`export`]).

pub mod export;
pub mod format;

pub use export::{About, GgufFormat, write, write_dir};
