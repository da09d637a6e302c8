//! Every verification failure case, each asserting its own error variant, plus signing,
//! rotation, state and selection. Fixtures come from [`crate::fuzzing`].

use std::path::{Path, PathBuf};
use std::time::Duration;

use proptest::prelude::*;

use crate::fuzzing::*;
use crate::keys::PublicKey;
use crate::manifest::Manifest;
use crate::rotation::RotationBundle;
use crate::sigfile::SigFile;
use crate::sign::{cosign_release, sign_bytes, sign_release, SignOptions};
use crate::state::DeviceState;
use crate::verify::{verify_release, VerifyOptions};
use crate::{Error, VerifyError, MANIFEST_FILE, SIG_FILE};

struct Bundle {
    _tmp: tempfile::TempDir,
    dir: PathBuf,
}

fn bundle() -> Bundle {
    bundle_version("1.0.0", 42)
}

fn bundle_version(version: &str, seed: u64) -> Bundle {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join(version);
    write_release(&dir, version, seed, TIERS);
    sign_fixed(&dir, &test_key(1));
    Bundle { _tmp: tmp, dir }
}

fn key1() -> Vec<PublicKey> {
    vec![test_key(1).public()]
}

fn verify(dir: &Path) -> Result<crate::verify::Verified, VerifyError> {
    fixture_verify(dir, &key1())
}

/// Re-sign `dir` after editing its manifest with `edit` (a publisher-signed bad manifest).
fn resign_with(dir: &Path, edit: impl FnOnce(&mut Manifest)) {
    let bytes = std::fs::read(dir.join(MANIFEST_FILE)).unwrap();
    let mut m: Manifest = serde_json::from_slice(&bytes).unwrap();
    edit(&mut m);
    let bytes = m.to_bytes();
    std::fs::write(dir.join(MANIFEST_FILE), &bytes).unwrap();
    let mut s = SigFile::new();
    s.signatures.push(sign_bytes(&test_key(1), &bytes));
    std::fs::write(dir.join(SIG_FILE), s.to_bytes()).unwrap();
}

#[test]
fn valid_bundle_verifies() {
    let b = bundle();
    let v = verify(&b.dir).unwrap();
    assert_eq!(v.manifest.model, "tiny-test");
    assert_eq!(v.manifest.counter, 1_000_000_000_000);
    assert_eq!(v.manifest.tiers.len(), 3);
    assert_eq!(v.manifest.files.len(), 1, "build.json is listed");
    assert_eq!(v.signers, vec![test_key(1).public().keyid()]);
    assert_eq!(
        v.total_bytes,
        11000 + std::fs::metadata(b.dir.join("build.json")).unwrap().len()
    );
}

#[test]
fn flipped_byte_in_weights() {
    let b = bundle();
    let p = b.dir.join("medium.gguf");
    let mut bytes = std::fs::read(&p).unwrap();
    bytes[1234] ^= 0x40;
    std::fs::write(&p, bytes).unwrap();
    let e = verify(&b.dir).unwrap_err();
    assert!(
        matches!(&e, VerifyError::HashMismatch { path } if path.ends_with("medium.gguf")),
        "{e}"
    );
    assert!(e.to_string().contains("medium.gguf") && e.to_string().contains("sha-256"));
}

#[test]
fn truncated_file() {
    let b = bundle();
    let p = b.dir.join("high.gguf");
    let bytes = std::fs::read(&p).unwrap();
    std::fs::write(&p, &bytes[..bytes.len() - 1]).unwrap();
    let e = verify(&b.dir).unwrap_err();
    assert!(
        matches!(
            e,
            VerifyError::SizeMismatch {
                expected: 5000,
                actual: 4999,
                ..
            }
        ),
        "{e}"
    );
}

#[test]
fn grown_file() {
    let b = bundle();
    let p = b.dir.join("low.gguf");
    let mut bytes = std::fs::read(&p).unwrap();
    bytes.push(0);
    std::fs::write(&p, bytes).unwrap();
    let e = verify(&b.dir).unwrap_err();
    assert!(
        matches!(
            e,
            VerifyError::SizeMismatch {
                expected: 3000,
                actual: 3001,
                ..
            }
        ),
        "{e}"
    );
}

