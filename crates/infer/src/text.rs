//! Text ↔ tokens: the GGUF vocabulary rebuilt as a Hugging Face tokenizer
//! (`slmpack_tokenizer::hf_tokenizer_from_gguf`), special tokens, end-of-generation tokens, and
//! incremental decoding that never splits a multi-byte UTF-8 character.

use slmpack_gguf::GgufFile;

use crate::error::{InferError, Result};

/// Token texts llama.cpp treats as end of generation when they are control tokens
/// (`llama_vocab::impl::load`'s EOG list).
const EOG_TEXTS: &[&str] = &[
    "<|eot_id|>",
    "<|im_end|>",
    "<|end|>",
    "<end_of_turn>",
    "<|endoftext|>",
    "<|eom_id|>",
    "<EOT>",
    "_<EOT>",
    "<｜end▁of▁sentence｜>",
];

/// A tokenizer with the GGUF's special tokens.
pub struct TextCodec {
    inner: tokenizers::Tokenizer,
    pub bos: Option<u32>,
    pub eos: Option<u32>,
    /// Add BOS in front of a prompt (`tokenizer.ggml.add_bos_token`).
    pub add_bos: bool,
    /// Tokens that end generation (EOS, EOT, EOM and control tokens like `<|im_end|>`).
    pub eog: Vec<u32>,
    pub chat_template: Option<String>,
}

impl std::fmt::Debug for TextCodec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TextCodec")
            .field("bos", &self.bos)
            .field("eos", &self.eos)
            .field("add_bos", &self.add_bos)
            .field("eog", &self.eog)
            .finish_non_exhaustive()
    }
}

impl TextCodec {
    pub fn from_gguf(f: &GgufFile) -> Result<TextCodec> {
        let files = slmpack_tokenizer::hf_tokenizer_from_gguf(f)
            .map_err(|e| InferError::Tokenizer(format!("`{}`: {e}", f.path().display())))?;
        let bytes = serde_json::to_vec(&files.tokenizer_json)
            .map_err(|e| InferError::Tokenizer(e.to_string()))?;
        let inner = tokenizers::Tokenizer::from_bytes(&bytes)
            .map_err(|e| InferError::Tokenizer(format!("`{}`: {e}", f.path().display())))?;
        let id = |k: &str| {
            f.get_u64(k)
                .and_then(|v| u32::try_from(v).ok())
                .filter(|&v| (v as usize) < inner.get_vocab_size(true))
        };
        let bos = id("tokenizer.ggml.bos_token_id");
        let eos = id("tokenizer.ggml.eos_token_id");
        let add_bos = f
            .get("tokenizer.ggml.add_bos_token")
            .and_then(|v| v.as_bool())
            .unwrap_or(f.get_str("tokenizer.ggml.model") == Some("llama"))
            && bos.is_some();
        let mut eog: Vec<u32> = [
            eos,
            id("tokenizer.ggml.eot_token_id"),
            id("tokenizer.ggml.eom_token_id"),
        ]
        .into_iter()
        .flatten()
        .collect();
        let types = f
            .get("tokenizer.ggml.token_type")
            .and_then(|v| v.as_array());
        for text in EOG_TEXTS {
            if let Some(t) = inner.token_to_id(text) {
                let control = types
                    .and_then(|(_, a)| a.get(t as usize))
                    .and_then(|v| v.as_i64())
                    .is_none_or(|ty| ty == 3 || ty == 4);
                if control && !eog.contains(&t) {
                    eog.push(t);
                }
            }
        }
        Ok(TextCodec {
            inner,
            bos,
            eos,
            add_bos,
            eog,
            chat_template: f.get_str("tokenizer.chat_template").map(str::to_owned),
        })
    }

    pub fn vocab_size(&self) -> usize {
        self.inner.get_vocab_size(true)
    }

    /// Tokenize `text`, special tokens (`<|im_start|>`, ...) recognized; BOS in front when
    /// `add_bos` and the text does not already start with it.
    pub fn encode(&self, text: &str, add_bos: bool) -> Result<Vec<u32>> {
        let enc = self
            .inner
            .encode(text, false)
            .map_err(|e| InferError::Tokenizer(e.to_string()))?;
        let ids = enc.get_ids();
        let mut out = Vec::with_capacity(ids.len() + 1);
        if let (true, Some(b)) = (add_bos, self.bos) {
            if ids.first() != Some(&b) {
                out.push(b);
            }
        }
        out.extend_from_slice(ids);
        Ok(out)
    }

    /// Text of `ids` (special tokens omitted).
    pub fn decode(&self, ids: &[u32]) -> Result<String> {
        self.inner
            .decode(ids, true)
            .map_err(|e| InferError::Tokenizer(e.to_string()))
    }

    /// The text of one token as stored in the vocabulary (`tokenizer.ggml.tokens`).
    pub fn token_text(&self, id: u32) -> Option<String> {
        self.inner.id_to_token(id)
    }

    pub fn is_eog(&self, id: u32) -> bool {
        self.eog.contains(&id)
    }
}

/// Incremental detokenizer: feed tokens one at a time, get the new text as soon as it is
/// complete. Text is decoded over a short window of recent tokens, so tokens that merge when
/// decoded (byte pieces of one character, SentencePiece spaces) come out right, and nothing is
/// emitted while the window ends in an incomplete UTF-8 sequence.
#[derive(Debug, Default)]
pub struct StreamDecoder {
    ids: Vec<u32>,
    prefix: usize,
    read: usize,
}

impl StreamDecoder {
    pub fn new() -> Self {
        Self::default()
    }

