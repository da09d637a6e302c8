//! Identifying the BPE pre-tokenizer (`tokenizer.ggml.pre`) the way llama.cpp's converter does,
//! and the Hugging Face pre-tokenizer JSON for each `pre` slmpack can write back.
//!
//! llama.cpp hashes the token ids a tokenizer produces for a fixed probe text (`chktxt`) and looks
//! the hash up in a table (`get_vocab_base_pre` in `convert_hf_to_gguf.py`). The hashes below are
//! facts copied from that table; the code is ours. When no hash matches (a tokenizer trained for a
//! test has its own vocabulary, so its hash is new) we recognise the `pre_tokenizer` structure.

use serde_json::{json, Value as Json};
use sha2::{Digest, Sha256};

/// The probe text of llama.cpp's `get_vocab_base_pre`.
pub const CHKTXT: &str = "\n \n\n \n\n\n \t \t\t \t\n  \n   \n    \n     \n\u{1F680} (normal) \u{1F636}\u{200D}\u{1F32B}\u{FE0F} (multiple emojis concatenated) \u{2705} \u{1F999}\u{1F999} 3 33 333 3333 33333 333333 3333333 33333333 3.3 3..3 3...3 \u{1780}\u{17B6}\u{1793}\u{17CB}\u{178F}\u{17C2}\u{1796}\u{17B7}\u{179F}\u{17C1}\u{179F}\u{17A2}\u{17B6}\u{1785}\u{1F601} ?\u{6211}\u{60F3}\u{5728}apple\u{5DE5}\u{4F5C}1314151\u{5929}\u{FF5E} ------======= \u{043D}\u{0435}\u{0449}\u{043E} \u{043D}\u{0430} \u{0411}\u{044A}\u{043B}\u{0433}\u{0430}\u{0440}\u{0441}\u{043A}\u{0438} ''''''```````\"\"\"\"......!!!!!!?????? I've been 'told he's there, 'RE you sure? 'M not sure I'll make it, 'D you like some tea? We'Ve a'lL";

