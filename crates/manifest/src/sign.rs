//! Publisher side: hash a release folder, write `manifest.json`, sign it into `manifest.sig`;
//! co-sign an existing manifest for a signature threshold.
//!
//! Release counter default: derived from the semantic version as
//! `major * 10^12 + minor * 10^6 + patch` (so `1.2.3` is `1000002000003`). It is reproducible
//! (any CI checkout computes the same number), increases with every version bump, and stays equal
//! when a release is re-signed (e.g. to extend its expiry), which devices accept. Pre-release
//! versions sort below their release but would map to the same counter, so they need an explicit
//! `--counter`.

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use crate::build::BuildInfo;
use crate::fsutil::{join_rel, list_release_files, read_capped};
use crate::hash::{hash_files, Progress};
use crate::keys::{KeyId, SecretKey};
use crate::manifest::{format_time, FileEntry, Manifest, Tier, MANIFEST_TYPE, SCHEMA};
use crate::rotation::RotationBundle;
use crate::sigfile::{SigEntry, SigFile};
use crate::verify::check_files;
use crate::{
    Error, BUILD_FILE, MANIFEST_FILE, MANIFEST_SIG_CONTEXT, MAX_MANIFEST_BYTES, MAX_SIG_BYTES,
    SIG_FILE,
};

/// Options of [`sign_release`].
pub struct SignOptions<'a> {
    /// Lifetime of the manifest from `now`.
    pub expires_in: Duration,
    /// Explicit release counter; `None` derives it from the version.
    pub counter: Option<u64>,
    pub now: SystemTime,
    /// Rotation statements to ship in `manifest.sig`.
    pub rotations: Vec<RotationBundle>,
    pub progress: Progress<'a>,
}

/// What was written.
#[derive(Debug, Clone)]
pub struct Signed {
    pub manifest: Manifest,
    pub manifest_path: PathBuf,
    pub sig_path: PathBuf,
    pub keyid: KeyId,
    /// Signatures now in `manifest.sig`.
    pub signatures: usize,
}

/// The longest manifest lifetime `sign` accepts.
pub const MAX_LIFETIME: Duration = Duration::from_secs(20 * 366 * 86400);

/// Parse a lifetime such as `180d`, `12h` or `1y 2M` (humantime syntax).
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let d = humantime::parse_duration(s).map_err(|e| {
        format!("`{s}` is not a duration ({e}); examples: `180d`, `12h`, `90d 12h`")
    })?;
    if d < Duration::from_secs(1) {
        return Err(format!("`{s}` is shorter than one second"));
    }
    if d > MAX_LIFETIME {
        return Err(format!(
            "`{s}` is longer than 20 years\n  hint: a manifest's expiry bounds how long a frozen (withheld) update goes unnoticed; re-sign releases instead"
        ));
    }
    Ok(d)
}

