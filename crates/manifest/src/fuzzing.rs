//! Entry points shared by the cargo-fuzz targets (`crates/fuzz`) and the proptests, plus the
//! fixture they use: a small signed release folder with random tier files.
//!
//! - [`manifest_parse`]: every parser in this crate on arbitrary bytes; must never panic, and
//!   whatever parses must round-trip.
//! - [`verify_mutations`]: arbitrary bytes decoded as mutations (flip, truncate, grow, insert,
//!   delete, add, swap, rename, symlink) applied to a copy of a valid signed bundle; verification
//!   must reject the bundle unless the mutations cancelled out, and never panic.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::{Duration, SystemTime};

use crate::build::BuildInfo;
use crate::device::DeviceProfile;
use crate::keys::{PublicKey, SecretKey};
use crate::manifest::Manifest;
use crate::rotation::RotationBundle;
use crate::sigfile::SigFile;
use crate::sign::{sign_release, SignOptions};
use crate::state::DeviceState;
use crate::verify::{verify_release, VerifyOptions};

/// The fixed "now" of fixtures: 2025-01-01T00:00:00Z.
pub const FIXED_NOW: u64 = 1_735_689_600;

pub fn fixed_now() -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_secs(FIXED_NOW)
}

/// A deterministic key (`n` selects it).
pub fn test_key(n: u8) -> SecretKey {
    SecretKey::from_seed(&[n; 32])
}

/// Deterministic pseudo-random bytes (xorshift64*).
pub fn pseudo_random(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            x ^= x >> 12;
            x ^= x << 25;
            x ^= x >> 27;
            (x.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 56) as u8
        })
        .collect()
}

/// Write an unsigned release folder: one random file per `(tier, size)` and a `build.json`.
/// Tiers get increasing bits per weight in the order given.
pub fn write_release(dir: &Path, version: &str, seed: u64, tiers: &[(&str, usize)]) {
    std::fs::create_dir_all(dir).unwrap();
    let mut entries = Vec::new();
    for (i, (name, size)) in tiers.iter().enumerate() {
        let file = format!("{name}.gguf");
        std::fs::write(dir.join(&file), pseudo_random(seed + i as u64, *size)).unwrap();
        entries.push(serde_json::json!({
            "name": name, "file": file, "mix": format!("mix_{name}"),
            "bits_per_weight": 4.5 + 2.0 * i as f64, "size": size,
            "requires": {"min_ram_bytes": (256u64 << 20) * (i as u64 + 1),
                         "cpu_features": if i == 2 { vec!["avx512f"] } else { vec![] },
                         "arch": ["x86_64", "aarch64"]}
        }));
    }
    let build = serde_json::json!({
        "schema": 1, "model": "tiny-test", "version": version, "tiers": entries
    });
    std::fs::write(
        dir.join(crate::BUILD_FILE),
        serde_json::to_vec_pretty(&build).unwrap(),
    )
    .unwrap();
}

/// Sign `dir` with `key` at [`fixed_now`], valid 365 days.
pub fn sign_fixed(dir: &Path, key: &SecretKey) {
    let opts = SignOptions {
        expires_in: Duration::from_secs(365 * 86400),
        counter: None,
        now: fixed_now(),
        rotations: Vec::new(),
        progress: &|_| {},
    };
    sign_release(dir, key, &opts).unwrap();
}

/// The standard fixture tiers: `low` and `medium` have the same size (so swapping them changes
/// hashes, not sizes).
pub const TIERS: &[(&str, usize)] = &[("low", 3000), ("medium", 3000), ("high", 5000)];

/// Verification options for fixtures: key 1, one day after signing.
pub fn fixture_verify(
    dir: &Path,
    keys: &[PublicKey],
) -> Result<crate::verify::Verified, crate::VerifyError> {
    let mut o = VerifyOptions::new(keys);
    o.now = fixed_now() + Duration::from_secs(86400);
    verify_release(dir, &o)
}

/// Never panics on any input; what parses must round-trip.
pub fn manifest_parse(data: &[u8]) {
    if let Ok(m) = Manifest::parse(data) {
        let again = Manifest::parse(&m.to_bytes()).expect("a parsed manifest re-parses");
        assert_eq!(again, m);
    }
    if let Ok(s) = SigFile::parse(data) {
        assert_eq!(s.to_bytes(), data, "signature files have one spelling");
    }
    let _ = RotationBundle::parse_file(data);
    let _ = DeviceState::parse(data);
    let _ = BuildInfo::parse(data, Path::new("build.json"));
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = DeviceProfile::from_yaml(text);
        let _ = PublicKey::parse_line(text);
        let _ = crate::manifest::check_rel_path(text);
    }
}

