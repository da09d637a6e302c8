use std::path::PathBuf;

use slmpack_gguf::GgmlType;

/// Everything that can go wrong reading a checkpoint, choosing types, quantizing or writing.
/// Messages name the file, tensor or key and end with a hint where one helps.
#[derive(Debug, thiserror::Error)]
pub enum ConvertError {
    #[error("cannot read `{}`: {source}", path.display())]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },

    #[error("cannot write `{}`: {source}\n  hint: check that the folder exists, is writable and the disk has room", path.display())]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },

    #[error("`{}` is not a GGUF file, a .safetensors file or a checkpoint folder\n  hint: pass a Hugging Face checkpoint folder (config.json + *.safetensors) or a .gguf file", path.display())]
    UnknownInput { path: PathBuf },

    #[error("`{}` is not a valid safetensors file: {msg}\n  hint: the file is truncated or corrupt; download or copy it again", path.display())]
    Safetensors { path: PathBuf, msg: String },

    #[error("`{}`: tensor `{tensor}` has dtype {dtype}\n  hint: slmpack reads F16, BF16 and F32", path.display())]
    Dtype {
        path: PathBuf,
        tensor: String,
        dtype: String,
    },

    #[error("`{}`: tensor `{tensor}` is not part of a llama model\n  hint: slmpack converts LlamaForCausalLM checkpoints (model.embed_tokens, model.layers.N.*, model.norm, lm_head)", path.display())]
    UnknownTensor { path: PathBuf, tensor: String },

    #[error("`{}`: tensor `{tensor}` appears twice", path.display())]
    DuplicateTensor { path: PathBuf, tensor: String },

    #[error("checkpoint `{}` has no tensor `{tensor}`\n  hint: the checkpoint is incomplete (a missing shard?) or `config.json` does not match it", path.display())]
    MissingTensor { path: PathBuf, tensor: String },

    #[error("`{}`: tensor `{tensor}` has shape {found:?} but `config.json` implies {expected:?}", path.display())]
    Shape {
        path: PathBuf,
        tensor: String,
        found: Vec<u64>,
        expected: Vec<u64>,
    },

    #[error("`{}`: {msg}", path.display())]
    Config { path: PathBuf, msg: String },

    #[error("`{}`: unsupported architecture `{found}`\n  hint: slmpack converts the Llama family (`LlamaForCausalLM`: SmolLM/SmolLM2, TinyLlama, Llama 2/3)", path.display())]
    UnsupportedArch { path: PathBuf, found: String },

    #[error("checkpoint `{}` has no `tokenizer.json`\n  hint: copy tokenizer.json and tokenizer_config.json from the model repository into the folder", path.display())]
    MissingTokenizer { path: PathBuf },

    #[error("tokenizer of `{}`: {msg}", path.display())]
    Tokenizer { path: PathBuf, msg: String },

    #[error(transparent)]
    Gguf(#[from] slmpack_gguf::GgufError),

    #[error(
        "unknown quantization type `{name}`\n  hint: use one of {}",
        crate::Ftype::names()
    )]
    UnknownType { name: String },

    #[error("unknown tensor type `{name}`\n  hint: use one of {known}")]
    UnknownTensorType { name: String, known: String },

    #[error(
        "bad override `{spec}`: {msg}\n  hint: write overrides as REGEX=TYPE, e.g. `attn_v=q8_0`"
    )]
    Override { spec: String, msg: String },

    #[error("tensor `{tensor}` is {ty}; requantizing from a 4/5-bit source loses quality\n  hint: pass --allow-requantize to do it anyway, or start from the F16/BF16 checkpoint")]
    Requantize { tensor: String, ty: GgmlType },

    #[error("tensor `{tensor}`: {msg}")]
    Quant { tensor: String, msg: String },

    #[error("tensor `{tensor}` holds NaN or infinite values\n  hint: the checkpoint is corrupt")]
    NonFinite { tensor: String },

    #[error("recipe `{}`: {msg}", path.display())]
    Recipe { path: PathBuf, msg: String },

    #[error("unknown tier `{name}`\n  hint: the recipe has {known}")]
    UnknownTier { name: String, known: String },

    #[error("tier `{tier}` would be {size} bytes ({size_h}), over its budget of {budget} bytes ({budget_h})\n  hint: pick a smaller mix (e.g. q4_0 or q4_k_s) or add overrides for the largest tensors (e.g. token_embd.weight=q5_0)")]
    Budget {
        tier: String,
        size: u64,
        size_h: String,
        budget: u64,
        budget_h: String,
    },

    #[error("output folder `{}` is not writable: {source}\n  hint: create the folder or pick another with --out", path.display())]
    NotWritable {
        path: PathBuf,
        source: std::io::Error,
    },
}

impl ConvertError {
    pub(crate) fn config(path: impl Into<PathBuf>, msg: impl Into<String>) -> Self {
        ConvertError::Config {
            path: path.into(),
            msg: msg.into(),
        }
    }

    /// True for a byte budget that cannot be met (exit code 4 in the CLI).
    pub fn is_unmet_requirement(&self) -> bool {
        matches!(self, ConvertError::Budget { .. })
    }
}

pub type Result<T, E = ConvertError> = std::result::Result<T, E>;
