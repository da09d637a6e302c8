//! `slmpack-infer`: a runtime for llama-family GGUF models.
//!
//! * [`Model`] borrows the weights from the memory-mapped GGUF in their stored type;
//! * [`Session`] runs the forward pass (embeddings, RMSNorm, RoPE, grouped-query attention
//!   with a KV cache, SwiGLU, tied or untied output), batched for prompts, one token at a time
//!   for generation, parallel over output rows and attention heads on the spinning pool of
//!   `slmpack_kernels::pool` (threads that stay awake for the whole pass, as ggml's do);
//! * [`matmul`] is the single matrix interface, backed by the `slmpack-kernels` crate
//!   (quantized activations; scalar, AVX2, NEON or NEON+dotprod chosen at run time) or by
//!   on-the-fly dequantization for the types it has no kernel for;
//! * [`sampler`] picks tokens (greedy, temperature, top-k, top-p, seeded) and measures
//!   confidence;
//! * [`text`] tokenizes with the GGUF's vocabulary and streams UTF-8 safely, [`chat`] renders
//!   chat templates, [`fallback`] escalates low-confidence answers to an OpenAI-compatible server.

pub mod chat;
pub mod error;
pub mod fallback;
pub mod generate;
pub mod matmul;
pub mod model;
pub mod ops;
pub mod profile;
pub mod sampler;
pub mod session;
pub mod tensor;
pub mod text;

pub use error::{InferError, Result};
pub use model::{Config, Model};
pub use profile::{Profile, Profiles, Section};
pub use sampler::{Confidence, Sampler, SamplerConfig};
pub use session::Session;
pub use tensor::QTensor;
pub use text::{StreamDecoder, TextCodec};
