use std::path::PathBuf;

/// Errors loading and running a model. Messages name the file, tensor or key involved.
#[derive(Debug, thiserror::Error)]
pub enum InferError {
    #[error(transparent)]
    Gguf(#[from] slmpack_gguf::GgufError),

    #[error("`{}` has architecture `{arch}`, which slmpack cannot run\n  hint: `slmpack run` runs llama-family models (general.architecture = `llama`)", path.display())]
    Architecture { path: PathBuf, arch: String },

    #[error("`{}`: metadata key `{key}` {msg}", path.display())]
    Metadata {
        path: PathBuf,
        key: String,
        msg: String,
    },

    #[error("`{}`: tensor `{tensor}` {msg}", path.display())]
    Tensor {
        path: PathBuf,
        tensor: String,
        msg: String,
    },

    #[error("`{}`: {msg}", path.display())]
    Unsupported { path: PathBuf, msg: String },

    #[error("tokenizer: {0}")]
    Tokenizer(String),

    #[error("chat template: {0}\n  hint: the template comes from `tokenizer.chat_template`; run without `--chat` to send the prompt as is")]
    Template(String),

    #[error("token id {id} is out of range (the vocabulary has {n_vocab} tokens)")]
    TokenRange { id: u32, n_vocab: usize },

    #[error("the context is full: {need} tokens needed, the context holds {n_ctx}\n  hint: raise `--ctx-size` or shorten the prompt")]
    ContextFull { need: usize, n_ctx: usize },

    #[error("fallback `{url}`: {msg}")]
    Fallback { url: String, msg: String },

    #[error("{0}")]
    Invalid(String),
}

pub type Result<T, E = InferError> = std::result::Result<T, E>;
