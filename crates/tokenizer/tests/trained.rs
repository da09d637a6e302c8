//! A tiny byte-level BPE tokenizer (Digits + ByteLevel pre-tokenizer, as SmolLM uses) trained by
//! Python `tokenizers` on a fixed corpus: tokenizer.json → GGUF metadata → (a) llama.cpp, loading
//! a vocab-only GGUF with that metadata, tokenizes as Python `tokenizers` does with the original
//! tokenizer.json; (b) tokenizer.json rebuilt from the metadata encodes as the original.
//!
//! Needs the oracle Python (env SLMPACK_PYTHON, set by tests/run.sh); fails loudly without it.

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::{json, Value as Json};
use slmpack_gguf::{GgufWriter, Value};
use slmpack_tokenizer::{
    gguf_metadata_from_hf, hf_tokenizer_from_metadata, HfTokenizerOptions, TokenizerError,
};

fn python() -> PathBuf {
    let p = std::env::var("SLMPACK_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|_| {
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../.venv/bin/python")
        });
    assert!(
        p.is_file(),
        "oracle python not found at {}: set SLMPACK_PYTHON or run `bash tests/setup-python.sh` (tests/run.sh does both)",
        p.display()
    );
    p
}

fn run_py(script: &str, args: &[&Path]) -> String {
    let out = Command::new(python())
        .arg("-c")
        .arg(script)
        .args(args)
        .output()
        .expect("run python");
    assert!(
        out.status.success(),
        "python failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

const TRAIN: &str = r#"
import sys, json
from tokenizers import Tokenizer, models, pre_tokenizers, decoders, trainers
d = sys.argv[1]
corpus = [
    "The quick brown fox jumps over the lazy dog 12345 times.",
    "def main():\n    print('hello world')\n    return 0\n",
    "Numbers like 3.14159 and 2.71828 appear in 2024 and 1999.",
    "Caf\u00e9 na\u00efve r\u00e9sum\u00e9 \u00fcber \u6211\u60f3\u5728 apple \u5de5\u4f5c",
    "I've been told he's there, you're sure? We'll see, they'd know.",
] * 20
tok = Tokenizer(models.BPE())
tok.pre_tokenizer = pre_tokenizers.Sequence([
    pre_tokenizers.Digits(individual_digits=True),
    pre_tokenizers.ByteLevel(add_prefix_space=False),
])
tok.decoder = decoders.ByteLevel()
trainer = trainers.BpeTrainer(
    vocab_size=420,
    special_tokens=["<|endoftext|>", "<|im_start|>", "<|im_end|>"],
    initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    show_progress=False,
)
tok.train_from_iterator(corpus, trainer)
tok.add_tokens(["<custom>"])
tok.save(d + "/tokenizer.json")
json.dump({
    "bos_token": "<|im_start|>", "eos_token": "<|im_end|>", "unk_token": "<|endoftext|>",
    "pad_token": "<|im_end|>", "add_prefix_space": False,
    "chat_template": "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}",
}, open(d + "/tokenizer_config.json", "w"))
"#;

const TEXTS: &[&str] = &[
    "The quick brown fox 12345 3.14159",
    "def main():\n    print('hello')\n\n\treturn 0",
    "Caf\u{e9} \u{6211}\u{60f3} emoji \u{1F680} \u{1F999}",
    "<|im_start|>user\nhi<|im_end|>\n",
    "a <custom> b<custom>c",
    "  spaces   and\ttabs\n\n newlines  ",
    "I've 'RE you 'll",
    "",
];

/// Encode TEXTS with Python `tokenizers` from a tokenizer.json, no special tokens added.
const ENCODE_HF: &str = r#"
import sys, json
from tokenizers import Tokenizer
tok = Tokenizer.from_file(sys.argv[1])
texts = json.load(open(sys.argv[2]))
print(json.dumps([tok.encode(t, add_special_tokens=False).ids for t in texts]))
"#;

/// Tokenize TEXTS with llama.cpp from a (vocab-only) GGUF.
const ENCODE_CPP: &str = r#"
import sys, json
import llama_cpp
llm = llama_cpp.Llama(model_path=sys.argv[1], vocab_only=True, verbose=False)
texts = json.load(open(sys.argv[2]))
print(json.dumps([llm.tokenize(t.encode(), add_bos=False, special=True) for t in texts]))
"#;

fn get<'a>(kv: &'a [(String, Value)], k: &str) -> &'a Value {
    &kv.iter()
        .find(|(key, _)| key == k)
        .unwrap_or_else(|| panic!("no {k}"))
        .1
}

