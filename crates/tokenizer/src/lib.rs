//! TEMPORARY placeholder for branch `tokenizer` (replaced at merge): same signature, no conversion.
use std::path::Path;

use slmpack_gguf::Value;

#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct TokenizerError(pub String);

#[derive(Clone, Debug, Default)]
pub struct HfTokenizerOptions {
    pub vocab_size: Option<usize>,
    pub pre_override: Option<String>,
}

pub fn gguf_metadata_from_hf(
    dir: &Path,
    _opts: &HfTokenizerOptions,
) -> Result<Vec<(String, Value)>, TokenizerError> {
    if !dir.join("tokenizer.json").is_file() {
        return Err(TokenizerError(format!(
            "no `tokenizer.json` in `{}`",
            dir.display()
        )));
    }
    Err(TokenizerError("tokenizer conversion is not merged yet".into()))
}