/// `(chkhsh, pre)` from llama.cpp's table. Where llama.cpp lists one hash twice, the later entry
/// wins there (a chain of `if`s), so only that one is kept here.
pub const CHKHSH_TABLE: &[(&str, &str)] = &[
    (
        "0ef9807a4087ebef797fc749390439009c3b9eda9ad1a097abbe738f486c01e5",
        "llama-bpe",
    ),
    (
        "049ecf7629871e3041641907f3de7c733e4dbfdc736f57d882ba0b0845599754",
        "deepseek-llm",
    ),
    (
        "347715f544604f9118bb75ed199f68779f423cabb20db6de6f31b908d04d7821",
        "deepseek-coder",
    ),
    (
        "8aeee3860c56296a157a1fe2fad249ec40aa59b1bb5709f4ade11c4e6fe652ed",
        "falcon",
    ),
    (
        "9d032fcbd5501f4a38150912590928bfb36091efb5df11b8e2124b0390e3fb1e",
        "falcon3",
    ),
    (
        "8e62295832751ca1e8f92f2226f403dea30dc5165e448b5bfa05af5340c64ec7",
        "bert-bge-large",
    ),
    (
        "b6dc8df998e1cfbdc4eac8243701a65afe638679230920b50d6f17d81c098166",
        "olmo",
    ),
    (
        "35d91631860c815f952d711435f48d356ebac988362536bed955d43bfa436e34",
        "starcoder",
    ),
    (
        "3ce83efda5659b07b1ad37ca97ca5797ea4285d9b9ab0dc679e4a720c9da7454",
        "gpt-2",
    ),
    (
        "0fe1cf6eda062318a1af7270f3331a85c539a01778ff948e24388e949c5282f4",
        "gpt-2",
    ),
    (
        "32d85c31273f8019248f2559fed492d929ea28b17e51d81d3bb36fff23ca72b3",
        "stablelm2",
    ),
    (
        "6221ad2852e85ce96f791f476e0b390cf9b474c9e3d1362f53a24a06dc8220ff",
        "refact",
    ),
    (
        "9c2227e4dd922002fb81bde4fc02b0483ca4f12911410dee2255e4987644e3f8",
        "command-r",
    ),
    (
        "e636dc30a262dcc0d8c323492e32ae2b70728f4df7dfe9737d9f920a282b8aea",
        "qwen2",
    ),
    (
        "d4540891389ea895b53b399da6ac824becc30f2fba0e9ddbb98f92e55ca0e97c",
        "qwen2",
    ),
    (
        "a8594e3edff7c29c003940395316294b2c623e09894deebbc65f33f1515df79e",
        "dbrx",
    ),
    (
        "0876d13b50744004aa9aeae05e7b0647eac9d801b5ba4668afc01e709c15e19f",
        "jina-v2-en",
    ),
    (
        "c136ed14d01c2745d4f60a9596ae66800e2b61fa45643e72436041855ad4089d",
        "smaug-bpe",
    ),
    (
        "c7ea5862a53e4272c035c8238367063e2b270d51faa48c0f09e9d5b54746c360",
        "poro-chat",
    ),
    (
        "7fc505bd3104ca1083b150b17d088b59534ede9bde81f0dd2090967d7fe52cee",
        "viking",
    ),
    (
        "b53802fb28e26d645c3a310b34bfe07da813026ec7c7716883404d5e0f8b1901",
        "jais",
    ),
    (
        "7b3e7548e4308f52a76e8229e4e6cc831195d0d1df43aed21ac6c93da05fec5f",
        "codeshell",
    ),
    (
        "63b97e4253352e6f357cc59ea5b583e3a680eaeaf2632188c2b952de2588485e",
        "tekken",
    ),
    (
        "855059429035d75a914d1eda9f10a876752e281a054a7a3d421ef0533e5b6249",
        "smollm",
    ),
    (
        "3c30d3ad1d6b64202cd222813e7736c2db6e1bd6d67197090fc1211fbc612ae7",
        "bloom",
    ),
    (
        "bc01ce58980e1db43859146dc51b1758b3b88729b217a74792e9f8d43e479d21",
        "gpt3-finnish",
    ),
    (
        "4e2b24cc4770243d65a2c9ec19770a72f08cffc161adbb73fcbb6b7dd45a0aae",
        "exaone",
    ),
    (
        "fcace8b9cac38ce847670c970cd5892031a753a1ef381abd1d9af00f713da085",
        "phi-2",
    ),
    (
        "60824e3c0d9401f89943cbb2fff727f0e2d4c545ba4df2d6e4f09a6db0f5b450",
        "chameleon",
    ),
    (
        "8b5a93ed704057481f240da0be7e7dca721d7f8f4755263b6807227a2cbeae65",
        "roberta-bpe",
    ),
    (
        "ad851be1dba641f2e3711822f816db2c265f788b37c63b4e1aeacb9ee92de8eb",
        "gigachat",
    ),
    (
        "d4c8f286ea6b520b3d495c4455483cfa2302c0cfcd4be05d781b6a8a0a7cdaf1",
        "megrez",
    ),
    (
        "877081d19cf6996e2c4ff0e1236341e9b7bde288f5311a56a937f0afbbb3aeb5",
        "deepseek-v3",
    ),
    (
        "b3f499bb4255f8ca19fccd664443283318f2fd2414d5e0b040fbdd0cc195d6c5",
        "deepseek-r1-qwen",
    ),
    (
        "ccc2ef013c104be7bae2965776d611e1d7a8a2a9c547dd93a682c9a9fc80352e",
        "gpt-4o",
    ),
    (
        "7dec86086fcc38b66b7bc1575a160ae21cf705be7718b9d5598190d7c12db76f",
        "superbpe",
    ),
    (
        "1994ffd01900cfb37395608534236ecd63f2bd5995d6cb1004dda1af50240f15",
        "trillion",
    ),
    (
        "96a5f08be6259352137b512d4157e333e21df7edd3fcd152990608735a65b224",
        "bailingmoe",
    ),
    (
        "d353350c764d8c3b39c763113960e4fb4919bea5fbf208a0e3b22e8469dc7406",
        "llama4",
    ),
    (
        "0e9433cbbb161f89e264eb32e8e64bfe69e834973ffca5d41d3948a604a3e2a3",
        "pixtral",
    ),
    (
        "d5f1dd6f980fec569fb218a81a7658ac45fc56b38c5a0adeb1c232fbe04ef5ec",
        "seed-coder",
    ),
    (
        "b0a6b1c0bd5998ebd9df08611efde34a4ff03faed45ae09c43e6b31ebd4b94cf",
        "a.x-4.0",
    ),
    (
        "f6791d196f87ce6b56a7d234be618e0d58f8cda3549416635b2bebcd22cd95c4",
        "midm-2.0",
    ),
    (
        "169bf0296a13c4d9b7672313f749eb36501d931022de052aad6e36f2bf34dd51",
        "lfm2",
    ),
    (
        "2085e1638f6c377a0aa4ead21b27bb4cb941bf800df86ed391011769c1758dfb",
        "exaone4",
    ),
    (
        "a1e163ecab2e718a4c829d1148b6e86824ec36163bb71941c3dca9cd5ac25756",
        "mellum",
    ),
    (
        "53e325976a6e142379c19b09afcae354f2f496f147afa8f9e189a33fe4e3024e",
        "granite-docling",
    ),
    (
        "1431a23e583c97432bc230bff598d103ddb5a1f89960c8f1d1051aaa944d0b35",
        "minerva-7b",
    ),
    (
        "b6e8e1518dc4305be2fe39c313ed643381c4da5db34a98f6a04c093f8afbe99b",
        "chatglm-bpe",
    ),
    (
        "81d72c7348a9f0ebe86f23298d37debe0a5e71149e29bd283904c02262b27516",
        "chatglm-bpe",
    ),
    (
        "a1336059768a55c99a734006ffb02203cd450fed003e9a71886c88acf24fdbc2",
        "glm4",
    ),
    (
        "7e57df22b1fe23a7b1e1c7f3dc4e3f96d43a4eb0836d0c6bdc3436d7b2f1c664",
        "hunyuan",
    ),
    (
        "bba3b3366b646dbdded5dbc42d59598b849371afc42f7beafa914afaa5b70aa6",
        "hunyuan-dense",
    ),
    (
        "a6b57017d60e6edb4d88ecc2845188e0eb333a70357e45dcc9b53964a73bbae6",
        "falcon-h1",
    ),
    (
        "60476e1243776c4fb1b993dbd7a5f15ac22f83c80afdf425fa5ae01c8d44ef86",
        "falcon-h1",
    ),
    (
        "3eda48b4c4dc7de733d1a8b3e3b4a85243dbbf704da2ee9d42c6beced8897896",
        "falcon-h1",
    ),
    (
        "48f8e02c0359c0bbdd82f26909171fac1c18a457bb47573ed1fe3bbb2c1cfd4b",
        "falcon-h1",
    ),
    (
        "81212dc7cdb7e0c1074ca62c5aeab0d43c9f52b8a737be7b12a777c953027890",
        "kimi-k2",
    ),
];

