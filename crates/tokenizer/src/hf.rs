//! Hugging Face checkpoint folder → GGUF `tokenizer.*` metadata, following llama.cpp's
//! `convert_hf_to_gguf.py` (`get_vocab_base`, `_set_vocab_gpt2`, `LlamaHfVocab`) and gguf-py's
//! `SpecialVocab`.

use std::collections::{BTreeMap, HashMap};
use std::fs;
use std::path::{Path, PathBuf};

use serde_json::Value as Json;
use slmpack_gguf::{Value, ValueType};

use crate::error::TokenizerError;
use crate::pre;
use crate::{
    keys, TokenType, MAX_CONFIG_JSON_BYTES, MAX_MERGES, MAX_TOKENIZER_JSON_BYTES, MAX_VOCAB,
};

/// Options for [`gguf_metadata_from_hf`].
#[derive(Clone, Debug, Default)]
pub struct HfTokenizerOptions {
    /// `vocab_size` from config.json: the token list is padded with `[PAD{i}]` up to it.
    pub vocab_size: Option<usize>,
    /// Force `tokenizer.ggml.pre` instead of detecting it.
    pub pre_override: Option<String>,
}

/// Read a file, refusing it before reading when it is larger than `max` bytes.
pub(crate) fn read_capped(path: &Path, max: u64) -> Result<Vec<u8>, TokenizerError> {
    let io = |source| TokenizerError::Io {
        path: path.to_path_buf(),
        source,
    };
    let size = fs::metadata(path).map_err(io)?.len();
    if size > max {
        return Err(TokenizerError::TooLarge {
            path: path.to_path_buf(),
            size,
            max,
            hint: String::new(),
        });
    }
    fs::read(path).map_err(io)
}

fn parse_json(path: &Path, bytes: &[u8]) -> Result<Json, TokenizerError> {
    serde_json::from_slice(bytes).map_err(|source| TokenizerError::Json {
        path: path.to_path_buf(),
        source,
    })
}

/// An optional JSON object file next to tokenizer.json; a present but broken file is an error.
fn optional_json(dir: &Path, name: &str) -> Result<Option<Json>, TokenizerError> {
    let path = dir.join(name);
    if !path.is_file() {
        return Ok(None);
    }
    let bytes = read_capped(&path, MAX_CONFIG_JSON_BYTES)?;
    let v = parse_json(&path, &bytes)?;
    if !v.is_object() {
        return Err(TokenizerError::field(
            name,
            "(top level)",
            "is not a JSON object",
            "",
        ));
    }
    Ok(Some(v))
}

/// Which flavour of BPE tokenizer.json this is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Flavor {
    /// Byte-level BPE (GPT-2 style): `tokenizer.ggml.model = "gpt2"`.
    ByteLevel,
    /// SentencePiece-style BPE with byte fallback (Llama 2, TinyLlama): `"llama"`.
    SentencePiece,
}

fn mentions_type(v: &Json, t: &str) -> bool {
    match v {
        Json::Object(m) => {
            m.get("type").and_then(Json::as_str) == Some(t)
                || m.values().any(|x| mentions_type(x, t))
        }
        Json::Array(a) => a.iter().any(|x| mentions_type(x, t)),
        _ => false,
    }
}

struct AddedToken {
    id: usize,
    content: String,
    special: bool,
}

/// The parts of tokenizer.json the conversion uses, validated.
struct Parsed {
    flavor: Flavor,
    /// id → token text from `model.vocab`
    vocab: BTreeMap<usize, String>,
    added: Vec<AddedToken>,
    merges: Vec<String>,
    /// each merge as its two parts (for scores of SentencePiece-style vocabularies)
    merge_pairs: Vec<(String, String)>,
    max_id: Option<usize>,
}

const TJ: &str = "tokenizer.json";