fn strs(v: &Value) -> Vec<String> {
    v.as_array()
        .unwrap()
        .1
        .iter()
        .map(|x| x.as_str().unwrap().to_string())
        .collect()
}

/// A vocab-only llama GGUF (tiny hparams) carrying the tokenizer metadata, for llama.cpp.
fn write_vocab_gguf(path: &Path, kv: &[(String, Value)], n_vocab: usize) {
    let mut w = GgufWriter::new();
    w.set("general.architecture", "llama");
    w.set("general.name", "slmpack-test-vocab");
    for (k, v) in [
        ("llama.block_count", 1u32),
        ("llama.context_length", 64),
        ("llama.embedding_length", 64),
        ("llama.feed_forward_length", 128),
        ("llama.attention.head_count", 4),
        ("llama.attention.head_count_kv", 4),
        ("llama.vocab_size", n_vocab as u32),
    ] {
        w.set(k, Value::U32(v));
    }
    w.set("llama.attention.layer_norm_rms_epsilon", Value::F32(1e-5));
    for (k, v) in kv {
        w.set(k.clone(), v.clone());
    }
    w.write(path, |_, _, _| Ok::<(), std::io::Error>(()))
        .unwrap();
}

#[test]
fn trained_bytelevel_digits_tokenizer_round_trip() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    run_py(TRAIN, &[d]);
    let texts_path = d.join("texts.json");
    std::fs::write(&texts_path, serde_json::to_vec(TEXTS).unwrap()).unwrap();
    let want: Json = serde_json::from_str(&run_py(
        ENCODE_HF,
        &[&d.join("tokenizer.json"), &texts_path],
    ))
    .unwrap();

    let tj: Json =
        serde_json::from_slice(&std::fs::read(d.join("tokenizer.json")).unwrap()).unwrap();
    let vocab = tj["model"]["vocab"].as_object().unwrap();
    let n_model = vocab.len();
    // one added user token after the model vocabulary, then 3 padding slots from config.json
    let n_vocab = n_model + 1 + 3;
    let kv = gguf_metadata_from_hf(
        d,
        &HfTokenizerOptions {
            vocab_size: Some(n_vocab),
            pre_override: None,
        },
    )
    .unwrap();

    assert_eq!(get(&kv, "tokenizer.ggml.model").as_str(), Some("gpt2"));
    // a random vocabulary hashes to no known chkhsh: the structure says smollm
    assert_eq!(get(&kv, "tokenizer.ggml.pre").as_str(), Some("smollm"));
    let tokens = strs(get(&kv, "tokenizer.ggml.tokens"));
    assert_eq!(tokens.len(), n_vocab);
    for (t, id) in vocab {
        assert_eq!(&tokens[id.as_u64().unwrap() as usize], t);
    }
    assert_eq!(tokens[n_model], "<custom>");
    assert_eq!(tokens[n_vocab - 1], format!("[PAD{}]", n_vocab - 1));
    let types: Vec<i64> = get(&kv, "tokenizer.ggml.token_type")
        .as_array()
        .unwrap()
        .1
        .iter()
        .map(|v| v.as_i64().unwrap())
        .collect();
    assert_eq!(&types[..3], &[3, 3, 3], "special tokens are CONTROL");
    assert!(
        types[3..n_model].iter().all(|&t| t == 1),
        "model tokens are NORMAL"
    );
    assert_eq!(types[n_model], 4, "added non-special token is USER_DEFINED");
    assert!(
        types[n_model + 1..].iter().all(|&t| t == 5),
        "padding is UNUSED"
    );
    let merges = strs(get(&kv, "tokenizer.ggml.merges"));
    let want_merges: Vec<String> = tj["model"]["merges"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| match m {
            Json::String(s) => s.clone(),
            Json::Array(p) => format!("{} {}", p[0].as_str().unwrap(), p[1].as_str().unwrap()),
            _ => panic!(),
        })
        .collect();
    assert!(!merges.is_empty());
    assert_eq!(merges, want_merges);
    assert_eq!(get(&kv, "tokenizer.ggml.bos_token_id").as_u64(), Some(1));
    assert_eq!(get(&kv, "tokenizer.ggml.eos_token_id").as_u64(), Some(2));
    assert_eq!(
        get(&kv, "tokenizer.ggml.unknown_token_id").as_u64(),
        Some(0)
    );
    assert_eq!(
        get(&kv, "tokenizer.ggml.padding_token_id").as_u64(),
        Some(2)
    );
    assert_eq!(
        get(&kv, "tokenizer.ggml.add_bos_token").as_bool(),
        Some(false)
    );
    assert_eq!(
        get(&kv, "tokenizer.ggml.add_space_prefix").as_bool(),
        Some(false)
    );
    assert!(get(&kv, "tokenizer.chat_template")
        .as_str()
        .unwrap()
        .contains("<|im_start|>"));

    // (a) llama.cpp from the GGUF == Python tokenizers from the original tokenizer.json
    let gguf = d.join("vocab.gguf");
    write_vocab_gguf(&gguf, &kv, n_vocab);
    let cpp: Json = serde_json::from_str(&run_py(ENCODE_CPP, &[&gguf, &texts_path])).unwrap();
    assert_eq!(cpp, want, "llama.cpp vs tokenizers on {TEXTS:?}");

    // (b) tokenizer.json rebuilt from the metadata encodes as the original
    let files = hf_tokenizer_from_metadata(&kv).unwrap();
    let back = d.join("back");
    std::fs::create_dir(&back).unwrap();
    std::fs::write(
        back.join("tokenizer.json"),
        serde_json::to_vec(&files.tokenizer_json).unwrap(),
    )
    .unwrap();
    let got: Json = serde_json::from_str(&run_py(
        ENCODE_HF,
        &[&back.join("tokenizer.json"), &texts_path],
    ))
    .unwrap();
    assert_eq!(got, want);
    assert_eq!(
        files.tokenizer_config_json["bos_token"],
        json!("<|im_start|>")
    );
    assert_eq!(files.tokenizer_config_json["add_bos_token"], json!(false));

    // merges written as legacy "a b" strings give the same metadata as pairs
    let mut legacy = tj.clone();
    legacy["model"]["merges"] = Json::Array(want_merges.iter().map(|s| json!(s)).collect());
    let ldir = d.join("legacy");
    std::fs::create_dir(&ldir).unwrap();
    std::fs::write(
        ldir.join("tokenizer.json"),
        serde_json::to_vec(&legacy).unwrap(),
    )
    .unwrap();
    std::fs::copy(
        d.join("tokenizer_config.json"),
        ldir.join("tokenizer_config.json"),
    )
    .unwrap();
    let kv2 = gguf_metadata_from_hf(
        &ldir,
        &HfTokenizerOptions {
            vocab_size: Some(n_vocab),
            pre_override: None,
        },
    )
    .unwrap();
    assert_eq!(kv2, kv);

    // an unknown pre-tokenizer structure is a clear error, and --pre-tokenizer overrides it
    let mut odd = tj.clone();
    odd["pre_tokenizer"] = json!({"type": "Sequence", "pretokenizers": [
        {"type": "Punctuation", "behavior": "Isolated"}, {"type": "ByteLevel", "add_prefix_space": false, "use_regex": true}]});
    std::fs::write(
        ldir.join("tokenizer.json"),
        serde_json::to_vec(&odd).unwrap(),
    )
    .unwrap();
    let err = gguf_metadata_from_hf(&ldir, &HfTokenizerOptions::default()).unwrap_err();
    assert!(matches!(err, TokenizerError::UnknownPre { .. }));
    let msg = err.to_string();
    assert!(msg.contains("Sequence[Punctuation, ByteLevel]"), "{msg}");
    assert!(msg.contains("hint: pass --pre-tokenizer NAME"), "{msg}");
    let kv3 = gguf_metadata_from_hf(
        &ldir,
        &HfTokenizerOptions {
            vocab_size: None,
            pre_override: Some("gpt-2".into()),
        },
    )
    .unwrap();
    assert_eq!(get(&kv3, "tokenizer.ggml.pre").as_str(), Some("gpt-2"));
}