/// The hash llama.cpp computes: sha256 of Python's `str()` of the id list, e.g. `[1, 22, 333]`.
pub fn chkhsh_of_ids(ids: &[u32]) -> String {
    let mut s = String::with_capacity(ids.len() * 7 + 2);
    s.push('[');
    for (i, id) in ids.iter().enumerate() {
        if i > 0 {
            s.push_str(", ");
        }
        s.push_str(&id.to_string());
    }
    s.push(']');
    let digest = Sha256::digest(s.as_bytes());
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

/// Look a chkhsh up in llama.cpp's table.
pub fn pre_from_chkhsh(chkhsh: &str) -> Option<&'static str> {
    CHKHSH_TABLE
        .iter()
        .find(|(h, _)| *h == chkhsh)
        .map(|(_, p)| *p)
}

/// Encode [`CHKTXT`] with the tokenizer in `tokenizer_json` (special tokens added, as
/// `AutoTokenizer.encode` does) and hash the ids. `None` when the tokenizers crate cannot load or
/// run this tokenizer.json.
pub fn chkhsh_of_tokenizer_json(tokenizer_json: &[u8]) -> Option<String> {
    let tok = tokenizers::Tokenizer::from_bytes(tokenizer_json).ok()?;
    let enc = tok.encode(CHKTXT, true).ok()?;
    Some(chkhsh_of_ids(enc.get_ids()))
}

/// The Llama 3 split regex as Hugging Face writes it (llama.cpp's `LLAMA3` pre-tokenizer).
pub const LLAMA3_REGEX: &str = "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+";
/// The Qwen2 split regex as Hugging Face writes it (llama.cpp's `QWEN2` pre-tokenizer).
pub const QWEN2_REGEX: &str = "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+";

fn ty(v: &Json) -> &str {
    v.get("type").and_then(Json::as_str).unwrap_or("")
}

fn byte_level_uses_regex(v: &Json) -> bool {
    v.get("use_regex").and_then(Json::as_bool).unwrap_or(true)
}

fn split_regex(v: &Json) -> Option<&str> {
    if ty(v) != "Split" {
        return None;
    }
    v.get("pattern")?.get("Regex")?.as_str()
}

/// Recognise the `pre_tokenizer` of a byte-level BPE tokenizer.json by its structure.
pub fn pre_from_structure(pre_tokenizer: &Json) -> Option<&'static str> {
    let items: Vec<&Json> = match ty(pre_tokenizer) {
        "Sequence" => pre_tokenizer
            .get("pretokenizers")
            .and_then(Json::as_array)?
            .iter()
            .collect(),
        "" => return None,
        _ => vec![pre_tokenizer],
    };
    match items.as_slice() {
        [bl] if ty(bl) == "ByteLevel" && byte_level_uses_regex(bl) => Some("gpt-2"),
        [d, bl]
            if ty(d) == "Digits"
                && d.get("individual_digits").and_then(Json::as_bool) == Some(true)
                && ty(bl) == "ByteLevel"
                && byte_level_uses_regex(bl) =>
        {
            Some("smollm")
        }
        [s, bl] if ty(bl) == "ByteLevel" && !byte_level_uses_regex(bl) => match split_regex(s)? {
            LLAMA3_REGEX => Some("llama-bpe"),
            QWEN2_REGEX => Some("qwen2"),
            _ => None,
        },
        _ => None,
    }
}