fn parse_tokenizer_json(tj: &Json) -> Result<Parsed, TokenizerError> {
    let model = tj
        .get("model")
        .filter(|m| m.is_object())
        .ok_or_else(|| TokenizerError::field(TJ, "model", "is missing or not an object", ""))?;
    let mtype = model.get("type").and_then(Json::as_str).unwrap_or("");
    // Old files may omit `type` for BPE; they always carry `merges`.
    let is_bpe = mtype == "BPE" || (mtype.is_empty() && model.get("merges").is_some());
    if !is_bpe {
        return Err(TokenizerError::Unsupported {
            file: TJ.into(),
            what: format!(
                "`model.type` is {}",
                if mtype.is_empty() { "missing" } else { mtype }
            ),
            hint: "slmpack converts BPE tokenizers (byte-level GPT-2 style and SentencePiece-style Llama); convert Unigram/WordPiece models with llama.cpp's convert_hf_to_gguf.py".into(),
        });
    }
    let byte_fallback = model
        .get("byte_fallback")
        .and_then(Json::as_bool)
        .unwrap_or(false);
    let pre_tok = tj.get("pre_tokenizer").unwrap_or(&Json::Null);
    let decoder = tj.get("decoder").unwrap_or(&Json::Null);
    let flavor = if mentions_type(pre_tok, "ByteLevel") || mentions_type(decoder, "ByteLevel") {
        Flavor::ByteLevel
    } else if byte_fallback {
        Flavor::SentencePiece
    } else {
        return Err(TokenizerError::Unsupported {
            file: TJ.into(),
            what: "a BPE model that is neither byte-level (no `ByteLevel` pre-tokenizer or decoder) nor SentencePiece-style (`byte_fallback` is false)".into(),
            hint: "pass a GPT-2 style or Llama-style tokenizer.json".into(),
        });
    };

    let vocab_obj = model
        .get("vocab")
        .and_then(Json::as_object)
        .ok_or_else(|| {
            TokenizerError::field(TJ, "model.vocab", "is missing or not an object", "")
        })?;
    if vocab_obj.len() > MAX_VOCAB {
        return Err(TokenizerError::field(
            TJ,
            "model.vocab",
            format!(
                "has {} entries, more than the limit of {MAX_VOCAB}",
                vocab_obj.len()
            ),
            "",
        ));
    }
    let mut vocab = BTreeMap::new();
    let mut max_id: Option<usize> = None;
    let check_id = |field: &str, tok: &str, v: Option<u64>| -> Result<usize, TokenizerError> {
        match v {
            Some(id) if (id as usize) < MAX_VOCAB => Ok(id as usize),
            Some(id) => Err(TokenizerError::field(
                TJ,
                field,
                format!("gives token {tok:?} id {id}, more than the limit of {MAX_VOCAB}"),
                "",
            )),
            None => Err(TokenizerError::field(
                TJ,
                field,
                format!("gives token {tok:?} an id that is not a non-negative integer"),
                "",
            )),
        }
    };
    for (tok, id) in vocab_obj {
        let id = check_id("model.vocab", tok, id.as_u64())?;
        max_id = Some(max_id.map_or(id, |m| m.max(id)));
        vocab.entry(id).or_insert_with(|| tok.clone());
    }

    let mut added = Vec::new();
    if let Some(list) = tj.get("added_tokens").filter(|v| !v.is_null()) {
        let list = list
            .as_array()
            .ok_or_else(|| TokenizerError::field(TJ, "added_tokens", "is not an array", ""))?;
        if list.len() > MAX_VOCAB {
            return Err(TokenizerError::field(
                TJ,
                "added_tokens",
                format!(
                    "has {} entries, more than the limit of {MAX_VOCAB}",
                    list.len()
                ),
                "",
            ));
        }
        for (i, t) in list.iter().enumerate() {
            let field = format!("added_tokens[{i}]");
            let content = t.get("content").and_then(Json::as_str).ok_or_else(|| {
                TokenizerError::field(
                    TJ,
                    format!("{field}.content"),
                    "is missing or not a string",
                    "",
                )
            })?;
            let id = check_id(
                &format!("{field}.id"),
                content,
                t.get("id").and_then(Json::as_u64),
            )?;
            max_id = Some(max_id.map_or(id, |m| m.max(id)));
            added.push(AddedToken {
                id,
                content: content.to_string(),
                special: t.get("special").and_then(Json::as_bool).unwrap_or(false),
            });
        }
    }

    let mut merges = Vec::new();
    let mut merge_pairs = Vec::new();
    match model.get("merges") {
        None | Some(Json::Null) => {}
        Some(Json::Array(list)) => {
            if list.len() > MAX_MERGES {
                return Err(TokenizerError::field(
                    TJ,
                    "model.merges",
                    format!(
                        "has {} entries, more than the limit of {MAX_MERGES}",
                        list.len()
                    ),
                    "",
                ));
            }
            merges.reserve(list.len());
            for (i, m) in list.iter().enumerate() {
                let bad = || {
                    TokenizerError::field(
                        TJ,
                        format!("model.merges[{i}]"),
                        "is neither a string \"a b\" nor a pair [\"a\", \"b\"]",
                        "",
                    )
                };
                let (a, b) = match m {
                    Json::String(s) => {
                        let mut it = s.split(' ');
                        match (it.next(), it.next(), it.next()) {
                            (Some(a), Some(b), None) if !a.is_empty() && !b.is_empty() => {
                                (a.to_string(), b.to_string())
                            }
                            _ => return Err(bad()),
                        }
                    }
                    Json::Array(p) if p.len() == 2 => match (p[0].as_str(), p[1].as_str()) {
                        (Some(a), Some(b)) => (a.to_string(), b.to_string()),
                        _ => return Err(bad()),
                    },
                    _ => return Err(bad()),
                };
                // gguf-py writes a space inside a part as U+0120 so "a b" stays splittable
                let enc = |s: &str| s.replace(' ', "\u{0120}");
                merges.push(format!("{} {}", enc(&a), enc(&b)));
                merge_pairs.push((a, b));
            }
        }
        Some(_) => {
            return Err(TokenizerError::field(
                TJ,
                "model.merges",
                "is not an array",
                "",
            ));
        }
    }

    Ok(Parsed {
        flavor,
        vocab,
        added,
        merges,
        merge_pairs,
        max_id,
    })
}

