//! GGUF `tokenizer.*` metadata → Hugging Face tokenizer.json + tokenizer_config.json.
//!
//! The goal is equal tokenization: Hugging Face `tokenizers` loading the result encodes text to
//! the same ids llama.cpp produces from the GGUF (with special-token parsing on). For byte-level
//! BPE that means the same vocabulary and merges, llama.cpp's pre-tokenizer for the GGUF's `pre`
//! expressed as Hugging Face pre-tokenizers, and CONTROL / USER_DEFINED tokens as added tokens.

use serde_json::{json, Map, Value as Json};
use slmpack_gguf::{GgufFile, Value};

use crate::error::TokenizerError;
use crate::{keys, pre, TokenType, MAX_MERGES, MAX_VOCAB};

/// The two files a Hugging Face tokenizer is saved as.
#[derive(Clone, Debug)]
pub struct HfTokenizerFiles {
    pub tokenizer_json: Json,
    pub tokenizer_config_json: Json,
}

/// Rebuild tokenizer.json and tokenizer_config.json from a GGUF's metadata.
pub fn hf_tokenizer_from_gguf(f: &GgufFile) -> Result<HfTokenizerFiles, TokenizerError> {
    hf_tokenizer_from_metadata(&f.metadata)
}

struct Meta<'a> {
    kv: &'a [(String, Value)],
}

const FILE: &str = "GGUF metadata";

impl<'a> Meta<'a> {
    fn get(&self, key: &str) -> Option<&'a Value> {
        self.kv.iter().find(|(k, _)| k == key).map(|(_, v)| v)
    }

    fn str(&self, key: &str) -> Result<Option<&'a str>, TokenizerError> {
        match self.get(key) {
            None => Ok(None),
            Some(v) => v.as_str().map(Some).ok_or_else(|| {
                TokenizerError::field(
                    FILE,
                    key,
                    format!("is {}, not a string", v.value_type().name()),
                    "",
                )
            }),
        }
    }

    fn u32(&self, key: &str) -> Result<Option<u32>, TokenizerError> {
        match self.get(key) {
            None => Ok(None),
            Some(v) => v
                .as_u64()
                .and_then(|x| u32::try_from(x).ok())
                .map(Some)
                .ok_or_else(|| TokenizerError::field(FILE, key, "is not a token id", "")),
        }
    }

    fn bool(&self, key: &str) -> Result<Option<bool>, TokenizerError> {
        match self.get(key) {
            None => Ok(None),
            Some(v) => v
                .as_bool()
                .map(Some)
                .ok_or_else(|| TokenizerError::field(FILE, key, "is not a bool", "")),
        }
    }

    fn array(&self, key: &str, max: usize) -> Result<Option<&'a [Value]>, TokenizerError> {
        match self.get(key) {
            None => Ok(None),
            Some(v) => {
                let (_, items) = v
                    .as_array()
                    .ok_or_else(|| TokenizerError::field(FILE, key, "is not an array", ""))?;
                if items.len() > max {
                    return Err(TokenizerError::field(
                        FILE,
                        key,
                        format!("has {} entries, more than the limit of {max}", items.len()),
                        "",
                    ));
                }
                Ok(Some(items))
            }
        }
    }

    fn strings(&self, key: &str, max: usize) -> Result<Option<Vec<&'a str>>, TokenizerError> {
        let Some(items) = self.array(key, max)? else {
            return Ok(None);
        };
        items
            .iter()
            .enumerate()
            .map(|(i, v)| {
                v.as_str().ok_or_else(|| {
                    TokenizerError::field(FILE, format!("{key}[{i}]"), "is not a string", "")
                })
            })
            .collect::<Result<Vec<_>, _>>()
            .map(Some)
    }
}

/// A special token as both files describe it.
fn added_token_json(id: usize, content: &str, special: bool) -> Json {
    json!({
        "id": id,
        "content": content,
        "single_word": false,
        "lstrip": false,
        "rstrip": false,
        "normalized": false,
        "special": special,
    })
}