#[test]
fn file_replaced_by_older_release() {
    let old = bundle_version("1.0.0", 7);
    let new = bundle_version("1.1.0", 8);
    verify(&old.dir).unwrap();
    std::fs::copy(old.dir.join("low.gguf"), new.dir.join("low.gguf")).unwrap();
    let e = verify(&new.dir).unwrap_err();
    assert!(
        matches!(&e, VerifyError::HashMismatch { path } if path.ends_with("low.gguf")),
        "{e}"
    );
}

#[test]
fn extra_file() {
    let b = bundle();
    std::fs::write(b.dir.join("evil.so"), b"x").unwrap();
    let e = verify(&b.dir).unwrap_err();
    assert!(
        matches!(&e, VerifyError::ExtraFile { path } if path.ends_with("evil.so")),
        "{e}"
    );
}

#[test]
fn extra_file_in_subfolder() {
    let b = bundle();
    std::fs::create_dir(b.dir.join("sub")).unwrap();
    std::fs::write(b.dir.join("sub/low.gguf"), b"x").unwrap();
    let e = verify(&b.dir).unwrap_err();
    assert!(
        matches!(&e, VerifyError::ExtraFile { path } if path.ends_with("sub/low.gguf")),
        "{e}"
    );
}

#[test]
fn missing_file() {
    let b = bundle();
    std::fs::remove_file(b.dir.join("build.json")).unwrap();
    let e = verify(&b.dir).unwrap_err();
    assert!(
        matches!(&e, VerifyError::MissingFile { path } if path.ends_with("build.json")),
        "{e}"
    );
}

#[test]
fn swapped_tier_files() {
    let b = bundle();
    let (lo, me) = (b.dir.join("low.gguf"), b.dir.join("medium.gguf"));
    let (a, c) = (std::fs::read(&lo).unwrap(), std::fs::read(&me).unwrap());
    std::fs::write(&lo, c).unwrap();
    std::fs::write(&me, a).unwrap();
    let e = verify(&b.dir).unwrap_err();
    assert!(
        matches!(&e, VerifyError::HashMismatch { path } if path.ends_with("low.gguf")),
        "{e}"
    );
}

#[test]
fn manifest_edited_after_signing_any_byte() {
    let b = bundle();
    let p = b.dir.join(MANIFEST_FILE);
    let orig = std::fs::read(&p).unwrap();
    for i in 0..orig.len() {
        let mut m = orig.clone();
        m[i] ^= 0x01;
        std::fs::write(&p, &m).unwrap();
        let e = verify(&b.dir).unwrap_err();
        assert!(
            matches!(e, VerifyError::BadSignature { .. }),
            "byte {i}: {e}"
        );
    }
    // Whitespace only: an added space, a trailing newline, a removed newline.
    let text = String::from_utf8(orig.clone()).unwrap();
    for edited in [
        text.replacen(": ", ":  ", 1),
        format!("{text}\n"),
        text.trim_end().to_string(),
        text.replacen("  ", "\t", 1),
    ] {
        std::fs::write(&p, edited).unwrap();
        let e = verify(&b.dir).unwrap_err();
        assert!(matches!(e, VerifyError::BadSignature { .. }), "{e}");
    }
    std::fs::write(&p, &orig).unwrap();
    verify(&b.dir).unwrap();
}

#[test]
fn signature_by_unknown_key() {
    let b = bundle();
    let e = fixture_verify(&b.dir, &[test_key(9).public()]).unwrap_err();
    assert!(
        matches!(&e, VerifyError::UnknownKey { keyids, .. } if keyids.contains(&test_key(1).public().keyid().to_string())),
        "{e}"
    );
}

#[test]
fn below_threshold_and_cosign() {
    let b = bundle();
    let keys = vec![test_key(1).public(), test_key(2).public()];
    let mut o = VerifyOptions::new(&keys);
    o.now = fixed_now() + Duration::from_secs(60);
    o.threshold = 2;
    let e = verify_release(&b.dir, &o).unwrap_err();
    assert!(
        matches!(
            e,
            VerifyError::BelowThreshold {
                have: 1,
                need: 2,
                ..
            }
        ),
        "{e}"
    );
    cosign_release(&b.dir, &test_key(2), &|_| {}).unwrap();
    let v = verify_release(&b.dir, &o).unwrap();
    assert_eq!(v.signers.len(), 2);
    // Co-signing twice with one key is refused.
    assert!(matches!(
        cosign_release(&b.dir, &test_key(2), &|_| {}),
        Err(Error::Invalid { .. })
    ));
}

