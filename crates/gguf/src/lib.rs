//! GGUF reading and writing for slmpack.
//!
//! * [`GgufFile`] memory-maps a file and validates the header, every metadata value and every
//!   tensor record (counts and sizes capped before allocating, offsets aligned, in bounds and
//!   non-overlapping) before anything else reads it.
//! * [`GgufWriter`] writes GGUF v3 atomically (temp file in the target folder, then rename), with
//!   tensor data produced one tensor at a time by the caller.
//!
//! Dimensions are kept in ggml order (`dims[0]` = row length, `ne[0]`), as in the file.

mod error;
mod reader;
mod types;
mod value;
mod writer;

pub use error::{GgufError, Result};
pub use reader::{GgufFile, Limits, TensorInfo};
pub use types::GgmlType;
pub use value::{Value, ValueType};
pub use writer::{GgufWriter, TensorSpec};

/// `GGUF` in ASCII.
pub const GGUF_MAGIC: [u8; 4] = *b"GGUF";
/// Alignment of the data section and of every tensor when `general.alignment` is absent.
pub const GGUF_DEFAULT_ALIGNMENT: u64 = 32;
