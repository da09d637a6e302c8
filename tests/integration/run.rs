//! `slmpack run` / `slmpack logits`: bad input gives a clear error and a non-zero exit; a tiny
//! random llama GGUF written here generates, reports confidence, and escalates to (or survives
//! the absence of) a fallback server.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::path::Path;

use slmpack_gguf::{GgmlType, GgufWriter, Value, ValueType};

use super::{slmpack_p, stderr, stdout};

/// A tiny llama GGUF (F32, 1 layer, n_embd 32) with a byte-level vocabulary, or with a
/// different architecture / a missing tensor.
fn write_model(path: &Path, arch: &str, drop_tensor: Option<&str>) {
    let (n_embd, n_ff, n_head, n_kv) = (32u64, 64u64, 4u64, 2u64);
    let mut tokens: Vec<String> = super::byte_chars().iter().map(|c| c.to_string()).collect();
    tokens.extend(["<|endoftext|>", "<|im_start|>", "<|im_end|>"].map(String::from));
    let n_vocab = tokens.len() as u64;
    let mut types = vec![Value::I32(1); 256];
    types.extend([Value::I32(3), Value::I32(3), Value::I32(3)]);

    let mut w = GgufWriter::new();
    w.set("general.architecture", arch);
    let k = |s: &str| format!("{arch}.{s}");
    w.set(k("block_count"), 1u32);
    w.set(k("context_length"), 128u32);
    w.set(k("embedding_length"), n_embd as u32);
    w.set(k("feed_forward_length"), n_ff as u32);
    w.set(k("attention.head_count"), n_head as u32);
    w.set(k("attention.head_count_kv"), n_kv as u32);
    w.set(k("attention.layer_norm_rms_epsilon"), 1e-5f32);
    w.set(k("rope.freq_base"), 10000f32);
    w.set("tokenizer.ggml.model", "gpt2");
    w.set("tokenizer.ggml.pre", "smollm");
    w.set("tokenizer.ggml.tokens", Value::strings(tokens));
    w.set(
        "tokenizer.ggml.token_type",
        Value::array(ValueType::I32, types),
    );
    w.set(
        "tokenizer.ggml.merges",
        Value::strings(Vec::<String>::new()),
    );
    w.set("tokenizer.ggml.bos_token_id", 256u32);
    w.set("tokenizer.ggml.eos_token_id", 258u32);
    w.set("tokenizer.ggml.add_bos_token", false);
    w.set(
        "tokenizer.chat_template",
        "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'].strip() }}<|im_end|>\n{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}",
    );
    let hd = n_embd / n_head;
    let mut add = |name: &str, dims: Vec<u64>| {
        if Some(name) != drop_tensor {
            w.add_tensor(name, dims, GgmlType::F32).unwrap();
        }
    };
    add("token_embd.weight", vec![n_embd, n_vocab]);
    add("output_norm.weight", vec![n_embd]);
    add("blk.0.attn_norm.weight", vec![n_embd]);
    add("blk.0.attn_q.weight", vec![n_embd, n_head * hd]);
    add("blk.0.attn_k.weight", vec![n_embd, n_kv * hd]);
    add("blk.0.attn_v.weight", vec![n_embd, n_kv * hd]);
    add("blk.0.attn_output.weight", vec![n_head * hd, n_embd]);
    add("blk.0.ffn_norm.weight", vec![n_embd]);
    add("blk.0.ffn_gate.weight", vec![n_embd, n_ff]);
    add("blk.0.ffn_up.weight", vec![n_embd, n_ff]);
    add("blk.0.ffn_down.weight", vec![n_ff, n_embd]);
    let mut state = 12345u64;
    w.write(
        path,
        |_, spec, out: &mut dyn Write| -> std::io::Result<()> {
            let n: u64 = spec.dims.iter().product();
            for _ in 0..n {
                state = state
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                let u = (state >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0;
                let v = if spec.dims.len() == 1 {
                    1.0 + 0.1 * u
                } else {
                    u
                };
                out.write_all(&v.to_le_bytes())?;
            }
            Ok(())
        },
    )
    .unwrap();
}

fn fails_with(args: &[&std::ffi::OsStr], needles: &[&str]) {
    let o = slmpack_p(args);
    let err = stderr(&o);
    assert!(!o.status.success(), "expected failure, got success: {err}");
    assert!(err.starts_with("error: "), "{err}");
    for n in needles {
        assert!(err.contains(n), "missing `{n}` in: {err}");
    }
}

fn os(s: &(impl AsRef<std::ffi::OsStr> + ?Sized)) -> &std::ffi::OsStr {
    s.as_ref()
}

#[test]
fn missing_file_is_a_clear_error() {
    let d = tempfile::tempdir().unwrap();
    let p = d.path().join("nope.gguf");
    fails_with(
        &[os("run"), p.as_os_str(), os("-p"), os("hi")],
        &["nope.gguf"],
    );
    fails_with(
        &[
            os("logits"),
            p.as_os_str(),
            os("--tokens"),
            os("1"),
            os("--out"),
            d.path().join("x.npy").as_os_str(),
        ],
        &["nope.gguf"],
    );
}

#[test]
fn not_a_gguf_and_truncated_gguf_are_clear_errors() {
    let d = tempfile::tempdir().unwrap();
    let junk = d.path().join("junk.gguf");
    std::fs::write(&junk, b"this is not a model at all").unwrap();
    fails_with(
        &[os("run"), junk.as_os_str(), os("-p"), os("hi")],
        &["junk.gguf", "not a GGUF"],
    );

    let good = d.path().join("tiny.gguf");
    write_model(&good, "llama", None);
    let bytes = std::fs::read(&good).unwrap();
    let cut = d.path().join("cut.gguf");
    std::fs::write(&cut, &bytes[..bytes.len() / 2]).unwrap();
    fails_with(
        &[os("run"), cut.as_os_str(), os("-p"), os("hi")],
        &["cut.gguf", "truncated"],
    );
}

#[test]
fn non_llama_architecture_is_refused() {
    let d = tempfile::tempdir().unwrap();
    let p = d.path().join("bert.gguf");
    write_model(&p, "bert", None);
    fails_with(
        &[os("run"), p.as_os_str(), os("-p"), os("hi")],
        &["bert.gguf", "architecture `bert`", "hint:"],
    );
}

#[test]
fn missing_tensor_is_named() {
    let d = tempfile::tempdir().unwrap();
    let p = d.path().join("holey.gguf");
    write_model(&p, "llama", Some("blk.0.ffn_up.weight"));
    fails_with(
        &[os("run"), p.as_os_str(), os("-p"), os("hi")],
        &["holey.gguf", "`blk.0.ffn_up.weight`", "missing"],
    );
}

#[test]
fn bad_flags_are_usage_errors() {
    let d = tempfile::tempdir().unwrap();
    let p = d.path().join("tiny.gguf");
    write_model(&p, "llama", None);
    fails_with(
        &[
            os("run"),
            p.as_os_str(),
            os("-p"),
            os("hi"),
            os("--min-confidence"),
            os("1.5"),
        ],
        &["--min-confidence"],
    );
    let o = slmpack_p(&[
        os("run"),
        p.as_os_str(),
        os("-p"),
        os("hi"),
        os("--fallback-url"),
        os("http://x"),
    ]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    fails_with(
        &[
            os("logits"),
            p.as_os_str(),
            os("--tokens"),
            os("1,99999"),
            os("--out"),
            d.path().join("x.npy").as_os_str(),
        ],
        &["token id 99999"],
    );
}

fn json_run(p: &Path, extra: &[&str]) -> (serde_json::Value, String, i32) {
    let mut args = vec![
        os("run"),
        p.as_os_str(),
        os("-p"),
        os("héllo wörld"),
        os("-n"),
        os("6"),
        os("--json"),
    ];
    args.extend(extra.iter().map(os));
    let o = slmpack_p(&args);
    let v = serde_json::from_str(&stdout(&o))
        .unwrap_or_else(|e| panic!("{e}: {}\n{}", stdout(&o), stderr(&o)));
    (v, stderr(&o), o.status.code().unwrap())
}

#[test]
fn generates_deterministically_with_confidence_and_timings() {
    let d = tempfile::tempdir().unwrap();
    let p = d.path().join("tiny.gguf");
    write_model(&p, "llama", None);
    let (a, _, rc) = json_run(&p, &[]);
    assert_eq!(rc, 0);
    let (b, _, _) = json_run(&p, &["--threads", "1"]);
    assert_eq!(
        a["tokens"], b["tokens"],
        "greedy is deterministic across thread counts"
    );
    assert_eq!(a["path"], "local");
    let mean = a["confidence"]["mean"].as_f64().unwrap();
    let min = a["confidence"]["min"].as_f64().unwrap();
    assert!(0.0 < min && min <= mean && mean <= 1.0, "{a}");
    assert!(a["timings"]["load_ms"].as_f64().unwrap() > 0.0);
    assert!(a["timings"]["prompt_tokens"].as_u64().unwrap() >= 11);
    // sampling with a seed is reproducible
    let (s1, _, _) = json_run(
        &p,
        &[
            "--temp", "1.5", "--top-k", "0", "--top-p", "1", "--seed", "9",
        ],
    );
    let (s2, _, _) = json_run(
        &p,
        &[
            "--temp", "1.5", "--top-k", "0", "--top-p", "1", "--seed", "9",
        ],
    );
    assert_eq!(s1["tokens"], s2["tokens"]);
    // --chat renders the template (<|im_start|>... tokens appear in the prompt)
    let (c, _, _) = json_run(&p, &["--chat"]);
    assert!(
        c["timings"]["prompt_tokens"].as_u64().unwrap()
            > a["timings"]["prompt_tokens"].as_u64().unwrap()
    );
}

#[test]
fn ignore_eos_generates_every_requested_token() {
    let d = tempfile::tempdir().unwrap();
    let p = d.path().join("tiny.gguf");
    write_model(&p, "llama", None);
    // hot sampling over the whole vocabulary; the first seed whose answer ends on an
    // end-of-generation token (<|endoftext|> 256 or <|im_end|> 258) before `-n`
    let hot = |seed: &str, extra: &[&str]| {
        let flags = [
            "-p", "héllo", "-n", "100", "--json", "--temp", "3", "--top-k", "0", "--top-p", "1",
            "--seed", seed,
        ];
        let mut args = vec![os("run"), p.as_os_str()];
        args.extend(flags.iter().chain(extra).map(os));
        let o = slmpack_p(&args);
        assert!(o.status.success(), "{}", stderr(&o));
        serde_json::from_str::<serde_json::Value>(&stdout(&o)).unwrap()
    };
    let (seed, v) = (0..40)
        .map(|s| s.to_string())
        .find_map(|s| {
            let v = hot(&s, &[]);
            (v["stop"] == "eog").then_some((s, v))
        })
        .expect("some seed samples an end-of-generation token in 100 steps");
    assert!(v["n_tokens"].as_u64().unwrap() < 100, "{v}");
    let v = hot(&seed, &["--ignore-eos"]);
    assert_eq!(v["stop"], "length", "{v}");
    assert_eq!(v["n_tokens"], 100, "{v}");
    let ids: Vec<u64> = serde_json::from_value(v["tokens"].clone()).unwrap();
    assert!(
        !ids.contains(&256) && !ids.contains(&258),
        "no end-of-generation token sampled: {ids:?}"
    );
}

#[test]
fn profile_says_where_prefill_and_decode_time_went() {
    let d = tempfile::tempdir().unwrap();
    let p = d.path().join("tiny.gguf");
    write_model(&p, "llama", None);
    let (plain, _, _) = json_run(&p, &[]);
    assert!(plain.get("profile").is_none(), "no profile unless asked");
    let (v, _, rc) = json_run(&p, &["--profile"]);
    assert_eq!(rc, 0);
    assert_eq!(v["tokens"], plain["tokens"], "profiling changes no token");
    let t = &v["timings"];
    for (what, tokens, wall, sections) in [
        (
            "prefill",
            &t["prompt_tokens"],
            &t["prefill_ms"],
            &["qkv", "attention", "wo", "gate_up", "down", "output"][..],
        ),
        (
            "decode",
            &t["decode_tokens"],
            &t["decode_ms"],
            &[
                "qkv", "kq", "softmax", "pv", "wo", "gate_up", "down", "output",
            ][..],
        ),
    ] {
        let q = &v["profile"][what];
        assert_eq!(&q["tokens"], tokens, "{what}: {q}");
        let ms = q["ms"].as_object().unwrap();
        for s in sections {
            assert!(ms[*s].as_f64().unwrap() > 0.0, "{what} lacks `{s}`: {q}");
        }
        // the sections tile the passes, which the run's timer encloses
        let sum: f64 = ms.values().map(|x| x.as_f64().unwrap()).sum();
        let total = q["total_ms"].as_f64().unwrap();
        assert!((sum - total).abs() < 1e-6 * total.max(1.0), "{what}: {q}");
        assert!(
            total <= wall.as_f64().unwrap(),
            "{what}: {total} ms of {wall}"
        );
    }
    // without --json: a table on stderr
    let o = slmpack_p(&[
        os("run"),
        p.as_os_str(),
        os("-p"),
        os("hi"),
        os("-n"),
        os("3"),
        os("--profile"),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let err = stderr(&o);
    for want in ["profile: prefill", "profile: decode", "ms/token", "gate_up"] {
        assert!(err.contains(want), "no `{want}` in:\n{err}");
    }
}

/// Serve one chat completion; returns the URL and a receiver for the request body.
fn fake_server(answer: &'static str) -> (String, std::sync::mpsc::Receiver<String>) {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/v1/chat/completions", l.local_addr().unwrap());
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let (s, _) = l.accept().unwrap();
        let mut r = BufReader::new(s.try_clone().unwrap());
        let mut len = 0;
        loop {
            let mut line = String::new();
            r.read_line(&mut line).unwrap();
            if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                len = v.trim().parse().unwrap();
            }
            if line == "\r\n" {
                break;
            }
        }
        let mut body = vec![0; len];
        r.read_exact(&mut body).unwrap();
        let resp = format!(
            r#"{{"model":"big","choices":[{{"message":{{"role":"assistant","content":"{answer}"}}}}]}}"#
        );
        let mut s = s;
        write!(
            s,
            "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{resp}",
            resp.len()
        )
        .unwrap();
        tx.send(String::from_utf8(body).unwrap()).unwrap();
    });
    (url, rx)
}

#[test]
fn low_confidence_escalates_to_fallback() {
    let d = tempfile::tempdir().unwrap();
    let p = d.path().join("tiny.gguf");
    write_model(&p, "llama", None);
    let (url, rx) = fake_server("Bonjour from the big model");
    // a random model is never 99.99% sure
    let (v, err, rc) = json_run(&p, &["--min-confidence", "0.9999", "--fallback-url", &url]);
    assert_eq!(rc, 0, "{err}");
    assert_eq!(v["path"], "fallback", "{v}\n{err}");
    assert_eq!(v["text"], "Bonjour from the big model");
    assert!(v["local_text"].is_string());
    let req: serde_json::Value = serde_json::from_str(&rx.recv().unwrap()).unwrap();
    assert_eq!(req["messages"][0]["content"], "héllo wörld");

    // a threshold of 0 never escalates
    let (v, _, _) = json_run(
        &p,
        &[
            "--min-confidence",
            "0",
            "--fallback-url",
            "http://127.0.0.1:9/x",
        ],
    );
    assert_eq!(v["path"], "local");
}

#[test]
fn fallback_down_keeps_local_answer() {
    let d = tempfile::tempdir().unwrap();
    let p = d.path().join("tiny.gguf");
    write_model(&p, "llama", None);
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let url = format!("http://127.0.0.1:{port}/v1/chat/completions");
    let (v, err, rc) = json_run(&p, &["--min-confidence", "0.9999", "--fallback-url", &url]);
    assert_eq!(rc, 0, "{err}");
    assert_eq!(v["path"], "local-low-confidence");
    assert_eq!(v["text"], v["local_text"]);
    assert!(
        v["fallback"]["error"].as_str().unwrap().contains("refused"),
        "{v}"
    );
    assert!(
        err.contains("warning: fallback") && err.contains("keeping the local answer"),
        "{err}"
    );
    // text mode: the local answer is printed, with a note
    let o = slmpack_p(&[
        os("run"),
        p.as_os_str(),
        os("-p"),
        os("hi"),
        os("-n"),
        os("4"),
        os("--min-confidence"),
        os("0.9999"),
        os("--fallback-url"),
        os(&url),
    ]);
    assert!(o.status.success());
    assert!(stderr(&o).contains("low confidence"), "{}", stderr(&o));
}

/// `slmpack run -v` on a Q4_0 model with `SLMPACK_REPACK` set to `repack`.
fn verbose_q4_0_run(q: &Path, repack: &str) -> (serde_json::Value, String) {
    let o = std::process::Command::new(env!("CARGO_BIN_EXE_slmpack"))
        .args([
            os("run"),
            q.as_os_str(),
            os("-p"),
            os("hi there"),
            os("-n"),
            os("4"),
        ])
        .args([os("--json"), os("-v"), os("--threads"), os("1")])
        .env("SLMPACK_REPACK", repack)
        .output()
        .expect("run slmpack");
    assert!(o.status.success(), "{}", stderr(&o));
    let v = serde_json::from_str(&stdout(&o)).unwrap_or_else(|e| panic!("{e}: {}", stdout(&o)));
    (v, stderr(&o))
}

#[test]
fn verbose_run_reports_the_kernels_and_the_repacked_matrices() {
    let d = tempfile::tempdir().unwrap();
    let f32_model = d.path().join("tiny.gguf");
    write_model(&f32_model, "llama", None);
    let q = d.path().join("tiny.q4_0.gguf");
    let o = slmpack_p(&[
        os("quantize"),
        f32_model.as_os_str(),
        os("--type"),
        os("q4_0"),
        os("-o"),
        q.as_os_str(),
        os("-q"),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));

    let (packed, err) = verbose_q4_0_run(&q, "1");
    assert_eq!(err.matches("kernels: ").count(), 1, "{err}");
    // the seven block matrices come in whole groups of 8 rows; the 259-row tied output does not.
    // They are repacked where the kernels are x86 ones (AVX2, AVX-512: the only layout there
    // is), else none are; there the output is copied as it is.
    let line = err
        .lines()
        .find(|l| l.starts_with("repacked: "))
        .unwrap_or_else(|| panic!("no `repacked:` line in {err}"));
    let x86 = err.contains("kernels: avx2") || err.contains("kernels: avx512");
    let want = if x86 {
        "repacked: 7 matrices"
    } else {
        "repacked: 0 matrices"
    };
    assert!(line.starts_with(want), "{line}");
    // the output goes into the same buffer as it is (on x86, where the others are packed)
    let copied = if x86 {
        ", 1 copied as they are"
    } else {
        ", 0 copied as they are"
    };
    assert!(line.contains(copied), "{line}");
    // on Linux the line says how much of the copy the kernel put on huge pages (how much
    // depends on the system's settings and free memory, so only that it is said)
    if x86 && cfg!(target_os = "linux") {
        assert!(line.contains("MiB of the copy on huge pages"), "{line}");
    }

    let (plain, err) = verbose_q4_0_run(&q, "0");
    assert!(
        err.contains("repacked: 0 matrices") && err.contains(", 0 copied as they are"),
        "{err}"
    );
    // both layouts generate; the packed one sums in another order, so only the shape is compared
    assert!(
        packed["tokens"].is_array() && plain["tokens"].is_array(),
        "{packed}"
    );
    assert_eq!(
        packed["tokens"].as_array().map(Vec::len),
        plain["tokens"].as_array().map(Vec::len)
    );
}