#[test]
fn duplicate_signatures_by_one_key_count_once() {
    let b = bundle();
    let sp = b.dir.join(SIG_FILE);
    let mut s = SigFile::parse(&std::fs::read(&sp).unwrap()).unwrap();
    s.signatures.push(s.signatures[0].clone());
    std::fs::write(&sp, s.to_bytes()).unwrap();
    let keys = vec![test_key(1).public(), test_key(2).public()];
    let mut o = VerifyOptions::new(&keys);
    o.now = fixed_now() + Duration::from_secs(60);
    o.threshold = 2;
    let e = verify_release(&b.dir, &o).unwrap_err();
    assert!(
        matches!(
            e,
            VerifyError::BelowThreshold {
                have: 1,
                need: 2,
                ..
            }
        ),
        "{e}"
    );
}

#[test]
fn expired_manifest() {
    let b = bundle();
    let keys = key1();
    let mut o = VerifyOptions::new(&keys);
    o.now = fixed_now() + Duration::from_secs(366 * 86400);
    let e = verify_release(&b.dir, &o).unwrap_err();
    assert!(matches!(e, VerifyError::Expired { .. }), "{e}");
    assert!(e.to_string().contains("2026-01-01T00:00:00Z"), "{e}");
}

#[test]
fn rollback_refused_and_state_advances_only_on_success() {
    let old = bundle_version("1.0.0", 7);
    let new = bundle_version("1.1.0", 8);
    let tmp = tempfile::tempdir().unwrap();
    let state_path = tmp.path().join("state.json");
    let keys = key1();
    let now = fixed_now() + Duration::from_secs(60);
    let run = |dir: &Path| -> Result<(), VerifyError> {
        let mut st = DeviceState::load(&state_path)?;
        let mut o = VerifyOptions::new(&keys);
        o.now = now;
        o.state = Some(&st);
        let v = verify_release(dir, &o)?;
        st.record(&v, now);
        st.save(&state_path).unwrap();
        Ok(())
    };
    run(&new.dir).unwrap();
    let st = DeviceState::load(&state_path).unwrap();
    assert_eq!(st.counter("tiny-test"), 1_000_001_000_000);
    // Re-verifying the installed release is fine.
    run(&new.dir).unwrap();
    let e = run(&old.dir).unwrap_err();
    assert!(
        matches!(
            e,
            VerifyError::Rollback {
                counter: 1_000_000_000_000,
                recorded: 1_000_001_000_000,
                ..
            }
        ),
        "{e}"
    );
    // A failed verification leaves the state untouched, and no temporary files behind.
    let before = std::fs::read(&state_path).unwrap();
    std::fs::write(new.dir.join("extra"), b"x").unwrap();
    assert!(run(&new.dir).is_err());
    assert_eq!(std::fs::read(&state_path).unwrap(), before);
    let names: Vec<_> = std::fs::read_dir(tmp.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names, vec![std::ffi::OsString::from("state.json")]);
    // A corrupted state file fails closed.
    std::fs::write(&state_path, b"{\"schema\": 1, \"releases\": 5}").unwrap();
    assert!(matches!(
        run(&old.dir),
        Err(VerifyError::MalformedState { .. })
    ));
}

#[test]
fn manifest_paths_that_escape() {
    for (bad, why) in [
        ("../outside.gguf", "escapes"),
        ("/etc/passwd", "absolute"),
        ("low\0.gguf", "NUL"),
        ("a/../../b", "escapes"),
    ] {
        let b = bundle();
        resign_with(&b.dir, |m| m.tiers[0].file = bad.to_string());
        let e = verify(&b.dir).unwrap_err();
        assert!(
            matches!(&e, VerifyError::UnsafePath { reason, .. } if reason.contains(why)),
            "{bad:?}: {e}"
        );
    }
}

#[cfg(unix)]
#[test]
fn symlink_inside_bundle() {
    let b = bundle();
    let p = b.dir.join("high.gguf");
    let target = b.dir.parent().unwrap().join("high-real.gguf");
    std::fs::rename(&p, &target).unwrap();
    std::os::unix::fs::symlink(&target, &p).unwrap();
    let e = verify(&b.dir).unwrap_err();
    assert!(
        matches!(&e, VerifyError::Symlink { path } if path.ends_with("high.gguf")),
        "{e}"
    );
}

