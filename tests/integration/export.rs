//! `slmpack export`: a tiny llama GGUF built here (Q/K rows permuted as llama.cpp's converter
//! does) exported back to a Hugging Face checkpoint; bad inputs refused with a message, a
//! non-zero exit and nothing written.

use std::path::{Path, PathBuf};

use safetensors::SafeTensors;
use serde_json::Value as Json;
use slmpack_gguf::{GgmlType, GgufWriter, Value};

use crate::{files_in, slmpack_p, stderr, stdout};

const HIDDEN: usize = 64;
const HEADS: usize = 4;
const KV_HEADS: usize = 2;
const FF: usize = 96;
const LAYERS: usize = 2;

/// Deterministic pseudo-random values in [-1, 1), exactly representable in f16.
fn values(seed: u64, n: usize) -> Vec<f32> {
    let mut s = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    (0..n)
        .map(|_| {
            s = s
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            let v = ((s >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0;
            half::f16::from_f32(v).to_f32()
        })
        .collect()
}

/// GPT-2's byte → unicode table.
fn byte_tokens() -> Vec<String> {
    let printable =
        |b: u32| (33..=126).contains(&b) || (161..=172).contains(&b) || (174..=255).contains(&b);
    let mut n = 0;
    (0..256u32)
        .map(|b| {
            if printable(b) {
                char::from_u32(b).unwrap().to_string()
            } else {
                n += 1;
                char::from_u32(255 + n).unwrap().to_string()
            }
        })
        .collect()
}

/// llama.cpp's `LlamaModel.permute` on rows.
fn permute(w: &[f32], rows: usize, cols: usize, n_head: usize) -> Vec<f32> {
    let half = rows / n_head / 2;
    let mut out = vec![0f32; w.len()];
    for h in 0..n_head {
        for i in 0..half {
            for j in 0..2 {
                let dst = h * 2 * half + i * 2 + j;
                let src = h * 2 * half + j * half + i;
                out[dst * cols..(dst + 1) * cols].copy_from_slice(&w[src * cols..(src + 1) * cols]);
            }
        }
    }
    out
}

struct Fixture {
    /// HF name → (HF shape, HF-order values)
    hf: Vec<(String, Vec<usize>, Vec<f32>)>,
    n_vocab: usize,
}

/// Write a tiny llama GGUF; returns the HF tensors it must export to.
fn write_gguf(path: &Path, arch: &str, tied: bool, with_tokenizer: bool) -> Fixture {
    write_gguf_b(path, arch, tied, with_tokenizer, false)
}

/// As [`write_gguf`], with Q/K/V biases when `bias` (permuted like the weights).
fn write_gguf_b(path: &Path, arch: &str, tied: bool, with_tokenizer: bool, bias: bool) -> Fixture {
    let mut tokens = byte_tokens();
    tokens.push("he".into());
    tokens.push("<|endoftext|>".into());
    let n_vocab = tokens.len();
    let mut types = vec![Value::I32(1); n_vocab];
    types[n_vocab - 1] = Value::I32(3);

    let mut w = GgufWriter::new();
    w.set("general.architecture", arch);
    w.set("general.name", "tiny");
    for (k, v) in [
        ("block_count", LAYERS),
        ("context_length", 256),
        ("embedding_length", HIDDEN),
        ("feed_forward_length", FF),
        ("attention.head_count", HEADS),
        ("attention.head_count_kv", KV_HEADS),
        ("vocab_size", n_vocab),
    ] {
        w.set(format!("{arch}.{k}"), Value::U32(v as u32));
    }
    w.set(
        format!("{arch}.attention.layer_norm_rms_epsilon"),
        Value::F32(1e-5),
    );
    w.set(format!("{arch}.rope.freq_base"), Value::F32(10000.0));
    if with_tokenizer {
        w.set("tokenizer.ggml.model", "gpt2");
        w.set("tokenizer.ggml.pre", "gpt-2");
        w.set("tokenizer.ggml.tokens", Value::strings(tokens.clone()));
        w.set(
            "tokenizer.ggml.token_type",
            Value::array(slmpack_gguf::ValueType::I32, types),
        );
        w.set("tokenizer.ggml.merges", Value::strings(["h e"]));
        w.set(
            "tokenizer.ggml.bos_token_id",
            Value::U32(n_vocab as u32 - 1),
        );
        w.set(
            "tokenizer.ggml.eos_token_id",
            Value::U32(n_vocab as u32 - 1),
        );
        w.set("tokenizer.chat_template", "{{ messages }}");
    }

    let hd = HIDDEN / HEADS;
    let mut specs: Vec<(&str, String, Vec<usize>)> = vec![(
        "token_embd.weight",
        "model.embed_tokens.weight".into(),
        vec![n_vocab, HIDDEN],
    )];
    let mut gguf_names = vec!["token_embd.weight".to_string()];
    for l in 0..LAYERS {
        for (g, h, shape) in [
            ("attn_norm", "input_layernorm", vec![HIDDEN]),
            ("attn_q", "self_attn.q_proj", vec![HEADS * hd, HIDDEN]),
            ("attn_k", "self_attn.k_proj", vec![KV_HEADS * hd, HIDDEN]),
            ("attn_v", "self_attn.v_proj", vec![KV_HEADS * hd, HIDDEN]),
            ("attn_output", "self_attn.o_proj", vec![HIDDEN, HEADS * hd]),
            ("ffn_norm", "post_attention_layernorm", vec![HIDDEN]),
            ("ffn_gate", "mlp.gate_proj", vec![FF, HIDDEN]),
            ("ffn_up", "mlp.up_proj", vec![FF, HIDDEN]),
            ("ffn_down", "mlp.down_proj", vec![HIDDEN, FF]),
        ] {
            gguf_names.push(format!("blk.{l}.{g}.weight"));
            specs.push(("", format!("model.layers.{l}.{h}.weight"), shape.clone()));
            if bias && matches!(g, "attn_q" | "attn_k" | "attn_v") {
                gguf_names.push(format!("blk.{l}.{g}.bias"));
                specs.push(("", format!("model.layers.{l}.{h}.bias"), vec![shape[0]]));
            }
        }
    }
    gguf_names.push("output_norm.weight".into());
    specs.push(("", "model.norm.weight".into(), vec![HIDDEN]));
    if !tied {
        gguf_names.push("output.weight".into());
        specs.push(("", "lm_head.weight".into(), vec![n_vocab, HIDDEN]));
    }

    let mut hf = Vec::new();
    let mut data: Vec<Vec<u8>> = Vec::new();
    for (i, ((_, hf_name, shape), gname)) in specs.into_iter().zip(&gguf_names).enumerate() {
        let n: usize = shape.iter().product();
        let v = values(i as u64 + 7, n);
        let cols = shape.get(1).copied().unwrap_or(1);
        let stored = if gname.contains("attn_q") {
            permute(&v, shape[0], cols, HEADS)
        } else if gname.contains("attn_k") {
            permute(&v, shape[0], cols, KV_HEADS)
        } else {
            v.clone()
        };
        let dims: Vec<u64> = shape.iter().rev().map(|&d| d as u64).collect();
        if shape.len() == 1 {
            w.add_tensor(gname.clone(), dims, GgmlType::F32).unwrap();
            data.push(stored.iter().flat_map(|x| x.to_le_bytes()).collect());
        } else {
            w.add_tensor(gname.clone(), dims, GgmlType::F16).unwrap();
            data.push(
                stored
                    .iter()
                    .flat_map(|x| half::f16::from_f32(*x).to_le_bytes())
                    .collect(),
            );
        }
        hf.push((hf_name, shape, v));
    }
    w.write(path, |i, _, out| out.write_all(&data[i])).unwrap();
    Fixture { hf, n_vocab }
}

fn read_json(p: &Path) -> Json {
    serde_json::from_slice(&std::fs::read(p).unwrap()).unwrap()
}

fn f32s(view: &safetensors::tensor::TensorView<'_>) -> Vec<f32> {
    match view.dtype() {
        safetensors::Dtype::F32 => view
            .data()
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect(),
        safetensors::Dtype::F16 => view
            .data()
            .chunks_exact(2)
            .map(|c| half::f16::from_le_bytes([c[0], c[1]]).to_f32())
            .collect(),
        safetensors::Dtype::BF16 => view
            .data()
            .chunks_exact(2)
            .map(|c| half::bf16::from_le_bytes([c[0], c[1]]).to_f32())
            .collect(),
        d => panic!("unexpected dtype {d:?}"),
    }
}

/// Every exported tensor, from all shards.
fn load_all(dir: &Path) -> Vec<(String, Vec<usize>, Vec<f32>)> {
    let mut out = Vec::new();
    for f in files_in(dir) {
        if !f.ends_with(".safetensors") {
            continue;
        }
        let bytes = std::fs::read(dir.join(&f)).unwrap();
        let st = SafeTensors::deserialize(&bytes).unwrap();
        for (name, view) in st.tensors() {
            out.push((name, view.shape().to_vec(), f32s(&view)));
        }
    }
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out
}

fn check_weights(dir: &Path, fx: &Fixture) {
    let got = load_all(dir);
    let mut want = fx.hf.clone();
    want.sort_by(|a, b| a.0.cmp(&b.0));
    assert_eq!(
        got.iter().map(|t| &t.0).collect::<Vec<_>>(),
        want.iter().map(|t| &t.0).collect::<Vec<_>>()
    );
    for (g, w) in got.iter().zip(&want) {
        assert_eq!(g.1, w.1, "shape of {}", g.0);
        assert!(g.2 == w.2, "values of {}", g.0);
    }
}

fn tmp() -> tempfile::TempDir {
    tempfile::tempdir().unwrap()
}

#[test]
fn export_tiny_llama_tied() {
    let d = tmp();
    let gguf = d.path().join("tiny.gguf");
    let fx = write_gguf(&gguf, "llama", true, true);
    let out = d.path().join("hf");
    let o = slmpack_p(&[
        "export".as_ref(),
        gguf.as_os_str(),
        "--out".as_ref(),
        out.as_os_str(),
        "--dtype".as_ref(),
        "f32".as_ref(),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stdout(&o).contains("tied embeddings"), "{}", stdout(&o));
    assert_eq!(
        files_in(&out),
        [
            "config.json",
            "generation_config.json",
            "model.safetensors",
            "tokenizer.json",
            "tokenizer_config.json"
        ]
    );
    check_weights(&out, &fx);
    let c = read_json(&out.join("config.json"));
    assert_eq!(c["architectures"][0], "LlamaForCausalLM");
    assert_eq!(c["hidden_size"], HIDDEN);
    assert_eq!(c["intermediate_size"], FF);
    assert_eq!(c["num_attention_heads"], HEADS);
    assert_eq!(c["num_key_value_heads"], KV_HEADS);
    assert_eq!(c["num_hidden_layers"], LAYERS);
    assert_eq!(c["vocab_size"], fx.n_vocab);
    assert_eq!(c["max_position_embeddings"], 256);
    assert_eq!(c["rms_norm_eps"], 1e-5);
    assert_eq!(c["rope_theta"], 10000.0);
    assert_eq!(c["tie_word_embeddings"], true);
    assert_eq!(c["torch_dtype"], "float32");
    assert_eq!(c["eos_token_id"], fx.n_vocab - 1);
    let tj = read_json(&out.join("tokenizer.json"));
    assert_eq!(tj["model"]["vocab"].as_object().unwrap().len(), fx.n_vocab);
    assert_eq!(tj["model"]["merges"][0], "h e");
    assert_eq!(tj["added_tokens"][0]["content"], "<|endoftext|>");
    let tc = read_json(&out.join("tokenizer_config.json"));
    assert_eq!(tc["chat_template"], "{{ messages }}");
    assert_eq!(tc["eos_token"], "<|endoftext|>");
    // no temp folders left next to the output
    assert_eq!(
        std::fs::read_dir(d.path()).unwrap().count(),
        2,
        "{:?}",
        files_in(d.path())
    );

    // bf16: each value rounded to nearest-even bf16
    let out16 = d.path().join("hf-bf16");
    let o = slmpack_p(&[
        "export".as_ref(),
        gguf.as_os_str(),
        "--out".as_ref(),
        out16.as_os_str(),
        "--dtype".as_ref(),
        "bf16".as_ref(),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let got = load_all(&out16);
    let mut want = fx.hf.clone();
    want.sort_by(|a, b| a.0.cmp(&b.0));
    let mut changed = 0;
    for (g, w) in got.iter().zip(&want) {
        assert_eq!(g.0, w.0);
        let r: Vec<f32> =
            w.2.iter()
                .map(|x| half::bf16::from_f32(*x).to_f32())
                .collect();
        changed += r.iter().zip(&w.2).filter(|(a, b)| a != b).count();
        assert!(g.2 == r, "bf16 values of {}", g.0);
    }
    assert!(changed > 0, "the fixture must exercise bf16 rounding");
    assert_eq!(
        read_json(&out16.join("config.json"))["torch_dtype"],
        "bfloat16"
    );
}

#[test]
fn export_untied_sharded_f16() {
    let d = tmp();
    let gguf = d.path().join("tiny.gguf");
    let fx = write_gguf_b(&gguf, "llama", false, true, true);
    let out = d.path().join("hf");
    let o = slmpack_p(&[
        "export".as_ref(),
        gguf.as_os_str(),
        "--out".as_ref(),
        out.as_os_str(),
        "--max-shard-size".as_ref(),
        "40KB".as_ref(),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    // the values are f16-exact, so f16 export is lossless
    check_weights(&out, &fx);
    let files = files_in(&out);
    let shards: Vec<&String> = files
        .iter()
        .filter(|f| f.ends_with(".safetensors"))
        .collect();
    assert!(shards.len() > 2, "{files:?}");
    let n = shards.len();
    for (k, s) in shards.iter().enumerate() {
        assert_eq!(**s, format!("model-{:05}-of-{n:05}.safetensors", k + 1));
        let len = std::fs::metadata(out.join(s)).unwrap().len();
        // one tensor may exceed the limit on its own (embeddings: 258*64*2 bytes)
        assert!(len < 40_000 + 33_100 + 4096, "{s}: {len}");
    }
    let idx = read_json(&out.join("model.safetensors.index.json"));
    let map = idx["weight_map"].as_object().unwrap();
    assert_eq!(map.len(), fx.hf.len());
    assert!(map.contains_key("lm_head.weight"));
    for (name, file) in map {
        let bytes = std::fs::read(out.join(file.as_str().unwrap())).unwrap();
        let st = SafeTensors::deserialize(&bytes).unwrap();
        assert!(st.tensor(name).is_ok(), "{name} not in {file}");
    }
    let c = read_json(&out.join("config.json"));
    assert_eq!(c["tie_word_embeddings"], false);
    assert_eq!(c["attention_bias"], true);
    assert!(map.contains_key("model.layers.1.self_attn.k_proj.bias"));
    assert_eq!(c["torch_dtype"], "float16");
}

fn export_fails(args: &[&std::ffi::OsStr], want: &[&str]) -> String {
    let o = slmpack_p(args);
    assert!(!o.status.success(), "expected failure: {}", stdout(&o));
    let e = stderr(&o);
    assert!(e.starts_with("error: "), "{e}");
    for w in want {
        assert!(e.contains(w), "missing {w:?} in:\n{e}");
    }
    e
}

#[test]
fn export_refuses_bad_inputs_and_writes_nothing() {
    let d = tmp();
    let good = d.path().join("good.gguf");
    write_gguf(&good, "llama", true, true);
    let out = d.path().join("out");
    let before = |extra: &[&str]| {
        let mut v: Vec<String> = vec!["good.gguf".into()];
        v.extend(extra.iter().map(|s| s.to_string()));
        v.sort();
        v
    };

    // truncated GGUF
    let trunc = d.path().join("trunc.gguf");
    let bytes = std::fs::read(&good).unwrap();
    std::fs::write(&trunc, &bytes[..bytes.len() / 2]).unwrap();
    export_fails(
        &[
            "export".as_ref(),
            trunc.as_os_str(),
            "--out".as_ref(),
            out.as_os_str(),
        ],
        &["trunc.gguf"],
    );
    assert!(!out.exists());

    // not llama
    let gpt2 = d.path().join("gpt2.gguf");
    write_gguf(&gpt2, "gpt2", true, true);
    export_fails(
        &[
            "export".as_ref(),
            gpt2.as_os_str(),
            "--out".as_ref(),
            out.as_os_str(),
        ],
        &["unsupported architecture `gpt2`", "hint:"],
    );
    assert!(!out.exists());

    // no tokenizer in the GGUF
    let notok = d.path().join("notok.gguf");
    write_gguf(&notok, "llama", true, false);
    export_fails(
        &[
            "export".as_ref(),
            notok.as_os_str(),
            "--out".as_ref(),
            out.as_os_str(),
        ],
        &["tokenizer", "`tokenizer.ggml.model` is missing"],
    );
    assert!(!out.exists());
    assert_eq!(
        files_in(d.path()),
        before(&["gpt2.gguf", "notok.gguf", "trunc.gguf"])
    );

    // unwritable output: its parent is a file
    let blocker = d.path().join("blocker");
    std::fs::write(&blocker, b"x").unwrap();
    let under = blocker.join("hf");
    export_fails(
        &[
            "export".as_ref(),
            good.as_os_str(),
            "--out".as_ref(),
            under.as_os_str(),
        ],
        &["is not an existing folder", "hint:"],
    );
    assert_eq!(std::fs::read(&blocker).unwrap(), b"x");

    // non-empty output without --force: refused, untouched; with --force: replaced
    std::fs::create_dir(&out).unwrap();
    std::fs::write(out.join("keep.txt"), b"mine").unwrap();
    export_fails(
        &[
            "export".as_ref(),
            good.as_os_str(),
            "--out".as_ref(),
            out.as_os_str(),
        ],
        &["folder is not empty", "--force"],
    );
    assert_eq!(files_in(&out), ["keep.txt"]);
    let o = slmpack_p(&[
        "export".as_ref(),
        good.as_os_str(),
        "--out".as_ref(),
        out.as_os_str(),
        "--force".as_ref(),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(!out.join("keep.txt").exists());
    assert!(out.join("model.safetensors").exists());

    // bad --dtype is a usage error (exit 2)
    let o = slmpack_p(&[
        "export".as_ref(),
        good.as_os_str(),
        "--out".as_ref(),
        d.path().join("x").as_os_str(),
        "--dtype".as_ref(),
        "q4_0".as_ref(),
    ]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(!d.path().join("x").exists());
    // nothing left over: no temp folders
    let names: Vec<PathBuf> = std::fs::read_dir(d.path())
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert!(
        names.iter().all(|p| !p
            .file_name()
            .unwrap()
            .to_string_lossy()
            .starts_with(".slmpack")),
        "{names:?}"
    );
}
