//! Hugging Face `tokenizer.json` ↔ GGUF `tokenizer.*` metadata.
//!
//! * [`gguf_metadata_from_hf`] does what llama.cpp's `convert_hf_to_gguf.py` does for BPE
//!   tokenizers: byte-level GPT-2 style (`tokenizer.ggml.model = "gpt2"`, with the pre-tokenizer
//!   identified as llama.cpp does) and SentencePiece-style Llama BPE (`"llama"`), plus the special
//!   token ids, `add_bos`/`add_eos` and the chat template.
//! * [`hf_tokenizer_from_gguf`] rebuilds tokenizer.json and tokenizer_config.json from a GGUF so that
//!   Hugging Face `tokenizers` encodes text as llama.cpp does from the GGUF.

mod error;
mod gguf;
mod hf;
pub mod pre;

pub use error::TokenizerError;
pub use gguf::{hf_tokenizer_from_gguf, hf_tokenizer_from_metadata, HfTokenizerFiles};
pub use hf::{gguf_metadata_from_hf, HfTokenizerOptions};

/// Largest tokenizer.json read (bytes).
pub const MAX_TOKENIZER_JSON_BYTES: u64 = 64 << 20;
/// Largest tokenizer_config.json / config.json / chat template read (bytes).
pub const MAX_CONFIG_JSON_BYTES: u64 = 16 << 20;
/// Most tokens in a vocabulary (and largest token id + 1).
pub const MAX_VOCAB: usize = 1 << 22;
/// Most BPE merges.
pub const MAX_MERGES: usize = 1 << 23;

/// llama.cpp's token types (`tokenizer.ggml.token_type`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(i32)]
pub enum TokenType {
    Normal = 1,
    Unknown = 2,
    Control = 3,
    UserDefined = 4,
    Unused = 5,
    Byte = 6,
}

impl TokenType {
    pub fn from_i64(v: i64) -> Option<TokenType> {
        Some(match v {
            1 => TokenType::Normal,
            2 => TokenType::Unknown,
            3 => TokenType::Control,
            4 => TokenType::UserDefined,
            5 => TokenType::Unused,
            6 => TokenType::Byte,
            _ => return None,
        })
    }
}

/// GGUF metadata keys (gguf-py `Keys.Tokenizer`).
pub mod keys {
    pub const MODEL: &str = "tokenizer.ggml.model";
    pub const PRE: &str = "tokenizer.ggml.pre";
    pub const TOKENS: &str = "tokenizer.ggml.tokens";
    pub const TOKEN_TYPE: &str = "tokenizer.ggml.token_type";
    pub const SCORES: &str = "tokenizer.ggml.scores";
    pub const MERGES: &str = "tokenizer.ggml.merges";
    pub const BOS_ID: &str = "tokenizer.ggml.bos_token_id";
    pub const EOS_ID: &str = "tokenizer.ggml.eos_token_id";
    pub const EOT_ID: &str = "tokenizer.ggml.eot_token_id";
    pub const EOM_ID: &str = "tokenizer.ggml.eom_token_id";
    pub const UNK_ID: &str = "tokenizer.ggml.unknown_token_id";
    pub const SEP_ID: &str = "tokenizer.ggml.seperator_token_id";
    pub const PAD_ID: &str = "tokenizer.ggml.padding_token_id";
    pub const MASK_ID: &str = "tokenizer.ggml.mask_token_id";
    pub const ADD_BOS: &str = "tokenizer.ggml.add_bos_token";
    pub const ADD_EOS: &str = "tokenizer.ggml.add_eos_token";
    pub const ADD_SEP: &str = "tokenizer.ggml.add_sep_token";
    pub const ADD_SPACE_PREFIX: &str = "tokenizer.ggml.add_space_prefix";
    pub const CHAT_TEMPLATE: &str = "tokenizer.chat_template";
    pub const CHAT_TEMPLATES: &str = "tokenizer.chat_templates";

    /// Key of a special token id by gguf-py's type name (`cls` has none in GGUF).
    pub fn special_id_key(typ: &str) -> Option<&'static str> {
        Some(match typ {
            "bos" => BOS_ID,
            "eos" => EOS_ID,
            "eot" => EOT_ID,
            "eom" => EOM_ID,
            "unk" => UNK_ID,
            "sep" => SEP_ID,
            "pad" => PAD_ID,
            "mask" => MASK_ID,
            _ => return None,
        })
    }

    /// Key of an `add_{typ}_token` flag.
    pub fn add_key(typ: &str) -> Option<&'static str> {
        Some(match typ {
            "bos" => ADD_BOS,
            "eos" => ADD_EOS,
            "sep" => ADD_SEP,
            _ => return None,
        })
    }
}
