//! Hugging Face checkpoints and GGUF files in, llama.cpp-compatible quantized GGUF out.
//!
//! * [`Input`] opens a checkpoint folder (config.json + safetensors, memory-mapped) or a GGUF
//!   and presents its tensors under llama.cpp's names, Q/K rows permuted as llama.cpp's
//!   converter does.
//! * [`rules`] picks each tensor's type the way llama-quantize does for a mix ([`Ftype`]).
//! * [`plan`] + [`write`] quantize tensor by tensor (parallel over rows) into an atomic GGUF.
//! * [`recipe`] reads release recipes (one GGUF per device tier) and writes `build.json`.
//! * [`inspect`] summarises a GGUF, a safetensors file or a checkpoint.
//! * [`export`] writes a GGUF back out as a Hugging Face checkpoint.

mod error;
pub mod export;
mod ftype;
pub mod fuzz;
mod input;
pub mod inspect;
mod pipeline;
pub mod recipe;
pub mod rules;

pub use error::{ConvertError, Result};
pub use ftype::{parse_tensor_type, Ftype};
pub use input::{Input, InputKind, SrcTensor};
pub use pipeline::{plan, write, NoProgress, Plan, PlannedTensor, Progress, QuantizeOptions};
pub use rules::{Fallback, ModelShape, Override, TypeRules};