#[cfg(unix)]
#[test]
fn symlinked_manifest() {
    let b = bundle();
    let p = b.dir.join(MANIFEST_FILE);
    let target = b.dir.parent().unwrap().join("m.json");
    std::fs::rename(&p, &target).unwrap();
    std::os::unix::fs::symlink(&target, &p).unwrap();
    let e = verify(&b.dir).unwrap_err();
    assert!(matches!(e, VerifyError::Symlink { .. }), "{e}");
}

#[test]
fn oversized_manifest() {
    let b = bundle();
    let p = b.dir.join(MANIFEST_FILE);
    let mut bytes = std::fs::read(&p).unwrap();
    bytes.resize(crate::MAX_MANIFEST_BYTES as usize + 1, b' ');
    std::fs::write(&p, bytes).unwrap();
    let e = verify(&b.dir).unwrap_err();
    assert!(
        matches!(
            e,
            VerifyError::Oversized {
                cap: crate::MAX_MANIFEST_BYTES,
                ..
            }
        ),
        "{e}"
    );
}

#[test]
fn oversized_signature_file() {
    let b = bundle();
    let p = b.dir.join(SIG_FILE);
    let mut bytes = std::fs::read(&p).unwrap();
    bytes.resize(crate::MAX_SIG_BYTES as usize + 1, b' ');
    std::fs::write(&p, bytes).unwrap();
    let e = verify(&b.dir).unwrap_err();
    assert!(
        matches!(
            e,
            VerifyError::Oversized {
                cap: crate::MAX_SIG_BYTES,
                ..
            }
        ),
        "{e}"
    );
}

#[test]
fn malformed_and_missing_signature_file() {
    let b = bundle();
    let p = b.dir.join(SIG_FILE);
    std::fs::write(&p, b"{\"schema\": 1, \"signatures\": []}\n").unwrap();
    assert!(matches!(
        verify(&b.dir),
        Err(VerifyError::MalformedSignatures { .. })
    ));
    std::fs::remove_file(&p).unwrap();
    assert!(matches!(
        verify(&b.dir),
        Err(VerifyError::MissingMetadata { .. })
    ));
}

#[test]
fn wrong_model() {
    let b = bundle();
    let keys = key1();
    let mut o = VerifyOptions::new(&keys);
    o.now = fixed_now() + Duration::from_secs(60);
    o.expect_model = Some("other-model");
    assert!(matches!(
        verify_release(&b.dir, &o),
        Err(VerifyError::WrongModel { .. })
    ));
}

#[test]
fn signed_but_malformed_manifest() {
    let b = bundle();
    resign_with(&b.dir, |m| m.tiers[1].name = m.tiers[0].name.clone());
    assert!(matches!(
        verify(&b.dir),
        Err(VerifyError::MalformedManifest { .. })
    ));
}

fn sign_with_rotation(dir: &Path, key: &crate::keys::SecretKey, rot: Vec<RotationBundle>) {
    let opts = SignOptions {
        expires_in: Duration::from_secs(365 * 86400),
        counter: None,
        now: fixed_now(),
        rotations: rot,
        progress: &|_| {},
    };
    sign_release(dir, key, &opts).unwrap();
}

#[test]
fn key_rotation() {
    let (a, bkey) = (test_key(1), test_key(2));
    let rot = RotationBundle::create(&a, &bkey, "2025-01-01T00:00:00Z");
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("1.1.0");
    write_release(&dir, "1.1.0", 5, TIERS);
    sign_with_rotation(&dir, &bkey, vec![rot.clone()]);
    // The device trusts only A; the statement signed by A and B makes B trusted instead.
    let v = fixture_verify(&dir, &[a.public()]).unwrap();
    assert_eq!(v.signers, vec![bkey.public().keyid()]);
    assert_eq!(v.rotated_in, vec![bkey.public()]);
    assert_eq!(v.revoked, vec![a.public().keyid()]);
    // Without the statement, B is unknown.
    let plain = tmp.path().join("plain");
    write_release(&plain, "1.1.0", 5, TIERS);
    sign_fixed(&plain, &bkey);
    assert!(matches!(
        fixture_verify(&plain, &[a.public()]),
        Err(VerifyError::UnknownKey { .. })
    ));
    // The device state remembers the rotation: B trusted, A revoked even if passed again.
    let mut st = DeviceState::default();
    st.record(&v, fixed_now());
    let keys = [a.public()];
    let mut o = VerifyOptions::new(&keys);
    o.now = fixed_now() + Duration::from_secs(60);
    o.state = Some(&st);
    verify_release(&plain, &o).unwrap();
    let old_key_release = tmp.path().join("old");
    write_release(&old_key_release, "1.2.0", 6, TIERS);
    sign_fixed(&old_key_release, &a);
    assert!(matches!(
        verify_release(&old_key_release, &o),
        Err(VerifyError::UnknownKey { .. })
    ));
}

