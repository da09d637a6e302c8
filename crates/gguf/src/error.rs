use std::io;
use std::path::PathBuf;

/// Errors reading or writing GGUF files. Every message names the file and, where it applies,
/// the key, the tensor and the byte offset.
#[derive(Debug, thiserror::Error)]
pub enum GgufError {
    #[error("cannot read `{}`: {source}", path.display())]
    Open { path: PathBuf, source: io::Error },

    #[error("`{}` is not a GGUF file (it starts with {found:02x?}, not `GGUF`)\n  hint: pass a .gguf file, a .safetensors file or a checkpoint folder", path.display())]
    BadMagic { path: PathBuf, found: Vec<u8> },

    #[error("`{}` has GGUF version {version}, which slmpack cannot read\n  hint: slmpack reads GGUF v2 and v3 (little-endian); re-export the file with a current llama.cpp", path.display())]
    Version { path: PathBuf, version: u32 },

    #[error("`{}` is truncated: {what} at byte {offset} needs {need} bytes but the file has {len}\n  hint: the download or copy was cut short; fetch the file again", path.display())]
    Truncated {
        path: PathBuf,
        what: String,
        offset: u64,
        need: u64,
        len: u64,
    },

    #[error("`{}` is malformed at byte {offset}: {msg}\n  hint: the file is corrupt or was not written by a GGUF writer", path.display())]
    Malformed {
        path: PathBuf,
        offset: u64,
        msg: String,
    },

    #[error("`{}`: tensor `{tensor}` {msg}\n  hint: the file is corrupt or was not written by a GGUF writer", path.display())]
    BadTensor {
        path: PathBuf,
        tensor: String,
        msg: String,
    },

    #[error("no tensor `{name}` in `{}`", path.display())]
    NoTensor { path: PathBuf, name: String },

    #[error("cannot add tensor `{name}`: {msg}")]
    BadSpec { name: String, msg: String },

    #[error("cannot write `{}`: {source}\n  hint: check that the folder exists and is writable, and that the disk has room", path.display())]
    Write { path: PathBuf, source: io::Error },

    #[error("writing `{}`: tensor `{tensor}` got {got} bytes of data, expected {expected}", path.display())]
    DataSize {
        path: PathBuf,
        tensor: String,
        got: u64,
        expected: u64,
    },

    #[error("writing `{}`: tensor `{tensor}`: {source}", path.display())]
    Producer {
        path: PathBuf,
        tensor: String,
        source: Box<dyn std::error::Error + Send + Sync>,
    },
}

pub type Result<T, E = GgufError> = std::result::Result<T, E>;