    /// A decoder with room for `n` tokens (so pushing them does not reallocate).
    pub fn with_capacity(n: usize) -> Self {
        StreamDecoder {
            ids: Vec::with_capacity(n),
            ..Self::default()
        }
    }

    /// Add a token; returns the text that became complete (possibly empty).
    pub fn push(&mut self, codec: &TextCodec, id: u32) -> Result<String> {
        self.ids.push(id);
        let prefix_text = codec.decode(&self.ids[self.prefix..self.read])?;
        let text = codec.decode(&self.ids[self.prefix..])?;
        if text.len() > prefix_text.len() && !text.ends_with('\u{FFFD}') {
            let new = match text.get(prefix_text.len()..) {
                Some(s) => s.to_owned(),
                // the window re-decoded differently; emit the part after the common prefix
                None => {
                    let common = prefix_text
                        .char_indices()
                        .zip(text.chars())
                        .take_while(|((_, a), b)| a == b)
                        .last()
                        .map_or(0, |((i, a), _)| i + a.len_utf8());
                    text[common..].to_owned()
                }
            };
            self.prefix = self.read;
            self.read = self.ids.len();
            Ok(new)
        } else {
            Ok(String::new())
        }
    }

    /// Whatever is still held back (an incomplete character at the end), as lossy text.
    pub fn finish(&mut self, codec: &TextCodec) -> Result<String> {
        if self.read == self.ids.len() {
            return Ok(String::new());
        }
        let prefix_text = codec.decode(&self.ids[self.prefix..self.read])?;
        let text = codec.decode(&self.ids[self.prefix..])?;
        self.prefix = self.ids.len();
        self.read = self.ids.len();
        Ok(text.get(prefix_text.len()..).unwrap_or("").to_owned())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use slmpack_gguf::{GgufWriter, Value, ValueType};

    /// A GGUF with only a byte-level vocabulary (256 byte tokens, one merge, 2 specials).
    fn codec() -> TextCodec {
        let mut bs: Vec<u32> = (33..=126).chain(0xA1..=0xAC).chain(0xAE..=0xFF).collect();
        let mut cs = bs.clone();
        let mut n = 0;
        for b in 0..256u32 {
            if !bs.contains(&b) {
                bs.push(b);
                cs.push(256 + n);
                n += 1;
            }
        }
        let mut table = vec![String::new(); 256];
        for (b, c) in bs.iter().zip(cs) {
            table[*b as usize] = char::from_u32(c).unwrap().to_string();
        }
        let mut tokens = table.clone();
        tokens.push("Ġh".into());
        tokens.push("<|im_start|>".into());
        tokens.push("<|im_end|>".into());
        let mut types = vec![Value::I32(1); 257];
        types.extend([Value::I32(3), Value::I32(3)]);
        let mut w = GgufWriter::new();
        w.set("general.architecture", "llama");
        w.set("tokenizer.ggml.model", "gpt2");
        w.set("tokenizer.ggml.pre", "smollm");
        w.set("tokenizer.ggml.tokens", Value::strings(tokens));
        w.set(
            "tokenizer.ggml.token_type",
            Value::array(ValueType::I32, types),
        );
        w.set("tokenizer.ggml.merges", Value::strings(["Ġ h"]));
        w.set("tokenizer.ggml.bos_token_id", 257u32);
        w.set("tokenizer.ggml.eos_token_id", 258u32);
        w.set("tokenizer.ggml.add_bos_token", true);
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("vocab.gguf");
        w.write(&p, |_, _, _| -> std::io::Result<()> { Ok(()) })
            .unwrap();
        let f = GgufFile::open(&p).unwrap();
        TextCodec::from_gguf(&f).unwrap()
    }

    #[test]
    fn encodes_bytes_merges_and_special_tokens() {
        let c = codec();
        // "a h" -> a, Ġh (merged); specials are recognized; BOS added once
        let ids = c.encode("a h", true).unwrap();
        assert_eq!(ids, vec![257, b'a' as u32, 256]);
        let ids = c.encode("<|im_start|>x<|im_end|>", false).unwrap();
        assert_eq!(ids.first(), Some(&257));
        assert_eq!(ids.last(), Some(&258));
        assert!(c.is_eog(258) && !c.is_eog(257));
        assert_eq!(
            c.decode(&c.encode("héllo 🦀", false).unwrap()).unwrap(),
            "héllo 🦀"
        );
    }

    #[test]
    fn stream_decoder_never_splits_a_character() {
        let c = codec();
        let text = "é🦀 h日本";
        let ids = c.encode(text, false).unwrap();
        assert!(
            ids.len() > text.chars().count(),
            "multi-byte characters are several tokens"
        );
        let mut d = StreamDecoder::new();
        let mut out = String::new();
        let mut pieces = Vec::new();
        for &id in &ids {
            let p = d.push(&c, id).unwrap();
            assert!(!p.contains('\u{FFFD}'), "{p:?}");
            if !p.is_empty() {
                pieces.push(p.clone());
            }
            out.push_str(&p);
        }
        out.push_str(&d.finish(&c).unwrap());
        assert_eq!(out, text);
        // é (2 bytes) and 🦀 (4 bytes) each come out whole, once complete
        assert_eq!(pieces[0], "é");
        assert_eq!(pieces[1], "🦀");
        // an incomplete character at the end is flushed lossily by finish()
        let mut d = StreamDecoder::new();
        let crab = c.encode("🦀", false).unwrap();
        assert_eq!(d.push(&c, crab[0]).unwrap(), "");
        assert_eq!(d.finish(&c).unwrap(), "\u{FFFD}");
    }
}