/// Like [`hf_tokenizer_from_gguf`], from metadata key/value pairs.
pub fn hf_tokenizer_from_metadata(
    kv: &[(String, Value)],
) -> Result<HfTokenizerFiles, TokenizerError> {
    let m = Meta { kv };
    let model = m.str(keys::MODEL)?.ok_or_else(|| {
        TokenizerError::field(
            FILE,
            keys::MODEL,
            "is missing",
            "this GGUF carries no tokenizer; export needs one",
        )
    })?;
    if model != "gpt2" {
        return Err(TokenizerError::Unsupported {
            file: FILE.into(),
            what: format!("`{}` is {model:?}", keys::MODEL),
            hint: "slmpack exports byte-level BPE (\"gpt2\") tokenizers; SentencePiece (\"llama\") export is not implemented".into(),
        });
    }
    let pre_name = m.str(keys::PRE)?.unwrap_or("default");
    let (pre_tokenizer, ignore_merges) =
        pre::hf_pre_tokenizer(pre_name).ok_or_else(|| TokenizerError::Unsupported {
            file: FILE.into(),
            what: format!("`{}` is {pre_name:?}", keys::PRE),
            hint: format!(
                "slmpack can express these llama.cpp pre-tokenizers for Hugging Face: {}",
                pre::WRITABLE_PRES
            ),
        })?;

    let tokens = m
        .strings(keys::TOKENS, MAX_VOCAB)?
        .ok_or_else(|| TokenizerError::field(FILE, keys::TOKENS, "is missing", ""))?;
    if tokens.is_empty() {
        return Err(TokenizerError::field(FILE, keys::TOKENS, "is empty", ""));
    }
    let types: Vec<TokenType> = match m.array(keys::TOKEN_TYPE, MAX_VOCAB)? {
        None => vec![TokenType::Normal; tokens.len()],
        Some(items) => {
            if items.len() != tokens.len() {
                return Err(TokenizerError::field(
                    FILE,
                    keys::TOKEN_TYPE,
                    format!(
                        "has {} entries but there are {} tokens",
                        items.len(),
                        tokens.len()
                    ),
                    "",
                ));
            }
            items
                .iter()
                .enumerate()
                .map(|(i, v)| {
                    v.as_i64().and_then(TokenType::from_i64).ok_or_else(|| {
                        TokenizerError::field(
                            FILE,
                            format!("{}[{i}]", keys::TOKEN_TYPE),
                            format!("is {v}, not a token type 1..=6"),
                            "",
                        )
                    })
                })
                .collect::<Result<_, _>>()?
        }
    };
    let merges = m.strings(keys::MERGES, MAX_MERGES)?.ok_or_else(|| {
        TokenizerError::field(
            FILE,
            keys::MERGES,
            "is missing",
            "a byte-level BPE tokenizer needs its merges",
        )
    })?;

    // vocabulary: every token at its id (first one wins where two ids share a text)
    let mut vocab = Map::with_capacity(tokens.len());
    for (i, t) in tokens.iter().enumerate() {
        if !vocab.contains_key(*t) {
            vocab.insert((*t).to_string(), json!(i));
        }
    }
    let mut pairs: Vec<(&str, &str)> = Vec::with_capacity(merges.len());
    for (i, mg) in merges.iter().enumerate() {
        // llama.cpp splits at the first space after the first character
        let split = mg
            .char_indices()
            .skip(1)
            .find(|(_, c)| *c == ' ')
            .map(|(p, _)| p);
        let Some(p) = split else {
            return Err(TokenizerError::field(
                FILE,
                format!("{}[{i}]", keys::MERGES),
                format!("is {mg:?}, not \"a b\""),
                "",
            ));
        };
        let (a, b) = (&mg[..p], &mg[p + 1..]);
        for part in [a, b, &format!("{a}{b}")] {
            if !vocab.contains_key(part) {
                return Err(TokenizerError::field(
                    FILE,
                    format!("{}[{i}]", keys::MERGES),
                    format!("({mg:?}) uses {part:?}, which is not in `{}`", keys::TOKENS),
                    "",
                ));
            }
        }
        pairs.push((a, b));
    }
    let any_space = pairs
        .iter()
        .any(|(a, b)| a.contains(' ') || b.contains(' '));
    let merges_json: Vec<Json> = pairs
        .iter()
        .map(|(a, b)| {
            if any_space {
                json!([a, b])
            } else {
                json!(format!("{a} {b}"))
            }
        })
        .collect();

    let n = tokens.len();
    let id_of = |key: &str| -> Result<Option<usize>, TokenizerError> {
        match m.u32(key)? {
            Some(id) if (id as usize) < n => Ok(Some(id as usize)),
            Some(id) => Err(TokenizerError::field(
                FILE,
                key,
                format!("is {id}, past the last token id {}", n - 1),
                "",
            )),
            None => Ok(None),
        }
    };
    let bos = id_of(keys::BOS_ID)?;
    let eos = id_of(keys::EOS_ID)?;
    let unk = id_of(keys::UNK_ID)?;
    let pad = id_of(keys::PAD_ID)?;
    let sep = id_of(keys::SEP_ID)?;
    let mask = id_of(keys::MASK_ID)?;
    let add_bos = m.bool(keys::ADD_BOS)?.unwrap_or(false) && bos.is_some();
    let add_eos = m.bool(keys::ADD_EOS)?.unwrap_or(false) && eos.is_some();

    let mut added_tokens = Vec::new();
    let mut decoder_map = Map::new();
    for (i, (t, ty)) in tokens.iter().zip(&types).enumerate() {
        let special = match ty {
            TokenType::Control | TokenType::Unknown => true,
            TokenType::UserDefined => false,
            _ => continue,
        };
        added_tokens.push(added_token_json(i, t, special));
        decoder_map.insert(
            i.to_string(),
            json!({"content": t, "lstrip": false, "normalized": false, "rstrip": false, "single_word": false, "special": special}),
        );
    }

    let byte_level_pp = json!({"type": "ByteLevel", "add_prefix_space": true, "trim_offsets": false, "use_regex": true});
    let post_processor = if add_bos || add_eos {
        let sp = |id: usize, type_id: u32| json!({"SpecialToken": {"id": tokens[id], "type_id": type_id}});
        let seq = |name: &str, type_id: u32| json!({"Sequence": {"id": name, "type_id": type_id}});
        let mut single = Vec::new();
        let mut pair = Vec::new();
        let mut specials = Map::new();
        for (which, type_id) in [("A", 0u32), ("B", 1u32)] {
            if let (true, Some(b)) = (add_bos, bos) {
                if which == "A" {
                    single.push(sp(b, 0));
                }
                pair.push(sp(b, type_id));
                specials.insert(
                    tokens[b].to_string(),
                    json!({"id": tokens[b], "ids": [b], "tokens": [tokens[b]]}),
                );
            }
            if which == "A" {
                single.push(seq("A", 0));
            }
            pair.push(seq(which, type_id));
            if let (true, Some(e)) = (add_eos, eos) {
                if which == "A" {
                    single.push(sp(e, 0));
                }
                pair.push(sp(e, type_id));
                specials.insert(
                    tokens[e].to_string(),
                    json!({"id": tokens[e], "ids": [e], "tokens": [tokens[e]]}),
                );
            }
        }
        json!({"type": "Sequence", "processors": [
            byte_level_pp,
            {"type": "TemplateProcessing", "single": single, "pair": pair, "special_tokens": specials},
        ]})
    } else {
        byte_level_pp
    };

    let tokenizer_json = json!({
        "version": "1.0",
        "truncation": null,
        "padding": null,
        "added_tokens": added_tokens,
        "normalizer": null,
        "pre_tokenizer": pre_tokenizer,
        "post_processor": post_processor,
        "decoder": {"type": "ByteLevel", "add_prefix_space": true, "trim_offsets": true, "use_regex": true},
        "model": {
            "type": "BPE",
            "dropout": null,
            "unk_token": null,
            "continuing_subword_prefix": null,
            "end_of_word_suffix": null,
            "fuse_unk": false,
            "byte_fallback": false,
            "ignore_merges": ignore_merges,
            "vocab": vocab,
            "merges": merges_json,
        },
    });

    let mut tc = Map::new();
    tc.insert("add_bos_token".into(), json!(add_bos));
    tc.insert("add_eos_token".into(), json!(add_eos));
    if let Some(b) = m.bool(keys::ADD_SPACE_PREFIX)? {
        tc.insert("add_prefix_space".into(), json!(b));
    }
    tc.insert("added_tokens_decoder".into(), Json::Object(decoder_map));
    for (name, id) in [
        ("bos_token", bos),
        ("eos_token", eos),
        ("unk_token", unk),
        ("pad_token", pad),
        ("sep_token", sep),
        ("mask_token", mask),
    ] {
        if let Some(id) = id {
            tc.insert(name.into(), json!(tokens[id]));
        }
    }
    if let Some(t) = chat_template(&m)? {
        tc.insert("chat_template".into(), t);
    }
    tc.insert("clean_up_tokenization_spaces".into(), json!(false));
    if let Some(arch) = m.str("general.architecture")? {
        if let Some(ctx) = m
            .get(&format!("{arch}.context_length"))
            .and_then(Value::as_u64)
        {
            tc.insert("model_max_length".into(), json!(ctx));
        }
    }
    tc.insert("tokenizer_class".into(), json!("PreTrainedTokenizerFast"));

    Ok(HfTokenizerFiles {
        tokenizer_json,
        tokenizer_config_json: Json::Object(tc),
    })
}

fn chat_template(m: &Meta<'_>) -> Result<Option<Json>, TokenizerError> {
    let default = m.str(keys::CHAT_TEMPLATE)?;
    let names = m.strings(keys::CHAT_TEMPLATES, 1024)?.unwrap_or_default();
    if names.is_empty() {
        return Ok(default.map(|s| json!(s)));
    }
    let mut list = Vec::new();
    if let Some(d) = default {
        list.push(json!({"name": "default", "template": d}));
    }
    for n in names {
        let key = format!("{}.{n}", keys::CHAT_TEMPLATE);
        if let Some(t) = m.str(&key)? {
            list.push(json!({"name": n, "template": t}));
        }
    }
    Ok(Some(Json::Array(list)))
}
