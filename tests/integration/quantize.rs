//! `slmpack quantize` and `slmpack inspect`: tiny checkpoints and GGUFs built here, every bad
//! input refused with a message, a non-zero exit and no file written.

use std::io::Write;
use std::path::{Path, PathBuf};

use slmpack_gguf::{GgmlType, GgufFile, GgufWriter};

use crate::{files_in, slmpack_p, stderr, stdout};

const HIDDEN: u64 = 64;
const HEADS: u64 = 4;
const KV_HEADS: u64 = 2;
const FF: u64 = 128;
const LAYERS: u64 = 2;
const VOCAB: u64 = 261;

/// Deterministic pseudo-random values in [-1, 1).
fn values(seed: u64, n: usize) -> Vec<f32> {
    let mut s = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    (0..n)
        .map(|_| {
            s = s
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((s >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
        })
        .collect()
}

fn f16_bytes(v: &[f32]) -> Vec<u8> {
    v.iter()
        .flat_map(|x| half::f16::from_f32(*x).to_le_bytes())
        .collect()
}

struct StTensor {
    name: String,
    dtype: String,
    shape: Vec<u64>,
    data: Vec<u8>,
}

/// The HF tensors of a tiny llama (F16, norms F32), outermost dim first.
fn hf_tensors(tied: bool) -> Vec<StTensor> {
    let hd = HIDDEN / HEADS;
    let mut specs: Vec<(String, Vec<u64>)> =
        vec![("model.embed_tokens.weight".into(), vec![VOCAB, HIDDEN])];
    for l in 0..LAYERS {
        let p = format!("model.layers.{l}.");
        specs.push((format!("{p}input_layernorm.weight"), vec![HIDDEN]));
        specs.push((
            format!("{p}self_attn.q_proj.weight"),
            vec![HEADS * hd, HIDDEN],
        ));
        specs.push((
            format!("{p}self_attn.k_proj.weight"),
            vec![KV_HEADS * hd, HIDDEN],
        ));
        specs.push((
            format!("{p}self_attn.v_proj.weight"),
            vec![KV_HEADS * hd, HIDDEN],
        ));
        specs.push((
            format!("{p}self_attn.o_proj.weight"),
            vec![HIDDEN, HEADS * hd],
        ));
        specs.push((format!("{p}post_attention_layernorm.weight"), vec![HIDDEN]));
        specs.push((format!("{p}mlp.gate_proj.weight"), vec![FF, HIDDEN]));
        specs.push((format!("{p}mlp.up_proj.weight"), vec![FF, HIDDEN]));
        specs.push((format!("{p}mlp.down_proj.weight"), vec![HIDDEN, FF]));
    }
    specs.push(("model.norm.weight".into(), vec![HIDDEN]));
    if !tied {
        specs.push(("lm_head.weight".into(), vec![VOCAB, HIDDEN]));
    }
    specs
        .into_iter()
        .enumerate()
        .map(|(i, (name, shape))| {
            let n = shape.iter().product::<u64>() as usize;
            let v = values(i as u64 + 1, n);
            let (dtype, data) = if shape.len() == 1 {
                (
                    "F32",
                    v.iter()
                        .flat_map(|x| (1.0 + x * 0.1).to_le_bytes())
                        .collect(),
                )
            } else {
                ("F16", f16_bytes(&v))
            };
            StTensor {
                name,
                dtype: dtype.into(),
                shape,
                data,
            }
        })
        .collect()
}

/// Serialize tensors as a safetensors file (header padded to 8 bytes).
fn safetensors_bytes(ts: &[StTensor]) -> Vec<u8> {
    let mut header = serde_json::Map::new();
    let mut off = 0usize;
    for t in ts {
        header.insert(
            t.name.clone(),
            serde_json::json!({"dtype": t.dtype, "shape": t.shape, "data_offsets": [off, off + t.data.len()]}),
        );
        off += t.data.len();
    }
    let mut h = serde_json::to_string(&header).unwrap();
    while !h.len().is_multiple_of(8) {
        h.push(' ');
    }
    let mut out = (h.len() as u64).to_le_bytes().to_vec();
    out.extend_from_slice(h.as_bytes());
    for t in ts {
        out.extend_from_slice(&t.data);
    }
    out
}

fn config(tied: bool) -> serde_json::Value {
    serde_json::json!({
        "architectures": ["LlamaForCausalLM"],
        "model_type": "llama",
        "hidden_size": HIDDEN,
        "intermediate_size": FF,
        "num_hidden_layers": LAYERS,
        "num_attention_heads": HEADS,
        "num_key_value_heads": KV_HEADS,
        "vocab_size": VOCAB,
        "max_position_embeddings": 256,
        "rms_norm_eps": 1e-5,
        "rope_theta": 10000.0,
        "tie_word_embeddings": tied,
        "bos_token_id": 258,
        "eos_token_id": 260,
        "torch_dtype": "float16"
    })
}

/// A byte-level BPE tokenizer.json: 256 byte tokens, 2 merges, 3 special tokens.
fn tokenizer_json() -> serde_json::Value {
    let mut vocab = serde_json::Map::new();
    for (i, c) in super::byte_chars().iter().enumerate() {
        vocab.insert(c.to_string(), i.into());
    }
    vocab.insert("\u{120}t".to_string(), 256.into());
    vocab.insert("he".to_string(), 257.into());
    let specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"];
    for (i, s) in specials.iter().enumerate() {
        vocab.insert(s.to_string(), (258 + i).into());
    }
    serde_json::json!({
        "version": "1.0",
        "truncation": null,
        "padding": null,
        "added_tokens": specials.iter().enumerate().map(|(i, s)| serde_json::json!({
            "id": 258 + i, "content": s, "single_word": false, "lstrip": false, "rstrip": false,
            "normalized": false, "special": true})).collect::<Vec<_>>(),
        "normalizer": null,
        "pre_tokenizer": {"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": true},
        "post_processor": null,
        "decoder": {"type": "ByteLevel", "add_prefix_space": true, "trim_offsets": true, "use_regex": true},
        "model": {"type": "BPE", "dropout": null, "unk_token": null, "continuing_subword_prefix": null,
                  "end_of_word_suffix": null, "fuse_unk": false, "byte_fallback": false,
                  "ignore_merges": false, "vocab": vocab, "merges": ["\u{120} t", "h e"]}
    })
}

/// Write a tiny checkpoint folder; returns its path.
fn checkpoint(root: &Path, tied: bool) -> PathBuf {
    let dir = root.join("tiny-llama");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("config.json"), config(tied).to_string()).unwrap();
    std::fs::write(
        dir.join("model.safetensors"),
        safetensors_bytes(&hf_tensors(tied)),
    )
    .unwrap();
    std::fs::write(dir.join("tokenizer.json"), tokenizer_json().to_string()).unwrap();
    std::fs::write(
        dir.join("tokenizer_config.json"),
        serde_json::json!({
            "bos_token": "<|endoftext|>", "eos_token": "<|im_end|>",
            "chat_template": "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
        })
        .to_string(),
    )
    .unwrap();
    dir
}

/// A tiny llama GGUF (F16 matrices, F32 norms) written with the GGUF writer, as an input.
fn gguf_input(root: &Path, hidden: u64) -> PathBuf {
    let mut w = GgufWriter::new();
    w.set("general.architecture", "llama");
    w.set("general.name", "tiny");
    w.set("llama.block_count", 8u32);
    w.set("llama.attention.head_count", 4u32);
    w.set("llama.attention.head_count_kv", 2u32);
    w.set("llama.embedding_length", hidden as u32);
    w.set("general.file_type", 1u32);
    let mut specs: Vec<(String, Vec<u64>, GgmlType)> =
        vec![("token_embd.weight".into(), vec![hidden, 300], GgmlType::F16)];
    for l in 0..8 {
        for (n, d) in [
            ("attn_norm", vec![hidden]),
            ("attn_q", vec![hidden, hidden]),
            ("attn_k", vec![hidden, hidden / 2]),
            ("attn_v", vec![hidden, hidden / 2]),
            ("attn_output", vec![hidden, hidden]),
            ("ffn_norm", vec![hidden]),
            ("ffn_gate", vec![hidden, 512]),
            ("ffn_up", vec![hidden, 512]),
            ("ffn_down", vec![512, hidden]),
        ] {
            let ty = if d.len() == 1 {
                GgmlType::F32
            } else {
                GgmlType::F16
            };
            specs.push((format!("blk.{l}.{n}.weight"), d, ty));
        }
    }
    specs.push(("output_norm.weight".into(), vec![hidden], GgmlType::F32));
    for (n, d, t) in &specs {
        w.add_tensor(n.clone(), d.clone(), *t).unwrap();
    }
    let p = root.join(format!("tiny-{hidden}.gguf"));
    w.write(&p, |i, t, out: &mut dyn Write| {
        let n = t.dims.iter().product::<u64>() as usize;
        let v = values(i as u64 + 100, n);
        if t.ty == GgmlType::F32 {
            out.write_all(&v.iter().flat_map(|x| x.to_le_bytes()).collect::<Vec<_>>())
        } else {
            out.write_all(&f16_bytes(&v))
        }
    })
    .unwrap();
    p
}

fn assert_fails(o: &std::process::Output, want: &str) {
    assert!(
        !o.status.success(),
        "expected failure, got success\n{}",
        stderr(o)
    );
    let e = stderr(o);
    assert!(e.contains(want), "expected {want:?} in stderr:\n{e}");
    assert!(
        e.starts_with("error: "),
        "stderr should start with `error: `:\n{e}"
    );
}

fn run_q(input: &Path, out: &Path, extra: &[&str]) -> std::process::Output {
    let mut args: Vec<std::ffi::OsString> =
        vec!["quantize".into(), input.into(), "-o".into(), out.into()];
    args.extend(extra.iter().map(|s| s.into()));
    slmpack_p(&args)
}

/// A checkpoint with its safetensors file replaced by `bytes`; quantize must fail with `want`.
fn bad_safetensors(bytes: Vec<u8>, want: &str) {
    let d = tempfile::tempdir().unwrap();
    let ck = checkpoint(d.path(), true);
    std::fs::write(ck.join("model.safetensors"), bytes).unwrap();
    let out = d.path().join("out");
    std::fs::create_dir(&out).unwrap();
    let o = run_q(&ck, &out.join("m.gguf"), &["--type", "q8_0"]);
    assert_fails(&o, want);
    assert!(
        files_in(&out).is_empty(),
        "files written: {:?}",
        files_in(&out)
    );
}

#[test]
fn truncated_safetensors() {
    let b = safetensors_bytes(&hf_tensors(true));
    bad_safetensors(b[..b.len() - 100].to_vec(), "not a valid safetensors file");
    bad_safetensors(b[..4].to_vec(), "not a valid safetensors file");
}

#[test]
fn header_length_beyond_file() {
    let mut b = safetensors_bytes(&hf_tensors(true));
    let twice = b.len() as u64 * 2;
    b[..8].copy_from_slice(&twice.to_le_bytes());
    bad_safetensors(b, "not a valid safetensors file");
    let mut b = safetensors_bytes(&hf_tensors(true));
    b[..8].copy_from_slice(&u64::MAX.to_le_bytes());
    bad_safetensors(b, "not a valid safetensors file");
}

#[test]
fn overlapping_and_out_of_range_offsets() {
    let ts = hf_tensors(true);
    // rewrite the header with the second tensor starting inside the first
    let mut b = safetensors_bytes(&ts);
    let hl = u64::from_le_bytes(b[..8].try_into().unwrap()) as usize;
    let mut h: serde_json::Value = serde_json::from_slice(&b[8..8 + hl]).unwrap();
    let first = ts[0].data.len();
    h[&ts[1].name]["data_offsets"] = serde_json::json!([first - 2, first - 2 + ts[1].data.len()]);
    let mut hs = h.to_string();
    while hs.len() < hl {
        hs.push(' ');
    }
    if hs.len() == hl {
        b.splice(8..8 + hl, hs.into_bytes());
        bad_safetensors(b, "invalid offset");
    }
    // out of range: last tensor ends past the data
    let mut ts2 = hf_tensors(true);
    let last = ts2.len() - 1;
    ts2[last].data.truncate(4);
    let mut b = safetensors_bytes(&ts2);
    let hl = u64::from_le_bytes(b[..8].try_into().unwrap()) as usize;
    let mut h: serde_json::Value = serde_json::from_slice(&b[8..8 + hl]).unwrap();
    let start = h[&ts2[last].name]["data_offsets"][0].as_u64().unwrap();
    h[&ts2[last].name]["data_offsets"] = serde_json::json!([start, start + HIDDEN * 4]);
    let mut hs = h.to_string();
    while hs.len() < hl {
        hs.push(' ');
    }
    assert_eq!(hs.len(), hl);
    b.splice(8..8 + hl, hs.into_bytes());
    bad_safetensors(b, "not a valid safetensors file");
}

#[test]
fn shape_byte_count_mismatch() {
    let mut ts = hf_tensors(true);
    ts[1].shape = vec![HIDDEN * 2]; // a norm claiming twice its bytes
    bad_safetensors(safetensors_bytes(&ts), "not a valid safetensors file");
    // consistent bytes, but not the shape config.json implies
    let mut ts = hf_tensors(true);
    ts[2].shape = vec![HIDDEN / 2, HIDDEN * 2];
    bad_safetensors(safetensors_bytes(&ts), "implies");
}

#[test]
fn unknown_and_unsupported_dtype() {
    let mut ts = hf_tensors(true);
    ts[0].dtype = "Q4".into();
    bad_safetensors(safetensors_bytes(&ts), "unknown variant `Q4`");
    let mut ts = hf_tensors(true);
    ts[0].dtype = "I16".into();
    bad_safetensors(safetensors_bytes(&ts), "has dtype I16");
}

#[test]
fn unknown_tensor_is_named() {
    let mut ts = hf_tensors(true);
    ts.push(StTensor {
        name: "model.layers.0.mlp.experts.weight".into(),
        dtype: "F32".into(),
        shape: vec![2],
        data: vec![0; 8],
    });
    bad_safetensors(
        safetensors_bytes(&ts),
        "`model.layers.0.mlp.experts.weight` is not part of a llama model",
    );
}

fn bad_config(edit: impl Fn(&mut serde_json::Value), want: &str) {
    let d = tempfile::tempdir().unwrap();
    let ck = checkpoint(d.path(), true);
    let mut c = config(true);
    edit(&mut c);
    std::fs::write(ck.join("config.json"), c.to_string()).unwrap();
    let out = d.path().join("out");
    std::fs::create_dir(&out).unwrap();
    let o = run_q(&ck, &out.join("m.gguf"), &["--type", "q8_0"]);
    assert_fails(&o, want);
    assert!(files_in(&out).is_empty());
}

#[test]
fn config_errors() {
    bad_config(
        |c| {
            c.as_object_mut().unwrap().remove("num_hidden_layers");
        },
        "missing key `num_hidden_layers`",
    );
    bad_config(
        |c| c["num_attention_heads"] = 6.into(),
        "`hidden_size` 64 is not divisible by `num_attention_heads` 6",
    );
    bad_config(
        |c| c["num_key_value_heads"] = 3.into(),
        "not divisible by `num_key_value_heads` 3",
    );
    bad_config(
        |c| c["hidden_size"] = "big".into(),
        "`hidden_size` is \"big\"",
    );
    bad_config(
        |c| c["architectures"] = serde_json::json!(["MistralForCausalLM"]),
        "unsupported architecture `MistralForCausalLM`",
    );
    bad_config(
        |c| c["rope_scaling"] = serde_json::json!({"type": "yarn", "factor": 4.0}),
        "`yarn` is not supported",
    );
    // config says untied but there is no lm_head
    bad_config(
        |c| c["tie_word_embeddings"] = false.into(),
        "no tensor `lm_head.weight`",
    );
}

#[test]
fn missing_tokenizer() {
    let d = tempfile::tempdir().unwrap();
    let ck = checkpoint(d.path(), true);
    std::fs::remove_file(ck.join("tokenizer.json")).unwrap();
    let out = d.path().join("out");
    std::fs::create_dir(&out).unwrap();
    let o = run_q(&ck, &out.join("m.gguf"), &["--type", "q8_0"]);
    assert_fails(&o, "has no `tokenizer.json`");
    assert!(files_in(&out).is_empty());
}

#[test]
fn unknown_quant_type_and_tier() {
    let d = tempfile::tempdir().unwrap();
    let g = gguf_input(d.path(), 256);
    let out = d.path().join("out");
    std::fs::create_dir(&out).unwrap();
    let o = run_q(&g, &out.join("m.gguf"), &["--type", "q3_x"]);
    assert_fails(&o, "unknown quantization type `q3_x`");
    assert_eq!(o.status.code(), Some(2));
    let o = run_q(
        &g,
        &out.join("m.gguf"),
        &["--type", "q8_0", "--override", "attn_v=q9_0"],
    );
    assert_fails(&o, "unknown tensor type `q9_0`");
    let r = write_recipe(d.path(), RECIPE);
    let o = run_q(
        &g,
        &out,
        &["--recipe", r.to_str().unwrap(), "--tier", "ultra"],
    );
    assert_fails(&o, "unknown tier `ultra`");
    assert!(files_in(&out).is_empty());
}

const RECIPE: &str = r#"
model: tiny
version: 0.1.0
name: Tiny Llama
tiers:
  low:
    type: q4_k_m
    max_bytes: 10MB
    requires:
      min_ram: 64MiB
      cpu_features: [avx2]
      arch: [x86_64, aarch64]
  medium:
    type: q8_0
  high:
    type: f16
"#;

fn write_recipe(dir: &Path, text: &str) -> PathBuf {
    let p = dir.join("recipe.yaml");
    std::fs::write(&p, text).unwrap();
    p
}

#[test]
fn recipe_typo_is_an_error() {
    let d = tempfile::tempdir().unwrap();
    let g = gguf_input(d.path(), 256);
    let r = write_recipe(d.path(), &RECIPE.replace("max_bytes", "max_size"));
    let out = d.path().join("dist");
    let o = run_q(&g, &out, &["--recipe", r.to_str().unwrap()]);
    assert_fails(&o, "unknown field `max_size`");
    assert!(!out.exists());
}

#[test]
fn budget_that_cannot_be_met() {
    let d = tempfile::tempdir().unwrap();
    let g = gguf_input(d.path(), 256);
    let r = write_recipe(d.path(), &RECIPE.replace("10MB", "100KB"));
    let out = d.path().join("dist");
    let o = run_q(&g, &out, &["--recipe", r.to_str().unwrap()]);
    assert_fails(&o, "tier `low` would be");
    assert!(stderr(&o).contains("over its budget of 100000 bytes"));
    assert!(stderr(&o).contains("hint:"));
    assert_eq!(o.status.code(), Some(4));
    assert!(files_in(&out).is_empty(), "{:?}", files_in(&out));
}

#[test]
fn output_folder_not_writable() {
    let d = tempfile::tempdir().unwrap();
    let g = gguf_input(d.path(), 256);
    // a regular file where a folder should be: no one can write below it, root included
    let blocker = d.path().join("blocker");
    std::fs::write(&blocker, b"x").unwrap();
    let o = run_q(&g, &blocker.join("sub").join("m.gguf"), &["--type", "q8_0"]);
    assert_fails(&o, "is not writable");
    let r = write_recipe(d.path(), RECIPE);
    let o = run_q(
        &g,
        &blocker.join("dist"),
        &["--recipe", r.to_str().unwrap()],
    );
    assert_fails(&o, "is not writable");
    assert_eq!(std::fs::read(&blocker).unwrap(), b"x");
}

#[test]
fn requantizing_a_4_bit_gguf_needs_the_flag() {
    let d = tempfile::tempdir().unwrap();
    let g = gguf_input(d.path(), 256);
    let q4 = d.path().join("q4.gguf");
    let o = run_q(&g, &q4, &["--type", "q4_0", "-q"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let out = d.path().join("out");
    std::fs::create_dir(&out).unwrap();
    let o = run_q(&q4, &out.join("m.gguf"), &["--type", "q8_0"]);
    assert_fails(&o, "--allow-requantize");
    assert!(files_in(&out).is_empty());
    let o = run_q(
        &q4,
        &out.join("m.gguf"),
        &["--type", "q8_0", "--allow-requantize", "-q"],
    );
    assert!(o.status.success(), "{}", stderr(&o));
}

#[test]
fn gguf_input_q4_k_m_types_fallbacks_and_determinism() {
    let d = tempfile::tempdir().unwrap();
    // 576 = SmolLM2's width: not a multiple of 256
    let g = gguf_input(d.path(), 576);
    let a = d.path().join("a.gguf");
    let o = run_q(&g, &a, &["--type", "Q4_K_M"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let e = stderr(&o);
    assert!(
        e.contains("warning: Q4_K -> Q5_0 for ") && e.contains("warning: Q6_K -> Q8_0 for "),
        "{e}"
    );
    assert!(stdout(&o).contains("a.gguf"));
    let f = GgufFile::open(&a).unwrap();
    assert_eq!(f.get_u64("general.file_type"), Some(15));
    assert_eq!(f.get_u64("general.quantization_version"), Some(2));
    assert_eq!(f.get_str("general.name"), Some("tiny"));
    let ty = |n: &str| f.tensor(n).unwrap().ty;
    assert_eq!(ty("token_embd.weight"), GgmlType::Q8_0);
    assert_eq!(ty("blk.0.attn_norm.weight"), GgmlType::F32);
    assert_eq!(ty("blk.0.attn_v.weight"), GgmlType::Q8_0); // Q6_K by use_more_bits, then fallback
    assert_eq!(ty("blk.2.attn_v.weight"), GgmlType::Q5_0);
    assert_eq!(ty("blk.0.ffn_down.weight"), GgmlType::Q6_K); // rows of 512 fit
    assert_eq!(ty("blk.2.ffn_down.weight"), GgmlType::Q4_K);
    // same input, same bytes
    let b = d.path().join("b.gguf");
    let o = run_q(&g, &b, &["--type", "q4_k_m", "-q", "-j", "1"]);
    assert!(o.status.success());
    assert_eq!(std::fs::read(&a).unwrap(), std::fs::read(&b).unwrap());
    // --json lists the fallbacks
    let c = d.path().join("c.gguf");
    let o = run_q(&g, &c, &["--type", "q4_k_m", "-q", "--json"]);
    let j: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let fb = j["outputs"][0]["fallbacks"].as_array().unwrap();
    assert!(fb
        .iter()
        .any(|f| f["tensor"] == "blk.1.attn_q.weight" && f["used"] == "Q5_0"));
}

#[test]
fn pure_and_overrides() {
    let d = tempfile::tempdir().unwrap();
    let g = gguf_input(d.path(), 256);
    let p = d.path().join("p.gguf");
    let o = run_q(
        &g,
        &p,
        &[
            "--type",
            "q4_k_m",
            "--pure",
            "-q",
            "--override",
            "^blk\\.1\\.ffn_up=q8_0",
        ],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let f = GgufFile::open(&p).unwrap();
    for t in &f.tensors {
        let want = if t.dims.len() == 1 {
            GgmlType::F32
        } else if t.name == "blk.1.ffn_up.weight" {
            GgmlType::Q8_0
        } else {
            GgmlType::Q4_K
        };
        assert_eq!(t.ty, want, "{}", t.name);
    }
}

#[test]
fn recipe_builds_every_tier_and_build_json() {
    let d = tempfile::tempdir().unwrap();
    let g = gguf_input(d.path(), 256);
    let r = write_recipe(d.path(), RECIPE);
    let out = d.path().join("dist");
    let o = run_q(&g, &out, &["--recipe", r.to_str().unwrap()]);
    assert!(o.status.success(), "{}", stderr(&o));
    let e = stderr(&o);
    assert!(
        e.contains("[low] 1/"),
        "plain progress lines when not a terminal: {e}"
    );
    let s = stdout(&o);
    for h in ["tier", "size", "bpw", "seconds", "low", "medium", "high"] {
        assert!(s.contains(h), "{h} not in {s}");
    }
    assert_eq!(
        files_in(&out),
        vec![
            "tiny/0.1.0/build.json",
            "tiny/0.1.0/high.gguf",
            "tiny/0.1.0/low.gguf",
            "tiny/0.1.0/medium.gguf"
        ]
    );
    let dir = out.join("tiny/0.1.0");
    let b: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("build.json")).unwrap()).unwrap();
    assert_eq!(b["schema"], 1);
    assert_eq!(b["model"], "tiny");
    assert_eq!(b["version"], "0.1.0");
    let tiers = b["tiers"].as_array().unwrap();
    let names: Vec<&str> = tiers.iter().map(|t| t["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["low", "medium", "high"]);
    assert_eq!(tiers[0]["file"], "low.gguf");
    assert_eq!(tiers[0]["mix"], "q4_k_m");
    assert_eq!(tiers[0]["requires"]["min_ram_bytes"], 64 << 20);
    assert_eq!(
        tiers[0]["requires"]["cpu_features"],
        serde_json::json!(["avx2"])
    );
    assert_eq!(
        tiers[0]["size"],
        std::fs::metadata(dir.join("low.gguf")).unwrap().len()
    );
    let bpw = tiers[2]["bits_per_weight"].as_f64().unwrap();
    assert!(bpw > 16.0 && bpw < 16.1, "F16 plus F32 norms: {bpw}");
    let f = GgufFile::open(dir.join("medium.gguf")).unwrap();
    assert_eq!(f.get_str("general.version"), Some("0.1.0"));
    assert_eq!(f.get_str("general.name"), Some("Tiny Llama"));
    // rebuilding one tier keeps the others in build.json
    let o = run_q(
        &g,
        &out,
        &["--recipe", r.to_str().unwrap(), "--tier", "medium", "-q"],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let b2: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("build.json")).unwrap()).unwrap();
    assert_eq!(b2["tiers"].as_array().unwrap().len(), 3);
}

#[test]
fn inspect_gguf_text_and_json() {
    let d = tempfile::tempdir().unwrap();
    let g = gguf_input(d.path(), 256);
    let o = slmpack_p(&["inspect".as_ref(), g.as_os_str()]);
    assert!(o.status.success(), "{}", stderr(&o));
    let s = stdout(&o);
    assert!(
        s.contains("token_embd.weight")
            && s.contains("general.architecture")
            && s.contains("bits per weight")
    );
    let o = slmpack_p(&["inspect".as_ref(), g.as_os_str(), "--json".as_ref()]);
    let j: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(j["format"], "gguf");
    assert_eq!(j["metadata"]["general.architecture"], "llama");
    let n = 300 * 256 + 8 * (256 * 2 + 256 * 256 * 2 + 256 * 128 * 2 + 256 * 512 * 3) + 256;
    assert_eq!(j["n_params"], n);
    assert_eq!(j["tensors"][0]["shape"], serde_json::json!([300, 256]));
    assert_eq!(j["types"][0]["type"], "F16");
}

#[test]
fn inspect_checkpoint_and_safetensors() {
    let d = tempfile::tempdir().unwrap();
    let ck = checkpoint(d.path(), false);
    let o = slmpack_p(&["inspect".as_ref(), ck.as_os_str(), "--json".as_ref()]);
    assert!(o.status.success(), "{}", stderr(&o));
    let j: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(j["format"], "checkpoint");
    assert_eq!(j["metadata"]["hidden_size"], HIDDEN);
    assert_eq!(
        j["tensors"].as_array().unwrap().len(),
        hf_tensors(false).len()
    );
    let st = ck.join("model.safetensors");
    let o = slmpack_p(&["inspect".as_ref(), st.as_os_str()]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stdout(&o).contains("model.embed_tokens.weight"));
    // a truncated file is an error, not a panic
    let b = std::fs::read(&st).unwrap();
    std::fs::write(&st, &b[..b.len() / 2]).unwrap();
    let o = slmpack_p(&["inspect".as_ref(), st.as_os_str()]);
    assert_fails(&o, "not a valid safetensors file");
}

#[test]
fn checkpoint_to_f16_permutes_q_and_k() {
    let d = tempfile::tempdir().unwrap();
    let ck = checkpoint(d.path(), true);
    let out = d.path().join("f16.gguf");
    let o = run_q(&ck, &out, &["--type", "f16", "-q"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let f = GgufFile::open(&out).unwrap();
    assert_eq!(f.get_str("general.architecture"), Some("llama"));
    assert_eq!(f.get_u64("llama.block_count"), Some(LAYERS));
    assert_eq!(f.get_u64("llama.attention.head_count_kv"), Some(KV_HEADS));
    assert_eq!(
        f.get_u64("llama.rope.dimension_count"),
        Some(HIDDEN / HEADS)
    );
    assert_eq!(f.get_u64("general.file_type"), Some(1));
    assert!(f.get("tokenizer.ggml.tokens").is_some());
    assert!(
        f.tensor("output.weight").is_none(),
        "tied embeddings write no output.weight"
    );
    let ts = hf_tensors(true);
    let hf = |n: &str| ts.iter().find(|t| t.name == n).unwrap();
    let hd = (HIDDEN / HEADS) as usize;
    let row = HIDDEN as usize * 2;
    for (g, h, nh) in [
        (
            "blk.0.attn_q.weight",
            "model.layers.0.self_attn.q_proj.weight",
            HEADS as usize,
        ),
        (
            "blk.0.attn_k.weight",
            "model.layers.0.self_attn.k_proj.weight",
            KV_HEADS as usize,
        ),
    ] {
        let (_, got) = f.tensor_bytes(g).unwrap();
        let src = &hf(h).data;
        for head in 0..nh {
            for j in 0..hd / 2 {
                for k in 0..2 {
                    let out_r = head * hd + j * 2 + k;
                    let in_r = head * hd + k * hd / 2 + j;
                    assert_eq!(
                        &got[out_r * row..(out_r + 1) * row],
                        &src[in_r * row..(in_r + 1) * row],
                        "{g} row {out_r}"
                    );
                }
            }
        }
    }
    // V is not permuted, norms stay F32 and bit-exact
    let (_, v) = f.tensor_bytes("blk.1.attn_v.weight").unwrap();
    assert_eq!(v, &hf("model.layers.1.self_attn.v_proj.weight").data[..]);
    let (t, n) = f.tensor_bytes("output_norm.weight").unwrap();
    assert_eq!(t.ty, GgmlType::F32);
    assert_eq!(n, &hf("model.norm.weight").data[..]);
}

#[test]
fn sharded_and_bf16_checkpoints() {
    let d = tempfile::tempdir().unwrap();
    let ck = checkpoint(d.path(), false);
    let single = d.path().join("single.gguf");
    let o = run_q(&ck, &single, &["--type", "q8_0", "-q"]);
    assert!(o.status.success(), "{}", stderr(&o));

    // the same tensors in two shards with an index
    let ts = hf_tensors(false);
    let (a, b) = ts.split_at(ts.len() / 2);
    let mut map = serde_json::Map::new();
    for (part, name) in [
        (a, "model-00001-of-00002.safetensors"),
        (b, "model-00002-of-00002.safetensors"),
    ] {
        std::fs::write(ck.join(name), safetensors_bytes(part)).unwrap();
        for t in part {
            map.insert(t.name.clone(), name.into());
        }
    }
    std::fs::remove_file(ck.join("model.safetensors")).unwrap();
    std::fs::write(
        ck.join("model.safetensors.index.json"),
        serde_json::json!({"metadata": {}, "weight_map": map}).to_string(),
    )
    .unwrap();
    let sharded = d.path().join("sharded.gguf");
    let o = run_q(&ck, &sharded, &["--type", "q8_0", "-q"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(
        std::fs::read(&single).unwrap(),
        std::fs::read(&sharded).unwrap()
    );

    // a missing shard is named
    std::fs::remove_file(ck.join("model-00002-of-00002.safetensors")).unwrap();
    let o = run_q(&ck, &d.path().join("x.gguf"), &["--type", "q8_0"]);
    assert_fails(&o, "model-00002-of-00002.safetensors");
    assert!(!d.path().join("x.gguf").exists());

    // BF16 weights: F32 output holds exactly the BF16 values
    let d2 = tempfile::tempdir().unwrap();
    let ck2 = checkpoint(d2.path(), true);
    let mut ts = hf_tensors(true);
    for t in ts.iter_mut().filter(|t| t.dtype == "F16") {
        t.data = t
            .data
            .chunks_exact(2)
            .flat_map(|c| {
                half::bf16::from_f32(half::f16::from_le_bytes([c[0], c[1]]).to_f32()).to_le_bytes()
            })
            .collect();
        t.dtype = "BF16".into();
    }
    std::fs::write(ck2.join("model.safetensors"), safetensors_bytes(&ts)).unwrap();
    let out = d2.path().join("f32.gguf");
    let o = run_q(&ck2, &out, &["--type", "f32", "-q"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let f = GgufFile::open(&out).unwrap();
    let (t, got) = f.tensor_bytes("blk.0.ffn_up.weight").unwrap();
    assert_eq!(t.ty, GgmlType::F32);
    let src = &ts
        .iter()
        .find(|t| t.name == "model.layers.0.mlp.up_proj.weight")
        .unwrap()
        .data;
    let want: Vec<u8> = src
        .chunks_exact(2)
        .flat_map(|c| {
            half::bf16::from_le_bytes([c[0], c[1]])
                .to_f32()
                .to_le_bytes()
        })
        .collect();
    assert_eq!(got, &want[..]);
}

#[test]
fn dry_run_plans_exact_sizes_and_writes_nothing() {
    let d = tempfile::tempdir().unwrap();
    let g = gguf_input(d.path(), 256);
    let r = write_recipe(d.path(), RECIPE);
    let out = d.path().join("dist");
    let o = run_q(
        &g,
        &out,
        &["--recipe", r.to_str().unwrap(), "--dry-run", "--json"],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(!out.exists(), "a dry run created {:?}", files_in(&out));
    let planned: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let o = run_q(&g, &out, &["--recipe", r.to_str().unwrap(), "-q"]);
    assert!(o.status.success(), "{}", stderr(&o));
    for t in planned["outputs"].as_array().unwrap() {
        let file = out
            .join("tiny/0.1.0")
            .join(format!("{}.gguf", t["tier"].as_str().unwrap()));
        assert_eq!(
            t["size"],
            std::fs::metadata(&file).unwrap().len(),
            "{file:?}"
        );
    }
}