struct Template {
    _dir: tempfile::TempDir,
    snapshot: Vec<(String, Entry)>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Entry {
    File(Vec<u8>),
    Link(PathBuf),
    Other,
}

fn snapshot(root: &Path) -> Vec<(String, Entry)> {
    let mut out = Vec::new();
    fn walk(root: &Path, dir: &Path, out: &mut Vec<(String, Entry)>) {
        let Ok(rd) = std::fs::read_dir(dir) else {
            return;
        };
        for e in rd.flatten() {
            let p = e.path();
            let rel = p.strip_prefix(root).unwrap().to_string_lossy().into_owned();
            let Ok(ft) = e.file_type() else { continue };
            if ft.is_symlink() {
                out.push((rel, Entry::Link(std::fs::read_link(&p).unwrap_or_default())));
            } else if ft.is_dir() {
                walk(root, &p, out);
            } else if ft.is_file() {
                out.push((rel, Entry::File(std::fs::read(&p).unwrap_or_default())));
            } else {
                out.push((rel, Entry::Other));
            }
        }
    }
    walk(root, root, &mut out);
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out
}

fn template() -> &'static Template {
    static T: OnceLock<Template> = OnceLock::new();
    T.get_or_init(|| {
        let dir = tempfile::tempdir().expect("temp dir");
        let root = dir.path().join("release");
        write_release(&root, "1.0.0", 42, TIERS);
        sign_fixed(&root, &test_key(1));
        let snapshot = snapshot(&root);
        Template {
            _dir: dir,
            snapshot,
        }
    })
}

/// Apply mutations decoded from `data` to a copy of the fixture bundle and verify it.
/// Panics if a changed bundle is accepted or an unchanged one refused.
pub fn verify_mutations(data: &[u8]) {
    let t = template();
    let work = tempfile::tempdir().expect("temp dir");
    let root = work.path().join("release");
    std::fs::create_dir(&root).unwrap();
    for (rel, e) in &t.snapshot {
        if let Entry::File(bytes) = e {
            std::fs::write(root.join(rel), bytes).unwrap();
        }
    }
    let names: Vec<String> = t.snapshot.iter().map(|(r, _)| r.clone()).collect();
    for (n, op) in data.chunks(5).take(8).enumerate() {
        if op.len() < 5 {
            break;
        }
        let (kind, which, off, val) = (
            op[0] % 10,
            op[1] as usize,
            u16::from_le_bytes([op[2], op[3]]) as usize,
            op[4],
        );
        let name = &names[which % names.len()];
        let path = root.join(name);
        let other = root.join(&names[(which / names.len() + 1 + which) % names.len()]);
        let mut bytes = std::fs::read(&path).unwrap_or_default();
        let _ = match kind {
            0 if !bytes.is_empty() => {
                let i = off % bytes.len();
                bytes[i] ^= if val == 0 { 1 } else { val };
                std::fs::write(&path, &bytes)
            }
            1 => {
                bytes.truncate(off % (bytes.len() + 1));
                std::fs::write(&path, &bytes)
            }
            2 => {
                bytes.push(val);
                std::fs::write(&path, &bytes)
            }
            3 => {
                bytes.insert(off % (bytes.len() + 1), val);
                std::fs::write(&path, &bytes)
            }
            4 => std::fs::remove_file(&path),
            5 => std::fs::write(root.join(format!("extra{n}.gguf")), [val]),
            6 => {
                let ob = std::fs::read(&other).unwrap_or_default();
                std::fs::write(&other, &bytes).and_then(|_| std::fs::write(&path, ob))
            }
            7 => std::fs::rename(&path, root.join(format!("renamed{n}"))),
            #[cfg(unix)]
            8 => {
                std::fs::remove_file(&path).and_then(|_| std::os::unix::fs::symlink(&other, &path))
            }
            9 => std::fs::create_dir_all(root.join(format!("sub{n}")))
                .and_then(|_| std::fs::write(root.join(format!("sub{n}/{name}")), &bytes)),
            _ => Ok(()),
        };
    }
    let changed = snapshot(&root) != t.snapshot;
    let key = test_key(1).public();
    let result = fixture_verify(&root, &[key]);
    if changed {
        assert!(result.is_err(), "a mutated bundle was accepted: {data:?}");
    } else {
        assert!(
            result.is_ok(),
            "an unchanged bundle was refused: {result:?}"
        );
    }
}