/// llama.cpp's `does_token_look_special`.
fn looks_special(t: &str) -> bool {
    matches!(t, "<pad>" | "<mask>" | "<2mass>" | "[@BOS@]")
        || (t.starts_with("<|") && t.ends_with("|>"))
        || (t.starts_with("<\u{FF5C}") && t.ends_with("\u{FF5C}>"))
        || (t.starts_with("<unused") && t.ends_with('>'))
}

fn is_byte_token(t: &str) -> bool {
    let b = t.as_bytes();
    b.len() == 6
        && t.starts_with("<0x")
        && t.ends_with('>')
        && b[3].is_ascii_hexdigit()
        && b[4].is_ascii_hexdigit()
}

/// The special-token part of gguf-py's `SpecialVocab`.
struct Specials {
    ids: Vec<(&'static str, u32)>,
    add: Vec<(&'static str, bool)>,
}

fn token_content(v: Option<&Json>) -> Option<&str> {
    match v? {
        Json::String(s) => Some(s),
        Json::Object(o) => o.get("content")?.as_str(),
        _ => None,
    }
}

fn special_vocab(
    tj: &Json,
    added: &[AddedToken],
    tc: Option<&Json>,
    side: &[Json],
    n_vocab: usize,
) -> Specials {
    let mut types: Vec<&'static str> = vec!["bos", "eos", "unk", "sep", "pad", "cls", "mask"];
    // the `{typ}_token` strings, from tokenizer_config.json (falling back to special_tokens_map.json)
    let mut names: HashMap<&'static str, String> = HashMap::new();
    for t in ["bos", "eos", "unk", "sep", "pad", "cls", "mask"] {
        let key = format!("{t}_token");
        if let Some(c) = tc
            .and_then(|c| token_content(c.get(&key)))
            .or_else(|| side.iter().find_map(|j| token_content(j.get(&key))))
        {
            names.insert(t, c.to_string());
        }
    }
    let have_tc = tc.is_some();
    if !names.contains_key("bos") {
        if let Some(c) = names.get("cls").cloned() {
            names.insert("bos", c);
        }
    }
    if !names.contains_key("eos") {
        if let Some(c) = names.get("sep").cloned() {
            names.insert("eos", c);
        }
    }
    let mut add: Vec<(&'static str, bool)> = Vec::new();
    let set_add = |add: &mut Vec<(&'static str, bool)>, k: &'static str, v: bool| {
        if let Some(e) = add.iter_mut().find(|(t, _)| *t == k) {
            e.1 = v;
        } else {
            add.push((k, v));
        }
    };
    if let Some(pp) = tj.get("post_processor").filter(|p| p.is_object()) {
        let procs: Vec<&Json> = match pp.get("processors").and_then(Json::as_array) {
            Some(a) => a.iter().collect(),
            None => vec![pp],
        };
        for p in procs {
            match p.get("type").and_then(Json::as_str) {
                Some("RobertaProcessing") => {
                    set_add(&mut add, "bos", true);
                    set_add(&mut add, "eos", true);
                    set_add(&mut add, "sep", true);
                }
                Some("TemplateProcessing") => {
                    let single = p
                        .get("single")
                        .and_then(Json::as_array)
                        .cloned()
                        .unwrap_or_default();
                    if single.len() > 1 {
                        let sp = |j: &Json| {
                            j.get("SpecialToken")
                                .and_then(|s| s.get("id"))
                                .and_then(Json::as_str)
                                .map(str::to_string)
                        };
                        if let Some(first) = sp(&single[0]) {
                            if !have_tc {
                                names.insert("bos", first.clone());
                            }
                            let is_bos = Some(&first) == names.get("bos")
                                || Some(&first) == names.get("cls");
                            set_add(&mut add, "bos", is_bos);
                        }
                        if let Some(last) = sp(&single[single.len() - 1]) {
                            if !have_tc {
                                names.insert("eos", last.clone());
                            } else if Some(&last) != names.get("eos") {
                                // the config's eos becomes eot (or eom), the template's wins as eos
                                if let Some(old) = names.get("eos").cloned() {
                                    if !types.contains(&"eot") {
                                        types.push("eot");
                                        names.insert("eot", old);
                                    } else if !types.contains(&"eom") {
                                        types.push("eom");
                                        names.insert("eom", old);
                                    }
                                }
                                names.insert("eos", last.clone());
                            }
                            set_add(&mut add, "eos", Some(&last) == names.get("eos"));
                        }
                    }
                }
                _ => {}
            }
        }
    }
    // explicit add_{typ}_token in tokenizer_config.json wins
    if let Some(tc) = tc {
        for t in types.iter().copied() {
            if let Some(b) = tc.get(format!("add_{t}_token")).and_then(Json::as_bool) {
                set_add(&mut add, t, b);
            }
        }
    }

    let mut ids: Vec<(&'static str, u32)> = Vec::new();
    for t in types.iter().copied() {
        if let Some(name) = names.get(t) {
            if let Some(a) = added.iter().find(|a| &a.content == name) {
                if a.id < n_vocab {
                    ids.push((t, a.id as u32));
                }
            }
        }
    }
    // config.json / generation_config.json `{typ}_token_id` for types still unset
    for j in side {
        for t in types.iter().copied() {
            if ids.iter().any(|(k, _)| *k == t) {
                continue;
            }
            let v = j.get(format!("{t}_token_id")).or_else(|| {
                j.get("text_config")
                    .and_then(|c| c.get(format!("{t}_token_id")))
            });
            if let Some(id) = v.and_then(Json::as_u64) {
                if (id as usize) < n_vocab {
                    ids.push((t, id as u32));
                }
            }
        }
    }
    Specials { ids, add }
}

fn chat_template(dir: &Path, tc: Option<&Json>) -> Result<Vec<(String, Value)>, TokenizerError> {
    let mut out = Vec::new();
    let mut tmpl = tc.and_then(|c| c.get("chat_template")).cloned();
    if tmpl.is_none() {
        let jinja = dir.join("chat_template.jinja");
        if jinja.is_file() {
            let bytes = read_capped(&jinja, MAX_CONFIG_JSON_BYTES)?;
            let s = String::from_utf8(bytes).map_err(|_| {
                TokenizerError::field("chat_template.jinja", "(text)", "is not UTF-8", "")
            })?;
            tmpl = Some(Json::String(s));
        } else if let Some(j) = optional_json(dir, "chat_template.json")? {
            tmpl = j.get("chat_template").cloned();
        }
    }
    match tmpl {
        None | Some(Json::Null) => {}
        Some(Json::String(s)) => out.push((keys::CHAT_TEMPLATE.to_string(), Value::String(s))),
        Some(Json::Array(list)) => {
            let mut names = Vec::new();
            let mut default = None;
            for (i, c) in list.iter().enumerate() {
                let name = c.get("name").and_then(Json::as_str);
                let t = c.get("template").and_then(Json::as_str);
                let (Some(name), Some(t)) = (name, t) else {
                    return Err(TokenizerError::field(
                        "tokenizer_config.json",
                        format!("chat_template[{i}]"),
                        "needs string fields `name` and `template`",
                        "",
                    ));
                };
                let name: String = name
                    .chars()
                    .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
                    .collect();
                if name.is_empty() {
                    continue;
                }
                if name == "default" {
                    default = Some(t.to_string());
                } else {
                    out.push((
                        format!("{}.{name}", keys::CHAT_TEMPLATE),
                        Value::String(t.to_string()),
                    ));
                    names.push(name);
                }
            }
            if !names.is_empty() {
                out.push((keys::CHAT_TEMPLATES.to_string(), Value::strings(names)));
            }
            if let Some(d) = default {
                out.push((keys::CHAT_TEMPLATE.to_string(), Value::String(d)));
            }
        }
        Some(_) => {
            return Err(TokenizerError::field(
                "tokenizer_config.json",
                "chat_template",
                "is neither a string nor a list of {name, template}",
                "",
            ))
        }
    }
    Ok(out)
}

/// Read tokenizer.json (+ tokenizer_config.json, and when present special_tokens_map.json,
/// config.json, generation_config.json, chat_template.jinja) from a Hugging Face checkpoint folder
/// and produce the GGUF `tokenizer.*` metadata llama.cpp expects.
pub fn gguf_metadata_from_hf(
    dir: &Path,
    opts: &HfTokenizerOptions,
) -> Result<Vec<(String, Value)>, TokenizerError> {
    let tj_path: PathBuf = dir.join(TJ);
    if !tj_path.is_file() {
        return Err(TokenizerError::MissingTokenizerJson {
            dir: dir.to_path_buf(),
            hint: if dir.join("tokenizer.model").is_file() {
                "only `tokenizer.model` (SentencePiece) is here; save a fast tokenizer with `AutoTokenizer.from_pretrained(dir).save_pretrained(dir)`".into()
            } else {
                "a Hugging Face checkpoint needs `tokenizer.json`; save it with `AutoTokenizer.from_pretrained(...).save_pretrained(dir)`".into()
            },
        });
    }
    let tj_bytes = read_capped(&tj_path, MAX_TOKENIZER_JSON_BYTES)?;
    let tj = parse_json(&tj_path, &tj_bytes)?;
    if !tj.is_object() {
        return Err(TokenizerError::field(
            TJ,
            "(top level)",
            "is not a JSON object",
            "",
        ));
    }
    let tc = optional_json(dir, "tokenizer_config.json")?;
    let mut side = Vec::new();
    for name in [
        "special_tokens_map.json",
        "config.json",
        "generation_config.json",
    ] {
        if let Some(j) = optional_json(dir, name)? {
            side.push(j);
        }
    }

    let p = parse_tokenizer_json(&tj)?;
    let needed = p.max_id.map_or(0, |m| m + 1);
    let n_vocab = match opts.vocab_size {
        Some(n) if n > MAX_VOCAB => {
            return Err(TokenizerError::field(
                "config.json",
                "vocab_size",
                format!("is {n}, more than the limit of {MAX_VOCAB}"),
                "",
            ))
        }
        Some(n) if n < needed => {
            return Err(TokenizerError::field(
                "config.json",
                "vocab_size",
                format!("is {n} but `tokenizer.json` has token id {}", needed - 1),
                "the checkpoint's config.json and tokenizer.json disagree; fix `vocab_size`",
            ))
        }
        Some(n) => n,
        None => needed,
    };
    if n_vocab == 0 {
        return Err(TokenizerError::field(TJ, "model.vocab", "is empty", ""));
    }

    let added_by_id: HashMap<usize, &AddedToken> = p.added.iter().map(|a| (a.id, a)).collect();
    let tc_ref = tc.as_ref();
    let specials = special_vocab(&tj, &p.added, tc_ref, &side, n_vocab);
    let unk_id = specials
        .ids
        .iter()
        .find(|(t, _)| *t == "unk")
        .map(|(_, i)| *i as usize);

    let mut tokens: Vec<String> = Vec::with_capacity(n_vocab);
    let mut types: Vec<TokenType> = Vec::with_capacity(n_vocab);
    for i in 0..n_vocab {
        let (tok, ty) = match (added_by_id.get(&i), p.vocab.get(&i)) {
            (Some(a), _) => {
                if a.special || looks_special(&a.content) {
                    (a.content.clone(), TokenType::Control)
                } else {
                    (a.content.replace('\u{2581}', " "), TokenType::UserDefined)
                }
            }
            (None, Some(t)) => {
                let ty = match p.flavor {
                    Flavor::SentencePiece if is_byte_token(t) => TokenType::Byte,
                    Flavor::SentencePiece if Some(i) == unk_id => TokenType::Unknown,
                    _ => TokenType::Normal,
                };
                (t.clone(), ty)
            }
            (None, None) => (format!("[PAD{i}]"), TokenType::Unused),
        };
        tokens.push(tok);
        types.push(ty);
    }

    let mut out: Vec<(String, Value)> = Vec::new();
    match p.flavor {
        Flavor::ByteLevel => {
            let pre = match &opts.pre_override {
                Some(s) => s.clone(),
                None => detect_pre(&tj, &tj_bytes)?,
            };
            out.push((keys::MODEL.into(), Value::from("gpt2")));
            out.push((keys::PRE.into(), Value::String(pre)));
        }
        Flavor::SentencePiece => {
            out.push((keys::MODEL.into(), Value::from("llama")));
            out.push((keys::PRE.into(), Value::from("default")));
        }
    }
    out.push((keys::TOKENS.into(), Value::strings(tokens.iter().cloned())));
    if p.flavor == Flavor::SentencePiece {
        out.push((
            keys::SCORES.into(),
            spm_scores(&tokens, &types, &p.merge_pairs),
        ));
    }
    out.push((
        keys::TOKEN_TYPE.into(),
        Value::array(
            ValueType::I32,
            types.iter().map(|t| Value::I32(*t as i32)).collect(),
        ),
    ));
    if p.flavor == Flavor::ByteLevel {
        if p.merges.is_empty() {
            return Err(TokenizerError::field(
                TJ,
                "model.merges",
                "is empty",
                "a byte-level BPE tokenizer needs its merges",
            ));
        }
        out.push((keys::MERGES.into(), Value::strings(p.merges)));
    }
    for (t, id) in &specials.ids {
        if let Some(k) = keys::special_id_key(t) {
            out.push((k.to_string(), Value::U32(*id)));
        }
    }
    let mut add = specials.add.clone();
    if p.flavor == Flavor::ByteLevel && !add.iter().any(|(t, _)| *t == "bos") {
        // Hugging Face adds no BOS here; say so, so llama.cpp does not apply a default.
        add.push(("bos", false));
    }
    for (t, v) in add {
        if let Some(k) = keys::add_key(t) {
            out.push((k.to_string(), Value::Bool(v)));
        }
    }
    if let Some(b) = tc_ref
        .and_then(|c| c.get("add_prefix_space"))
        .and_then(Json::as_bool)
    {
        out.push((keys::ADD_SPACE_PREFIX.into(), Value::Bool(b)));
    }
    out.extend(chat_template(dir, tc_ref)?);
    Ok(out)
}

/// Scores for a SentencePiece-style vocabulary rebuilt from tokenizer.json: llama.cpp's SPM
/// tokenizer merges the adjacent pair whose result has the highest score, so each merged token
/// scores minus the rank of the first merge that makes it; the pieces merges start from score 0.
fn spm_scores(tokens: &[String], types: &[TokenType], merges: &[(String, String)]) -> Value {
    let mut rank: HashMap<String, usize> = HashMap::with_capacity(merges.len());
    for (r, (a, b)) in merges.iter().enumerate() {
        rank.entry(format!("{a}{b}")).or_insert(r);
    }
    let n_merges = merges.len();
    let scores = tokens
        .iter()
        .zip(types)
        .enumerate()
        .map(|(i, (t, ty))| {
            let s = match ty {
                TokenType::Normal => match rank.get(t) {
                    Some(r) => -(*r as f32),
                    None if t.chars().count() <= 1 => 0.0,
                    None => -((n_merges + i) as f32),
                },
                TokenType::UserDefined | TokenType::Unused => -1000.0,
                _ => 0.0,
            };
            Value::F32(s)
        })
        .collect();
    Value::array(ValueType::F32, scores)
}

fn detect_pre(tj: &Json, tj_bytes: &[u8]) -> Result<String, TokenizerError> {
    let chkhsh = pre::chkhsh_of_tokenizer_json(tj_bytes);
    if let Some(p) = chkhsh.as_deref().and_then(pre::pre_from_chkhsh) {
        return Ok(p.to_string());
    }
    let pt = tj.get("pre_tokenizer").unwrap_or(&Json::Null);
    if let Some(p) = pre::pre_from_structure(pt) {
        return Ok(p.to_string());
    }
    Err(TokenizerError::UnknownPre {
        file: TJ.into(),
        chkhsh: chkhsh.unwrap_or_else(|| "not computable".into()),
        found: pre::describe(pt),
        hint: "pass --pre-tokenizer NAME with the llama.cpp pre-tokenizer this model uses (e.g. gpt-2, smollm, llama-bpe, qwen2)".into(),
    })
}
