//! Converter pipeline: Hugging Face checkpoints and GGUFs in, tiered GGUF bundles out.

pub mod export;