/// A short description of a `pre_tokenizer` for error messages, e.g. `Sequence[Digits, ByteLevel]`.
pub fn describe(pre_tokenizer: &Json) -> String {
    match ty(pre_tokenizer) {
        "" if pre_tokenizer.is_null() => "null".to_string(),
        "" => "an object without `type`".to_string(),
        "Sequence" => {
            let inner: Vec<String> = pre_tokenizer
                .get("pretokenizers")
                .and_then(Json::as_array)
                .map(|a| a.iter().map(describe).collect())
                .unwrap_or_default();
            format!("Sequence[{}]", inner.join(", "))
        }
        t => t.to_string(),
    }
}

/// The Hugging Face `pre_tokenizer` that reproduces llama.cpp's pre-tokenizer for `pre`, and
/// whether the BPE model must set `ignore_merges` (llama.cpp does for Llama 3).
pub fn hf_pre_tokenizer(pre: &str) -> Option<(Json, bool)> {
    let byte_level = |use_regex: bool| json!({"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": use_regex});
    let split = |re: &str| json!({"type": "Split", "pattern": {"Regex": re}, "behavior": "Isolated", "invert": false});
    Some(match pre {
        // llama.cpp's GPT2 pre-tokenizer type covers these names
        "gpt-2" | "gpt2" | "phi-2" | "gigachat" | "a.x-4.0" | "mellum" => (byte_level(true), false),
        "smollm" => (
            json!({"type": "Sequence", "pretokenizers": [
                {"type": "Digits", "individual_digits": true},
                byte_level(true),
            ]}),
            false,
        ),
        "llama3" | "llama-v3" | "llama-bpe" | "falcon3" | "falcon-h1" | "pixtral" | "midm-2.0"
        | "lfm2" => (
            json!({"type": "Sequence", "pretokenizers": [split(LLAMA3_REGEX), byte_level(false)]}),
            true,
        ),
        "qwen2" | "deepseek-r1-qwen" | "megrez" => (
            json!({"type": "Sequence", "pretokenizers": [split(QWEN2_REGEX), byte_level(false)]}),
            false,
        ),
        _ => return None,
    })
}

/// The `pre` names [`hf_pre_tokenizer`] handles, for error hints.
pub const WRITABLE_PRES: &str = "gpt-2, smollm, llama-bpe, qwen2";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chkhsh_formats_like_python_str_of_list() {
        // Python: sha256(str([1, 2, 3]).encode()).hexdigest()
        assert_eq!(
            chkhsh_of_ids(&[1, 2, 3]),
            "a36b1f2c3f84522dd1005145646617d7054c0851e97c72a039c0bdfac9fa07f3"
        );
        assert_eq!(chkhsh_of_ids(&[]).len(), 64);
        assert_ne!(chkhsh_of_ids(&[1, 2]), chkhsh_of_ids(&[12]));
    }

    #[test]
    fn table_has_no_duplicate_hashes() {
        for (i, (h, _)) in CHKHSH_TABLE.iter().enumerate() {
            assert_eq!(h.len(), 64);
            assert!(CHKHSH_TABLE[i + 1..].iter().all(|(o, _)| o != h), "{h}");
        }
        assert_eq!(
            pre_from_chkhsh("855059429035d75a914d1eda9f10a876752e281a054a7a3d421ef0533e5b6249"),
            Some("smollm")
        );
    }

    #[test]
    fn structure_recognised() {
        let (smollm, _) = hf_pre_tokenizer("smollm").unwrap();
        assert_eq!(pre_from_structure(&smollm), Some("smollm"));
        let (gpt2, _) = hf_pre_tokenizer("gpt-2").unwrap();
        assert_eq!(pre_from_structure(&gpt2), Some("gpt-2"));
        let (l3, ignore) = hf_pre_tokenizer("llama-bpe").unwrap();
        assert!(ignore);
        assert_eq!(pre_from_structure(&l3), Some("llama-bpe"));
        let (q, _) = hf_pre_tokenizer("qwen2").unwrap();
        assert_eq!(pre_from_structure(&q), Some("qwen2"));
        assert_eq!(pre_from_structure(&json!({"type": "Whitespace"})), None);
        assert_eq!(pre_from_structure(&Json::Null), None);
        assert_eq!(
            describe(
                &json!({"type":"Sequence","pretokenizers":[{"type":"Digits"},{"type":"Whitespace"}]})
            ),
            "Sequence[Digits, Whitespace]"
        );
    }
}