#[test]
fn forged_rotation_is_refused() {
    let (a, evil) = (test_key(1), test_key(6));
    let mut rot = RotationBundle::create(&a, &evil, "2025-01-01T00:00:00Z");
    // The attacker cannot produce A's signature: reuse the new key's signature in A's slot.
    rot.signatures[0] = crate::sigfile::SigEntry::new(
        a.public().keyid(),
        &evil.sign(crate::ROTATION_SIG_CONTEXT, rot.statement.as_bytes()),
    );
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("r");
    write_release(&dir, "1.0.0", 5, TIERS);
    let opts = SignOptions {
        expires_in: Duration::from_secs(86400 * 365),
        counter: None,
        now: fixed_now(),
        rotations: Vec::new(),
        progress: &|_| {},
    };
    sign_release(&dir, &evil, &opts).unwrap();
    let sp = dir.join(SIG_FILE);
    let mut s = SigFile::parse(&std::fs::read(&sp).unwrap()).unwrap();
    s.rotations.push(rot);
    std::fs::write(&sp, s.to_bytes()).unwrap();
    let e = fixture_verify(&dir, &[a.public()]).unwrap_err();
    assert!(matches!(e, VerifyError::BadRotation { .. }), "{e}");
}

#[test]
fn sign_errors_are_clear() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("r");
    std::fs::create_dir(&dir).unwrap();
    let opts = SignOptions {
        expires_in: Duration::from_secs(86400),
        counter: None,
        now: fixed_now(),
        rotations: Vec::new(),
        progress: &|_| {},
    };
    let e = sign_release(&dir, &test_key(1), &opts).unwrap_err();
    assert!(
        matches!(e, Error::Missing { .. }) && e.to_string().contains("build.json"),
        "{e}"
    );
    write_release(&dir, "1.0.0", 1, TIERS);
    let bp = dir.join("build.json");
    let text = std::fs::read_to_string(&bp).unwrap();
    std::fs::write(
        &bp,
        text.replacen("\"schema\": 1,", "\"schema\": 1, \"surprise\": true,", 1),
    )
    .unwrap();
    let e = sign_release(&dir, &test_key(1), &opts).unwrap_err();
    assert!(e.to_string().contains("surprise"), "{e}");
    std::fs::write(&bp, &text).unwrap();
    std::fs::write(dir.join("low.gguf"), b"short").unwrap();
    let e = sign_release(&dir, &test_key(1), &opts).unwrap_err();
    assert!(e.to_string().contains("stale"), "{e}");
    std::fs::remove_file(dir.join("low.gguf")).unwrap();
    let e = sign_release(&dir, &test_key(1), &opts).unwrap_err();
    assert!(
        matches!(e, Error::Missing { .. }) && e.to_string().contains("low.gguf"),
        "{e}"
    );
}

#[test]
fn sign_lists_every_file_and_explicit_counter() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("r");
    write_release(&dir, "2.0.0-rc.1", 1, TIERS);
    std::fs::create_dir(dir.join("docs")).unwrap();
    std::fs::write(dir.join("docs/README.md"), b"hi").unwrap();
    let mut opts = SignOptions {
        expires_in: Duration::from_secs(10 * 86400),
        counter: None,
        now: fixed_now(),
        rotations: Vec::new(),
        progress: &|_| {},
    };
    assert!(sign_release(&dir, &test_key(1), &opts)
        .unwrap_err()
        .to_string()
        .contains("--counter"));
    opts.counter = Some(77);
    let s = sign_release(&dir, &test_key(1), &opts).unwrap();
    assert_eq!(s.manifest.counter, 77);
    let paths: Vec<_> = s.manifest.files.iter().map(|f| f.path.as_str()).collect();
    assert_eq!(paths, ["build.json", "docs/README.md"]);
    verify(&dir).unwrap();
}