/// The default release counter for a semantic version.
pub fn counter_from_version(version: &str) -> Result<u64, String> {
    let v = semver::Version::parse(version)
        .map_err(|e| format!("version `{version}` is not a semantic version: {e}"))?;
    if !v.pre.is_empty() {
        return Err(format!(
            "pre-release version `{version}` has no default release counter\n  hint: pass `--counter N`, higher than the counter of every release devices may already run"
        ));
    }
    const M: u64 = 1_000_000;
    if v.major >= M || v.minor >= M || v.patch >= M {
        return Err(format!(
            "version `{version}` has a component of 1000000 or more\n  hint: pass `--counter N`"
        ));
    }
    let c = v.major * M * M + v.minor * M + v.patch;
    if c == 0 {
        return Err(
            "version `0.0.0` gives counter 0\n  hint: pass `--counter N` (at least 1)".into(),
        );
    }
    Ok(c)
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> Error + '_ {
    move |source| Error::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Sign a fresh release folder: read `build.json`, hash every file, write `manifest.json` and a
/// new `manifest.sig` holding this key's signature (and `opts.rotations`).
pub fn sign_release(dir: &Path, key: &SecretKey, opts: &SignOptions<'_>) -> Result<Signed, Error> {
    let build = BuildInfo::load(dir)?;
    let build_path = dir.join(BUILD_FILE);
    let found = list_release_files(dir)?;
    let size_of = |rel: &str| found.iter().find(|f| f.rel == rel).map(|f| f.size);

    for t in &build.tiers {
        let path = join_rel(dir, &t.file);
        let Some(actual) = size_of(&t.file) else {
            return Err(Error::Missing {
                path,
                hint: format!("`build.json` lists it as the file of tier `{}`", t.name),
            });
        };
        if actual != t.size {
            return Err(Error::Invalid {
                path: build_path,
                reason: format!(
                    "tier `{}`: `{}` is {actual} bytes, build.json says {}\n  hint: build.json is stale; re-run `slmpack quantize`",
                    t.name, t.file, t.size
                ),
            });
        }
    }
    let others: Vec<(String, u64)> = found
        .iter()
        .filter(|f| {
            f.rel != MANIFEST_FILE
                && f.rel != SIG_FILE
                && !build.tiers.iter().any(|t| t.file == f.rel)
        })
        .map(|f| (f.rel.clone(), f.size))
        .collect();

    let jobs: Vec<(PathBuf, u64)> = build
        .tiers
        .iter()
        .map(|t| (t.file.as_str(), t.size))
        .chain(others.iter().map(|(p, s)| (p.as_str(), *s)))
        .map(|(p, s)| (join_rel(dir, p), s))
        .collect();
    let mut digests = Vec::with_capacity(jobs.len());
    for ((path, size), res) in jobs.iter().zip(hash_files(&jobs, opts.progress)) {
        let h = res.map_err(io_err(path))?;
        if h.len != *size {
            return Err(Error::Invalid {
                path: path.clone(),
                reason: "the file changed size while it was being hashed".into(),
            });
        }
        digests.push(hex::encode(h.sha256));
    }
    let (tier_digests, other_digests) = digests.split_at(build.tiers.len());

    let counter = match opts.counter {
        Some(c) => c,
        None => counter_from_version(&build.version).map_err(|reason| Error::Invalid {
            path: build_path.clone(),
            reason,
        })?,
    };
    let manifest_path = dir.join(MANIFEST_FILE);
    let expires = Some(opts.expires_in)
        .filter(|d| *d <= MAX_LIFETIME)
        .and_then(|d| opts.now.checked_add(d))
        .ok_or_else(|| Error::Invalid {
            path: manifest_path.clone(),
            reason: "the lifetime is longer than 20 years or out of range".into(),
        })?;
    let manifest = Manifest {
        schema: SCHEMA,
        kind: MANIFEST_TYPE.into(),
        model: build.model.clone(),
        version: build.version.clone(),
        counter,
        created: format_time(opts.now),
        expires: format_time(expires),
        tiers: build
            .tiers
            .iter()
            .zip(tier_digests)
            .map(|(t, sha)| Tier {
                name: t.name.clone(),
                file: t.file.clone(),
                size: t.size,
                sha256: sha.clone(),
                mix: t.mix.clone(),
                bits_per_weight: t.bits_per_weight,
                requires: t.requires.clone(),
            })
            .collect(),
        files: others
            .iter()
            .zip(other_digests)
            .map(|((p, s), sha)| FileEntry {
                path: p.clone(),
                size: *s,
                sha256: sha.clone(),
            })
            .collect(),
    };
    manifest.validate().map_err(|e| Error::Invalid {
        path: manifest_path.clone(),
        reason: e.to_string(),
    })?;
    for r in &opts.rotations {
        r.verify().map_err(|reason| Error::Invalid {
            path: PathBuf::from("rotation statement"),
            reason,
        })?;
    }
    let bytes = manifest.to_bytes();
    let mut sigs = SigFile::new();
    sigs.signatures.push(sign_bytes(key, &bytes));
    sigs.rotations = opts.rotations.clone();
    let sig_path = dir.join(SIG_FILE);
    // The manifest first: until the signature file follows, the folder fails verification.
    crate::write_atomic(&manifest_path, &bytes, false).map_err(io_err(&manifest_path))?;
    crate::write_atomic(&sig_path, &sigs.to_bytes(), false).map_err(io_err(&sig_path))?;
    Ok(Signed {
        manifest,
        manifest_path,
        sig_path,
        keyid: key.public().keyid(),
        signatures: 1,
    })
}

/// The signature entry of `key` over exact manifest bytes.
pub fn sign_bytes(key: &SecretKey, manifest_bytes: &[u8]) -> SigEntry {
    SigEntry::new(
        key.public().keyid(),
        &key.sign(MANIFEST_SIG_CONTEXT, manifest_bytes),
    )
}

/// Add `key`'s signature to an already signed release (for a threshold). The manifest bytes are
/// signed as they are; the files are checked against them first, so a co-signer attests content.
pub fn cosign_release(
    dir: &Path,
    key: &SecretKey,
    progress: Progress<'_>,
) -> Result<Signed, Error> {
    let manifest_path = dir.join(MANIFEST_FILE);
    let sig_path = dir.join(SIG_FILE);
    let bytes = read_capped(&manifest_path, MAX_MANIFEST_BYTES)?;
    let sig_bytes = read_capped(&sig_path, MAX_SIG_BYTES)?;
    let mut sigs = SigFile::parse(&sig_bytes).map_err(|reason| Error::Invalid {
        path: sig_path.clone(),
        reason,
    })?;
    let manifest = Manifest::parse(&bytes).map_err(|e| Error::Invalid {
        path: manifest_path.clone(),
        reason: e.to_string(),
    })?;
    check_files(dir, &manifest, progress)?;
    let keyid = key.public().keyid();
    if sigs.signatures.iter().any(|s| s.keyid == keyid.to_string()) {
        return Err(Error::Invalid {
            path: sig_path,
            reason: format!("already signed by key `{keyid}`\n  hint: a threshold counts distinct keys; co-sign with another key"),
        });
    }
    if sigs.signatures.len() >= crate::MAX_SIGNATURES {
        return Err(Error::Invalid {
            path: sig_path,
            reason: format!(
                "already holds {} signatures, the most allowed",
                sigs.signatures.len()
            ),
        });
    }
    sigs.signatures.push(sign_bytes(key, &bytes));
    crate::write_atomic(&sig_path, &sigs.to_bytes(), false).map_err(io_err(&sig_path))?;
    Ok(Signed {
        manifest,
        manifest_path,
        sig_path,
        keyid,
        signatures: sigs.signatures.len(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_from_versions() {
        assert_eq!(counter_from_version("1.0.0").unwrap(), 1_000_000_000_000);
        assert_eq!(counter_from_version("1.2.3").unwrap(), 1_000_002_000_003);
        assert!(
            counter_from_version("0.9.999999").unwrap() < counter_from_version("1.0.0").unwrap()
        );
        assert!(counter_from_version("1.0.0-rc.1").is_err());
        assert!(counter_from_version("0.0.0").is_err());
        assert!(counter_from_version("1.1000000.0").is_err());
        assert!(counter_from_version("v1").is_err());
        // Build metadata does not change the counter.
        assert_eq!(
            counter_from_version("1.0.0+abc").unwrap(),
            1_000_000_000_000
        );
    }

    #[test]
    fn lifetimes() {
        assert_eq!(
            parse_duration("180d").unwrap(),
            Duration::from_secs(180 * 86400)
        );
        assert!(parse_duration("0s").is_err());
        assert!(parse_duration("soon").is_err());
        assert!(parse_duration("1000000y").is_err());
        assert!(parse_duration("21y").is_err());
    }
}
