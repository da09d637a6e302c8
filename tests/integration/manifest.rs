//! `keygen`, `sign`, `verify`, `select`, `device`, `rotate` end to end: exit codes (3 for any
//! verification failure, 4 when no tier fits) and messages that name the check and the file.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn bin() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_slmpack"));
    c.env_remove("SLMPACK_TEST_PASS");
    c
}

struct Run {
    code: i32,
    stdout: String,
    stderr: String,
}

fn run(dir: &Path, args: &[&str]) -> Run {
    let out: Output = bin()
        .current_dir(dir)
        .args(args)
        .output()
        .expect("run slmpack");
    Run {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

fn ok(dir: &Path, args: &[&str]) -> String {
    let r = run(dir, args);
    assert_eq!(
        r.code, 0,
        "slmpack {args:?} failed:\n{}{}",
        r.stdout, r.stderr
    );
    r.stdout
}

/// Assert exit code `code` and that stderr mentions every one of `needles`.
fn fails(dir: &Path, args: &[&str], code: i32, needles: &[&str]) -> Run {
    let r = run(dir, args);
    assert_eq!(
        r.code, code,
        "slmpack {args:?}: expected exit {code}\nstdout: {}\nstderr: {}",
        r.stdout, r.stderr
    );
    for n in needles {
        assert!(
            r.stderr.contains(n),
            "slmpack {args:?}: stderr lacks {n:?}:\n{}",
            r.stderr
        );
    }
    r
}

fn random_bytes(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

/// A workspace with a key pair `keys/release` and an unsigned release `dist/tiny/<version>`.
struct Ws {
    tmp: tempfile::TempDir,
}

impl Ws {
    fn new() -> Self {
        let ws = Ws {
            tmp: tempfile::tempdir().unwrap(),
        };
        ok(ws.path(), &["keygen", "--out", "keys/release"]);
        ws
    }

    fn path(&self) -> &Path {
        self.tmp.path()
    }

    /// Write tier files `low` (2000 B, 256 MiB), `medium` (2000 B, 512 MiB, avx2) and `high`
    /// (4000 B, 4 GiB, avx512f) plus `build.json`; returns the relative folder.
    fn release(&self, version: &str, seed: u64) -> String {
        let rel = format!("dist/tiny/{version}");
        let dir = self.path().join(&rel);
        std::fs::create_dir_all(&dir).unwrap();
        let tiers = [
            ("low", 2000, 4.5, 256u64 << 20, vec![]),
            ("medium", 2000, 6.5, 512 << 20, vec!["avx2"]),
            ("high", 4000, 8.5, 4 << 30, vec!["avx512f"]),
        ];
        let mut entries = Vec::new();
        for (i, (name, size, bpw, ram, feats)) in tiers.iter().enumerate() {
            std::fs::write(
                dir.join(format!("{name}.gguf")),
                random_bytes(seed * 10 + i as u64, *size),
            )
            .unwrap();
            entries.push(serde_json::json!({
                "name": name, "file": format!("{name}.gguf"), "mix": format!("q{}", 4 + 2 * i),
                "bits_per_weight": bpw, "size": size,
                "requires": {"min_ram_bytes": ram, "cpu_features": feats, "arch": []}
            }));
        }
        let build =
            serde_json::json!({"schema": 1, "model": "tiny", "version": version, "tiers": entries});
        std::fs::write(
            dir.join("build.json"),
            serde_json::to_vec_pretty(&build).unwrap(),
        )
        .unwrap();
        rel
    }

    fn signed(&self, version: &str, seed: u64) -> String {
        let rel = self.release(version, seed);
        ok(
            self.path(),
            &["sign", &rel, "--key", "keys/release.key", "--quiet"],
        );
        rel
    }

    fn file(&self, rel: &str) -> PathBuf {
        self.path().join(rel)
    }
}

const PUB: [&str; 2] = ["--pubkey", "keys/release.pub"];

fn verify_args<'a>(rel: &'a str, extra: &[&'a str]) -> Vec<&'a str> {
    let mut v = vec!["verify", rel, PUB[0], PUB[1]];
    v.extend_from_slice(extra);
    v
}

#[test]
fn keygen_sign_verify_happy_path() {
    let ws = Ws::new();
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(ws.file("keys/release.key"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }
    let pubkey = std::fs::read_to_string(ws.file("keys/release.pub")).unwrap();
    assert!(pubkey.starts_with("slmpack-ed25519 ") && pubkey.lines().count() == 1);
    let rel = ws.release("1.0.0", 1);
    let out = ok(
        ws.path(),
        &[
            "sign",
            &rel,
            "--key",
            "keys/release.key",
            "--expires",
            "30d",
            "--json",
        ],
    );
    let j: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(j["counter"], 1_000_000_000_000u64);
    assert_eq!(j["files"], 4);
    let out = ok(ws.path(), &verify_args(&rel, &["--json"]));
    let j: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(j["ok"], true);
    assert_eq!(j["model"], "tiny");
    assert!(j["bytes"].as_u64().unwrap() > 8000);
    let text = ok(ws.path(), &verify_args(&rel, &[]));
    assert!(text.contains("verified `tiny` 1.0.0"), "{text}");
}

#[test]
fn flipped_byte_exits_3_naming_the_file() {
    let ws = Ws::new();
    let rel = ws.signed("1.0.0", 2);
    let p = ws.file(&format!("{rel}/medium.gguf"));
    let mut b = std::fs::read(&p).unwrap();
    b[100] ^= 1;
    std::fs::write(&p, b).unwrap();
    fails(
        ws.path(),
        &verify_args(&rel, &[]),
        3,
        &["medium.gguf", "sha-256 does not match"],
    );
    let r = fails(
        ws.path(),
        &verify_args(&rel, &["--json"]),
        3,
        &["medium.gguf"],
    );
    let j: serde_json::Value = serde_json::from_str(r.stdout.trim()).unwrap();
    assert_eq!(j["check"], "hash_mismatch");
}

#[test]
fn truncated_extra_and_missing_files_exit_3() {
    let ws = Ws::new();
    let rel = ws.signed("1.0.0", 3);
    let p = ws.file(&format!("{rel}/high.gguf"));
    let b = std::fs::read(&p).unwrap();
    std::fs::write(&p, &b[..10]).unwrap();
    fails(
        ws.path(),
        &verify_args(&rel, &[]),
        3,
        &["high.gguf", "truncated or grown"],
    );
    std::fs::write(&p, &b).unwrap();
    ok(ws.path(), &verify_args(&rel, &[]));
    std::fs::write(ws.file(&format!("{rel}/payload.sh")), b"#!/bin/sh").unwrap();
    fails(
        ws.path(),
        &verify_args(&rel, &[]),
        3,
        &["payload.sh", "not listed"],
    );
    std::fs::remove_file(ws.file(&format!("{rel}/payload.sh"))).unwrap();
    std::fs::remove_file(ws.file(&format!("{rel}/low.gguf"))).unwrap();
    fails(
        ws.path(),
        &verify_args(&rel, &[]),
        3,
        &["low.gguf", "missing"],
    );
}

#[test]
fn swapped_and_older_release_files_exit_3() {
    let ws = Ws::new();
    let old = ws.signed("1.0.0", 4);
    let new = ws.signed("1.1.0", 5);
    std::fs::copy(
        ws.file(&format!("{old}/low.gguf")),
        ws.file(&format!("{new}/low.gguf")),
    )
    .unwrap();
    fails(
        ws.path(),
        &verify_args(&new, &[]),
        3,
        &["low.gguf", "sha-256"],
    );
    let (a, b) = (
        ws.file(&format!("{old}/low.gguf")),
        ws.file(&format!("{old}/medium.gguf")),
    );
    let (x, y) = (std::fs::read(&a).unwrap(), std::fs::read(&b).unwrap());
    std::fs::write(&a, y).unwrap();
    std::fs::write(&b, x).unwrap();
    fails(ws.path(), &verify_args(&old, &[]), 3, &["sha-256"]);
}

#[test]
fn edited_manifest_exits_3() {
    let ws = Ws::new();
    let rel = ws.signed("1.0.0", 6);
    let p = ws.file(&format!("{rel}/manifest.json"));
    let text = std::fs::read_to_string(&p).unwrap();
    std::fs::write(&p, text.replacen("\n", "\n ", 1)).unwrap();
    fails(
        ws.path(),
        &verify_args(&rel, &[]),
        3,
        &["manifest.sig", "does not match the manifest bytes"],
    );
    std::fs::write(
        &p,
        text.replace("\"min_ram_bytes\": 4294967296", "\"min_ram_bytes\": 1"),
    )
    .unwrap();
    fails(
        ws.path(),
        &verify_args(&rel, &[]),
        3,
        &["does not match the manifest bytes"],
    );
}

#[test]
fn unknown_key_and_threshold_exit_3() {
    let ws = Ws::new();
    ok(ws.path(), &["keygen", "--out", "keys/other"]);
    let rel = ws.signed("1.0.0", 7);
    fails(
        ws.path(),
        &["verify", &rel, "--pubkey", "keys/other.pub"],
        3,
        &["unknown key"],
    );
    let both = [
        "verify",
        &rel,
        "--pubkey",
        "keys/release.pub",
        "--pubkey",
        "keys/other.pub",
        "--threshold",
        "2",
    ];
    fails(
        ws.path(),
        &both,
        3,
        &["1 distinct trusted signature(s), 2 required"],
    );
    ok(
        ws.path(),
        &["sign", &rel, "--key", "keys/other.key", "--append", "-q"],
    );
    ok(ws.path(), &both);
    fails(
        ws.path(),
        &["sign", &rel, "--key", "keys/other.key", "--append", "-q"],
        1,
        &["already signed"],
    );
}

#[test]
fn expired_manifest_exits_3() {
    let ws = Ws::new();
    let rel = ws.release("1.0.0", 8);
    ok(
        ws.path(),
        &[
            "sign",
            &rel,
            "--key",
            "keys/release.key",
            "--expires",
            "1s",
            "-q",
        ],
    );
    std::thread::sleep(std::time::Duration::from_millis(2100));
    fails(
        ws.path(),
        &verify_args(&rel, &[]),
        3,
        &["manifest.json", "expired"],
    );
}

#[test]
fn rollback_exits_3_and_state_is_kept() {
    let ws = Ws::new();
    let old = ws.signed("1.0.0", 9);
    let new = ws.signed("1.2.0", 10);
    ok(ws.path(), &verify_args(&new, &["--state", "state.json"]));
    let state = std::fs::read(ws.file("state.json")).unwrap();
    assert!(String::from_utf8_lossy(&state).contains("1000002000000"));
    fails(
        ws.path(),
        &verify_args(&old, &["--state", "state.json"]),
        3,
        &["rollback", "1000000000000"],
    );
    assert_eq!(std::fs::read(ws.file("state.json")).unwrap(), state);
    // Without the state file the old release is still genuine.
    ok(ws.path(), &verify_args(&old, &[]));
}

#[cfg(unix)]
#[test]
fn symlink_in_bundle_exits_3() {
    let ws = Ws::new();
    let rel = ws.signed("1.0.0", 11);
    let p = ws.file(&format!("{rel}/low.gguf"));
    std::fs::rename(&p, ws.file("low-elsewhere.gguf")).unwrap();
    std::os::unix::fs::symlink(ws.file("low-elsewhere.gguf"), &p).unwrap();
    fails(
        ws.path(),
        &verify_args(&rel, &[]),
        3,
        &["low.gguf", "symlink"],
    );
}

#[test]
fn oversized_signature_file_exits_3() {
    let ws = Ws::new();
    let rel = ws.signed("1.0.0", 12);
    std::fs::write(ws.file(&format!("{rel}/manifest.sig")), vec![b'{'; 70_000]).unwrap();
    fails(
        ws.path(),
        &verify_args(&rel, &[]),
        3,
        &["manifest.sig", "limit"],
    );
}

fn profile(ws: &Ws, name: &str, ram: u64, features: &[&str]) -> String {
    let yaml = format!(
        "arch: x86_64\ncores: 4\nram_total_bytes: {}\nram_available_bytes: {ram}\ncpu_features: [{}]\n",
        8u64 << 30,
        features.join(", ")
    );
    std::fs::write(ws.file(name), yaml).unwrap();
    name.to_string()
}

#[test]
fn select_picks_the_best_fitting_tier() {
    let ws = Ws::new();
    let rel = ws.signed("1.0.0", 13);
    let dev = profile(&ws, "dev.yaml", 1 << 30, &["avx2"]);
    let out = ok(
        ws.path(),
        &["select", &rel, PUB[0], PUB[1], "--device", &dev],
    );
    assert!(out.contains("selected tier `medium`"), "{out}");
    assert!(
        out.contains("rejected `high`") && out.contains("avx512f"),
        "{out}"
    );
    let out = ok(
        ws.path(),
        &["select", &rel, PUB[0], PUB[1], "--device", &dev, "--json"],
    );
    let j: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(j["selected"]["tier"], "medium");
    assert_eq!(j["rejected"][0]["tier"], "high");
    assert_eq!(
        j["rejected"][0]["reasons"].as_array().unwrap().len(),
        2,
        "{j}"
    );
    assert_eq!(j["also_fit"][0], "low");
}

#[test]
fn select_with_no_fitting_tier_exits_4() {
    let ws = Ws::new();
    let rel = ws.signed("1.0.0", 14);
    let dev = profile(&ws, "small.yaml", 100 << 20, &[]);
    fails(
        ws.path(),
        &[
            "select", &rel, PUB[0], PUB[1], "--device", &dev, "--state", "st.json",
        ],
        4,
        &[
            "no tier",
            "tier `low`: needs 0.25 GiB",
            "tier `high`",
            "avx512f",
        ],
    );
    assert!(
        !ws.file("st.json").exists(),
        "state must not advance when nothing fits"
    );
    // Verification failures still win over selection.
    std::fs::write(ws.file(&format!("{rel}/x")), b"").unwrap();
    fails(
        ws.path(),
        &["select", &rel, PUB[0], PUB[1], "--device", &dev],
        3,
        &["not listed"],
    );
}

#[test]
fn device_profile_round_trips_through_select() {
    let ws = Ws::new();
    let yaml = ok(ws.path(), &["device"]);
    assert!(
        yaml.contains("arch: ") && yaml.contains("ram_available_bytes: "),
        "{yaml}"
    );
    std::fs::write(ws.file("me.yaml"), &yaml).unwrap();
    let rel = ws.signed("1.0.0", 15);
    let auto = run(ws.path(), &["select", &rel, PUB[0], PUB[1], "--json"]);
    let saved = run(
        ws.path(),
        &[
            "select", &rel, PUB[0], PUB[1], "--device", "me.yaml", "--json",
        ],
    );
    assert_eq!(auto.code, saved.code);
    assert!(auto.code == 0 || auto.code == 4);
    std::fs::write(ws.file("bad.yaml"), "arch: x86_64\nbogus: 1\n").unwrap();
    fails(
        ws.path(),
        &["select", &rel, PUB[0], PUB[1], "--device", "bad.yaml"],
        1,
        &["bad.yaml"],
    );
}

#[test]
fn key_rotation_end_to_end() {
    let ws = Ws::new();
    ok(ws.path(), &["keygen", "--out", "keys/next"]);
    ok(
        ws.path(),
        &[
            "rotate",
            "--old",
            "keys/release.key",
            "--new",
            "keys/next.key",
            "--out",
            "keys/rotation.json",
        ],
    );
    let v1 = ws.signed("1.0.0", 16);
    ok(ws.path(), &verify_args(&v1, &["--state", "state.json"]));
    let v2 = ws.release("1.1.0", 17);
    ok(
        ws.path(),
        &[
            "sign",
            &v2,
            "--key",
            "keys/next.key",
            "--rotation",
            "keys/rotation.json",
            "-q",
        ],
    );
    // The device only knows the old key; the rotation statement moves it to the new one.
    let out = ok(ws.path(), &verify_args(&v2, &["--state", "state.json"]));
    assert!(out.contains("rotated-in"), "{out}");
    // From now on the old key is revoked on this device.
    let v3 = ws.signed("1.2.0", 18);
    fails(
        ws.path(),
        &verify_args(&v3, &["--state", "state.json"]),
        3,
        &["unknown key"],
    );
    // A release signed by the new key without the statement verifies with the state alone.
    let v4 = ws.release("1.3.0", 19);
    ok(ws.path(), &["sign", &v4, "--key", "keys/next.key", "-q"]);
    ok(ws.path(), &verify_args(&v4, &["--state", "state.json"]));
}

#[test]
fn passphrase_protected_key() {
    let ws = Ws::new();
    let r = bin()
        .current_dir(ws.path())
        .env("SLMPACK_TEST_PASS", "s3cret")
        .args([
            "keygen",
            "--out",
            "keys/enc",
            "--passphrase-env",
            "SLMPACK_TEST_PASS",
        ])
        .output()
        .unwrap();
    assert!(r.status.success());
    let rel = ws.release("1.0.0", 20);
    fails(
        ws.path(),
        &["sign", &rel, "--key", "keys/enc.key"],
        1,
        &["passphrase-protected", "--passphrase-env"],
    );
    let r = bin()
        .current_dir(ws.path())
        .env("SLMPACK_TEST_PASS", "s3cret")
        .args([
            "sign",
            &rel,
            "--key",
            "keys/enc.key",
            "--passphrase-env",
            "SLMPACK_TEST_PASS",
            "-q",
        ])
        .output()
        .unwrap();
    assert!(r.status.success(), "{}", String::from_utf8_lossy(&r.stderr));
    ok(ws.path(), &["verify", &rel, "--pubkey", "keys/enc.pub"]);
}

#[test]
fn sign_and_key_errors_are_clear() {
    let ws = Ws::new();
    std::fs::create_dir_all(ws.file("dist/empty")).unwrap();
    fails(
        ws.path(),
        &["sign", "dist/empty", "--key", "keys/release.key"],
        1,
        &["build.json", "is missing"],
    );
    let rel = ws.release("1.0.0", 21);
    fails(
        ws.path(),
        &["sign", &rel, "--key", "keys/release.pub"],
        1,
        &["is a public key"],
    );
    fails(
        ws.path(),
        &[
            "sign",
            &rel,
            "--key",
            "keys/release.key",
            "--expires",
            "soon",
        ],
        1,
        &["--expires"],
    );
    std::fs::write(ws.file("keys/bad.pub"), "slmpack-ed25519 zz\n").unwrap();
    let signed = ws.signed("1.1.0", 22);
    fails(
        ws.path(),
        &["verify", &signed, "--pubkey", "keys/bad.pub"],
        1,
        &["bad.pub", "not an slmpack public key"],
    );
    fails(
        ws.path(),
        &["verify", &signed, "--pubkey", "keys/release.key"],
        1,
        &["is a secret key"],
    );
}