mod selection {
    use super::*;
    use crate::device::DeviceProfile;
    use crate::select::select;

    fn device(ram_mib: u64, features: &[&str]) -> DeviceProfile {
        DeviceProfile {
            arch: "x86_64".into(),
            cores: 4,
            ram_total_bytes: 8 << 30,
            ram_available_bytes: ram_mib << 20,
            cpu_features: features.iter().map(|s| s.to_string()).collect(),
        }
    }

    #[test]
    fn picks_best_fitting_tier_with_reasons() {
        let b = bundle();
        let m = verify(&b.dir).unwrap().manifest;
        // Fixture: low 256 MiB, medium 512 MiB, high 768 MiB + avx512f.
        let s = select(&m, &device(4096, &["avx2", "avx512f"]));
        assert_eq!(m.tiers[s.selected.unwrap()].name, "high");
        assert_eq!(s.also_fit, ["medium", "low"]);
        let s = select(&m, &device(4096, &["avx2"]));
        assert_eq!(m.tiers[s.selected.unwrap()].name, "medium");
        assert_eq!(s.rejected.len(), 1);
        assert!(s.rejected[0].reasons[0].contains("avx512f"));
        let s = select(&m, &device(300, &["avx512f"]));
        assert_eq!(m.tiers[s.selected.unwrap()].name, "low");
        let s = select(&m, &device(100, &[]));
        assert_eq!(s.selected, None);
        assert_eq!(s.rejected.len(), 3);
        let mut arm = device(4096, &["neon"]);
        arm.arch = "riscv64".into();
        let s = select(&m, &arm);
        assert!(s.rejected[0].reasons[0].contains("riscv64"));
    }

    #[test]
    fn order_in_manifest_does_not_matter() {
        let b = bundle();
        let mut m = verify(&b.dir).unwrap().manifest;
        m.tiers.reverse();
        let s = select(&m, &device(4096, &["avx512f"]));
        assert_eq!(m.tiers[s.selected.unwrap()].name, "high");
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    /// The `verify_mutations` fuzz target on stable: random mutations of a valid signed bundle are
    /// never accepted, and nothing panics.
    #[test]
    fn fuzz_verify_mutations(data in proptest::collection::vec(any::<u8>(), 0..40)) {
        verify_mutations(&data);
    }

    /// The `manifest_parse` fuzz target on arbitrary bytes.
    #[test]
    fn fuzz_manifest_parse_bytes(data in proptest::collection::vec(any::<u8>(), 0..512)) {
        manifest_parse(&data);
    }

    /// ... and on near-valid manifests (a valid one with a few bytes changed).
    #[test]
    fn fuzz_manifest_parse_mutated(edits in proptest::collection::vec((any::<usize>(), any::<u8>()), 1..4)) {
        let m = template_manifest();
        let mut bytes = m.clone();
        for (i, v) in edits {
            let n = bytes.len();
            bytes[i % n] = v;
        }
        manifest_parse(&bytes);
    }
}

fn template_manifest() -> Vec<u8> {
    static M: std::sync::OnceLock<Vec<u8>> = std::sync::OnceLock::new();
    M.get_or_init(|| {
        let b = bundle();
        std::fs::read(b.dir.join(MANIFEST_FILE)).unwrap()
    })
    .clone()
}

#[test]
fn fuzz_entry_points_accept_the_valid_bundle() {
    // An empty mutation list leaves the bundle intact: it must verify (the property has teeth).
    verify_mutations(&[]);
    manifest_parse(&template_manifest());
    assert!(Manifest::parse(&template_manifest()).is_ok());
}

#[test]
fn deeply_nested_folders_are_refused() {
    let b = bundle();
    let mut p = b.dir.clone();
    for i in 0..=crate::MAX_DEPTH + 1 {
        p.push(format!("d{i}"));
    }
    std::fs::create_dir_all(&p).unwrap();
    let e = verify(&b.dir).unwrap_err();
    assert!(matches!(e, VerifyError::TooMany { .. }), "{e}");
}
