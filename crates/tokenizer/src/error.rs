//! Typed errors: each names the file (or GGUF key) and field, with a hint where one helps.

use std::path::PathBuf;

/// Format an optional hint as the `\n  hint: ...` suffix used in every slmpack error.
pub(crate) fn fmt_hint(h: &str) -> String {
    if h.is_empty() {
        String::new()
    } else {
        format!("\n  hint: {h}")
    }
}

#[derive(Debug, thiserror::Error)]
pub enum TokenizerError {
    #[error("`{}`: no `tokenizer.json` in this folder{}", dir.display(), fmt_hint(.hint))]
    MissingTokenizerJson { dir: PathBuf, hint: String },

    #[error("`{}`: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    #[error("`{}`: file is {size} bytes, more than the {max}-byte limit{}", path.display(), fmt_hint(.hint))]
    TooLarge {
        path: PathBuf,
        size: u64,
        max: u64,
        hint: String,
    },

    #[error("`{}`: not valid JSON: {source}", path.display())]
    Json {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },

    /// A field of a JSON file (or a GGUF key) is missing or malformed.
    #[error("`{file}`: field `{field}` {reason}{}", fmt_hint(.hint))]
    Field {
        file: String,
        field: String,
        reason: String,
        hint: String,
    },

    /// The BPE pre-tokenizer could not be identified.
    #[error("`{file}`: unknown BPE pre-tokenizer (chkhsh {chkhsh}, `pre_tokenizer` is {found}){}", fmt_hint(.hint))]
    UnknownPre {
        file: String,
        chkhsh: String,
        found: String,
        hint: String,
    },

    /// A tokenizer kind slmpack does not convert.
    #[error("`{file}`: unsupported tokenizer: {what}{}", fmt_hint(.hint))]
    Unsupported {
        file: String,
        what: String,
        hint: String,
    },
}

impl TokenizerError {
    pub(crate) fn field(
        file: impl Into<String>,
        field: impl Into<String>,
        reason: impl Into<String>,
        hint: impl Into<String>,
    ) -> Self {
        TokenizerError::Field {
            file: file.into(),
            field: field.into(),
            reason: reason.into(),
            hint: hint.into(),
        }
    }
}
