//! Round trip on the real SmolLM2-135M-Instruct GGUF (made by llama.cpp's converter):
//! GGUF → tokenizer.json → GGUF metadata must give back what llama.cpp wrote, and the rebuilt
//! tokenizer.json must hash (llama.cpp's chkhsh) to the `smollm` entry of llama.cpp's table.

use std::path::PathBuf;

use slmpack_gguf::{GgufFile, Value};
use slmpack_tokenizer::{gguf_metadata_from_hf, hf_tokenizer_from_gguf, pre, HfTokenizerOptions};

fn smollm2() -> PathBuf {
    if let Ok(p) = std::env::var("SLMPACK_SMOLLM2") {
        return PathBuf::from(p);
    }
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../models/SmolLM2-135M-Instruct.Q4_1.gguf");
    assert!(
        p.is_file(),
        "SmolLM2 GGUF not found: set SLMPACK_SMOLLM2 or run `bash tests/fetch-model.sh` (tests/run.sh does both)"
    );
    p
}

fn get<'a>(kv: &'a [(String, Value)], k: &str) -> Option<&'a Value> {
    kv.iter().find(|(key, _)| key == k).map(|(_, v)| v)
}

#[test]
fn smollm2_gguf_to_hf_and_back() {
    let f = GgufFile::open(smollm2()).unwrap();
    let files = hf_tokenizer_from_gguf(&f).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let tj = serde_json::to_vec(&files.tokenizer_json).unwrap();
    std::fs::write(dir.path().join("tokenizer.json"), &tj).unwrap();
    std::fs::write(
        dir.path().join("tokenizer_config.json"),
        serde_json::to_vec(&files.tokenizer_config_json).unwrap(),
    )
    .unwrap();

    // llama.cpp's hash of the rebuilt tokenizer is the one it lists for SmolLM
    let h =
        pre::chkhsh_of_tokenizer_json(&tj).expect("tokenizers loads the rebuilt tokenizer.json");
    assert_eq!(
        h,
        "855059429035d75a914d1eda9f10a876752e281a054a7a3d421ef0533e5b6249"
    );

    let n = f.get_u64("llama.vocab_size").unwrap() as usize;
    let kv = gguf_metadata_from_hf(
        dir.path(),
        &HfTokenizerOptions {
            vocab_size: Some(n),
            pre_override: None,
        },
    )
    .unwrap();
    for key in [
        "tokenizer.ggml.model",
        "tokenizer.ggml.pre",
        "tokenizer.ggml.tokens",
        "tokenizer.ggml.token_type",
        "tokenizer.ggml.merges",
        "tokenizer.ggml.bos_token_id",
        "tokenizer.ggml.eos_token_id",
        "tokenizer.ggml.unknown_token_id",
        "tokenizer.ggml.padding_token_id",
        "tokenizer.ggml.add_bos_token",
        "tokenizer.ggml.add_space_prefix",
        "tokenizer.chat_template",
    ] {
        let want = f.get(key).unwrap_or_else(|| panic!("GGUF lacks {key}"));
        let got = get(&kv, key).unwrap_or_else(|| panic!("converted metadata lacks {key}"));
        assert!(
            got == want,
            "{key}: got {} want {}",
            got.summary(4),
            want.summary(4)
        );
    }
}
