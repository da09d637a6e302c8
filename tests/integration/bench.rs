//! `bench` and `bench compare` end to end: scenario errors name the file and the key; compare
//! exits 4 only for a regression beyond the error bars and the threshold.

use std::path::Path;
use std::process::Command;

use serde_json::json;

struct Out {
    code: i32,
    stdout: String,
    stderr: String,
}

fn slmpack(dir: &Path, args: &[&str]) -> Out {
    let o = Command::new(env!("CARGO_BIN_EXE_slmpack"))
        .current_dir(dir)
        .args(args)
        .output()
        .expect("run slmpack");
    Out {
        code: o.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&o.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
    }
}

/// A minimal report: one tier, one tg workload with the given t/s samples, one perplexity.
fn report(tps: &[f64], ppl: f64, ppl_err: f64) -> serde_json::Value {
    let n = tps.len() as f64;
    let mean = tps.iter().sum::<f64>() / n;
    let sd = (tps.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (n - 1.0)).sqrt();
    let energy = json!({"method": "estimate(laptop-x86)", "joules": 1.0, "tokens": 100,
                        "joules_per_token": 0.01, "joules_per_answer": null});
    let speed = json!({"type": "speed", "n_tokens": 128, "depth": 0, "warmup": 1,
        "samples_s": tps.iter().map(|t| 128.0 / t).collect::<Vec<_>>(),
        "samples_tps": tps,
        "tps": {"n": tps.len(), "mean": mean, "sd": sd,
                "min": tps.iter().copied().fold(f64::INFINITY, f64::min),
                "max": tps.iter().copied().fold(0.0, f64::max)}});
    let text = json!({"type": "text", "file": "t.txt", "n_ctx": 256, "chunks": 4,
        "ppl": {"ppl": ppl, "err": ppl_err, "tokens": 508}, "kld": null});
    let workloads = json!([
        {"scenario": "s", "name": "tg128", "kind": "tg", "duration_s": 1.0,
         "result": speed, "energy": energy},
        {"scenario": "s", "name": "ppl", "kind": "perplexity", "duration_s": 1.0,
         "result": text, "energy": energy}
    ]);
    let tier = json!({
        "name": "q4_0", "file": "q4_0.gguf", "file_bytes": 1000, "sha256": "00",
        "bits_per_weight": 4.5, "load_s": 0.1, "mapped_bytes": 1000, "kv_bytes": 10,
        "n_ctx": 512, "n_params": 10, "peak_rss_bytes": null, "peak_rss_reset": false,
        "workloads": workloads
    });
    let machine = json!({"cpu": "test", "cores_available": 2, "threads_used": 2,
        "isa": "scalar", "os": "Linux", "arch": "x86_64", "slmpack_version": "0.1.0",
        "git_commit": "x"});
    json!({
        "schema": 1,
        "created_unix": 0,
        "machine": machine,
        "runner": "test",
        "energy_method": "estimate(laptop-x86)",
        "scenarios": ["s"],
        "reference_tier": null,
        "tiers": [tier]
    })
}

fn write(dir: &Path, name: &str, v: &serde_json::Value) {
    std::fs::write(dir.join(name), serde_json::to_string_pretty(v).unwrap()).unwrap();
}

#[test]
fn bad_scenario_is_a_clear_error() {
    let t = tempfile::tempdir().unwrap();
    std::fs::write(t.path().join("m.gguf"), b"not read before the scenario").unwrap();
    std::fs::write(
        t.path().join("bad.yaml"),
        "name: x\nworkloads:\n  - {kind: pp, name: a, n_prompt: 8, n_promt: 9}\n",
    )
    .unwrap();
    let r = slmpack(t.path(), &["bench", "m.gguf", "--scenario", "bad.yaml"]);
    assert_eq!(r.code, 1, "{}", r.stderr);
    assert!(r.stderr.contains("`bad.yaml`"), "{}", r.stderr);
    assert!(r.stderr.contains("n_promt"), "{}", r.stderr);
    let r = slmpack(t.path(), &["bench", "m.gguf", "--scenario", "missing.yaml"]);
    assert_eq!(r.code, 1);
    assert!(r.stderr.contains("`missing.yaml`"), "{}", r.stderr);
}

#[test]
fn compare_gates_on_regressions_beyond_error_bars() {
    let t = tempfile::tempdir().unwrap();
    let d = t.path();
    write(d, "base.json", &report(&[50.0, 51.0, 49.0], 20.0, 0.5));
    // decode 50 -> 40 t/s (−20 %, sd 1): a regression at 5 %
    write(d, "slow.json", &report(&[40.0, 41.0, 39.0], 20.0, 0.5));
    // perplexity 20 -> 21 with error bars 0.5 + 0.5: 1.0 − 1.0 = 0 < 5 % of 20: not one
    write(d, "noisy.json", &report(&[50.0, 51.0, 49.0], 21.0, 0.5));

    let r = slmpack(d, &["bench", "compare", "base.json", "slow.json"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(r.stdout.contains("q4_0/s/tg128/tps"), "{}", r.stdout);
    assert!(r.stdout.contains("-20.00%"), "{}", r.stdout);

    let r = slmpack(
        d,
        &[
            "bench",
            "compare",
            "base.json",
            "slow.json",
            "--fail-if-regress",
            "5%",
        ],
    );
    assert_eq!(r.code, 4, "{}{}", r.stdout, r.stderr);
    assert!(r.stderr.contains("`q4_0/s/tg128/tps`"), "{}", r.stderr);
    assert!(r.stdout.contains("REGRESSED"));

    let r = slmpack(
        d,
        &[
            "bench",
            "compare",
            "base.json",
            "slow.json",
            "--fail-if-regress",
            "25",
        ],
    );
    assert_eq!(r.code, 0, "{}", r.stderr);

    let r = slmpack(
        d,
        &[
            "bench",
            "compare",
            "base.json",
            "noisy.json",
            "--fail-if-regress",
            "1%",
        ],
    );
    assert_eq!(r.code, 0, "{}{}", r.stdout, r.stderr);

    let r = slmpack(
        d,
        &[
            "bench",
            "compare",
            "base.json",
            "base.json",
            "--fail-if-regress",
            "0%",
        ],
    );
    assert_eq!(r.code, 0, "{}", r.stderr);

    let r = slmpack(d, &["bench", "compare", "base.json", "nope.json"]);
    assert_eq!(r.code, 1);
    assert!(r.stderr.contains("`nope.json`"), "{}", r.stderr);
    std::fs::write(d.join("junk.json"), "{\"schema\": 1}").unwrap();
    let r = slmpack(d, &["bench", "compare", "base.json", "junk.json"]);
    assert_eq!(r.code, 1);
    assert!(
        r.stderr.contains("junk.json") && r.stderr.contains("hint"),
        "{}",
        r.stderr
    );
    let r = slmpack(
        d,
        &[
            "bench",
            "compare",
            "base.json",
            "slow.json",
            "--fail-if-regress",
            "lots",
        ],
    );
    assert_eq!(r.code, 2, "{}", r.stderr);
}
