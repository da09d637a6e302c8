//! Device-side verification. Fails closed: every check must pass, and each failure is its own
//! [`VerifyError`] variant. Order of checks:
//!
//! 1. `manifest.json` and `manifest.sig` are regular files within their size caps (checked before
//!    reading);
//! 2. `manifest.sig` parses strictly (canonical spelling only);
//! 3. trust: the `--pubkey` keys plus keys rotated in by earlier verifications (device state),
//!    minus revoked ones, then rotation statements in `manifest.sig` whose old key is trusted;
//! 4. signatures over the exact manifest bytes (`verify_strict`); a bad signature by a trusted
//!    key fails at once; distinct trusted signers must reach the threshold;
//! 5. only then is the manifest parsed (`deny_unknown_fields`) and validated, paths included;
//! 6. model, expiry, rollback (device state counter);
//! 7. the folder: no symlinks, no extra or missing files, sizes, then SHA-256 of every file.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use sha2::{Digest, Sha256};

use crate::fsutil::{join_rel, list_release_files, read_capped};
use crate::hash::{hash_files, Progress};
use crate::keys::{KeyId, PublicKey};
use crate::manifest::{format_time, Invalid, Manifest};
use crate::sigfile::SigFile;
use crate::state::DeviceState;
use crate::{
    VerifyError, MANIFEST_FILE, MANIFEST_SIG_CONTEXT, MAX_MANIFEST_BYTES, MAX_SIG_BYTES, SIG_FILE,
};

/// What the device trusts and remembers.
pub struct VerifyOptions<'a> {
    /// Keys passed with `--pubkey`.
    pub keys: &'a [PublicKey],
    /// Distinct trusted signatures required (at least 1).
    pub threshold: usize,
    /// Device state: rollback counter, rotated and revoked keys. `None` skips the rollback check.
    pub state: Option<&'a DeviceState>,
    /// The current time (expiry check).
    pub now: SystemTime,
    /// When set, the manifest must be for this model.
    pub expect_model: Option<&'a str>,
    pub progress: Progress<'a>,
}

impl<'a> VerifyOptions<'a> {
    /// One key, threshold 1, no state, the current time, no progress.
    pub fn new(keys: &'a [PublicKey]) -> Self {
        VerifyOptions {
            keys,
            threshold: 1,
            state: None,
            now: SystemTime::now(),
            expect_model: None,
            progress: &|_| {},
        }
    }
}

/// A release that passed every check.
#[derive(Debug, Clone)]
pub struct Verified {
    pub manifest: Manifest,
    /// SHA-256 of the manifest bytes.
    pub manifest_sha256: [u8; 32],
    /// Distinct trusted keys whose signatures verified.
    pub signers: Vec<KeyId>,
    /// Keys newly trusted through rotation statements.
    pub rotated_in: Vec<PublicKey>,
    /// Keys newly revoked through rotation statements.
    pub revoked: Vec<KeyId>,
    /// Bytes hashed.
    pub total_bytes: u64,
}

/// The keys trusted for one verification.
struct Trust {
    trusted: BTreeMap<KeyId, PublicKey>,
    rotated_in: Vec<PublicKey>,
    newly_revoked: Vec<KeyId>,
}

fn resolve_trust(
    sig_path: &Path,
    sigs: &SigFile,
    opts: &VerifyOptions<'_>,
) -> Result<Trust, VerifyError> {
    let bad_state = |reason| VerifyError::MalformedState {
        path: PathBuf::from("device state"),
        reason,
    };
    let mut revoked: BTreeSet<KeyId> = BTreeSet::new();
    let mut trusted: BTreeMap<KeyId, PublicKey> = BTreeMap::new();
    if let Some(st) = opts.state {
        revoked.extend(st.revoked().map_err(bad_state)?);
        for k in st.keys().map_err(bad_state)? {
            trusted.insert(k.keyid(), k);
        }
    }
    for k in opts.keys {
        trusted.insert(k.keyid(), k.clone());
    }
    trusted.retain(|id, _| !revoked.contains(id));

    let mut rotations = Vec::new();
    for r in &sigs.rotations {
        rotations.push(r.verify().map_err(|reason| VerifyError::BadRotation {
            path: sig_path.to_path_buf(),
            reason,
        })?);
    }
    let mut rotated_in = Vec::new();
    let mut newly_revoked = Vec::new();
    // Each application revokes a key, so this terminates after at most `rotations.len()` rounds.
    let mut changed = true;
    while changed {
        changed = false;
        for r in &rotations {
            let (old, new) = (r.old.keyid(), r.new.keyid());
            if trusted.contains_key(&old) && !revoked.contains(&new) {
                trusted.remove(&old);
                revoked.insert(old);
                newly_revoked.push(old);
                if let std::collections::btree_map::Entry::Vacant(e) = trusted.entry(new) {
                    e.insert(r.new.clone());
                    rotated_in.push(r.new.clone());
                }
                changed = true;
            }
        }
    }
    Ok(Trust {
        trusted,
        rotated_in,
        newly_revoked,
    })
}

/// Check the signatures of `manifest_bytes`; returns the distinct trusted signers.
fn check_signatures(
    sig_path: &Path,
    manifest_bytes: &[u8],
    sigs: &SigFile,
    trust: &Trust,
    threshold: usize,
) -> Result<Vec<KeyId>, VerifyError> {
    let mut valid = BTreeSet::new();
    let mut unknown = BTreeSet::new();
    for s in &sigs.signatures {
        let (keyid, sig) = s
            .decode()
            .map_err(|reason| VerifyError::MalformedSignatures {
                path: sig_path.to_path_buf(),
                reason,
            })?;
        match trust.trusted.get(&keyid) {
            Some(pk) => {
                if !pk.verify(MANIFEST_SIG_CONTEXT, manifest_bytes, &sig) {
                    return Err(VerifyError::BadSignature {
                        path: sig_path.to_path_buf(),
                        keyid: keyid.to_string(),
                    });
                }
                valid.insert(keyid);
            }
            None => {
                unknown.insert(keyid);
            }
        }
    }
    let need = threshold.max(1);
    if valid.len() >= need {
        return Ok(valid.into_iter().collect());
    }
    if valid.is_empty() && !unknown.is_empty() {
        return Err(VerifyError::UnknownKey {
            path: sig_path.to_path_buf(),
            keyids: unknown
                .iter()
                .map(|k| format!("`{k}`"))
                .collect::<Vec<_>>()
                .join(", "),
        });
    }
    Err(VerifyError::BelowThreshold {
        path: sig_path.to_path_buf(),
        have: valid.len(),
        need,
    })
}

/// Verify the release folder `dir`. See the module docs for the order of checks.
pub fn verify_release(dir: &Path, opts: &VerifyOptions<'_>) -> Result<Verified, VerifyError> {
    let manifest_path = dir.join(MANIFEST_FILE);
    let sig_path = dir.join(SIG_FILE);
    let manifest_bytes = read_capped(&manifest_path, MAX_MANIFEST_BYTES)?;
    let sig_bytes = read_capped(&sig_path, MAX_SIG_BYTES)?;
    let sigs = SigFile::parse(&sig_bytes).map_err(|reason| VerifyError::MalformedSignatures {
        path: sig_path.clone(),
        reason,
    })?;
    let trust = resolve_trust(&sig_path, &sigs, opts)?;
    let signers = check_signatures(&sig_path, &manifest_bytes, &sigs, &trust, opts.threshold)?;

    let manifest = Manifest::parse(&manifest_bytes).map_err(|e| match e {
        Invalid::UnsafePath { entry, reason } => VerifyError::UnsafePath {
            path: manifest_path.clone(),
            entry,
            reason,
        },
        Invalid::Other(reason) => VerifyError::MalformedManifest {
            path: manifest_path.clone(),
            reason,
        },
    })?;
    if let Some(want) = opts.expect_model {
        if manifest.model != want {
            return Err(VerifyError::WrongModel {
                path: manifest_path,
                expected: want.to_string(),
                found: manifest.model,
            });
        }
    }
    if opts.now >= manifest.expires_time() {
        return Err(VerifyError::Expired {
            path: manifest_path,
            expires: manifest.expires.clone(),
            now: format_time(opts.now),
        });
    }
    if let Some(st) = opts.state {
        let recorded = st.counter(&manifest.model);
        if manifest.counter < recorded {
            return Err(VerifyError::Rollback {
                path: manifest_path,
                model: manifest.model.clone(),
                counter: manifest.counter,
                recorded,
            });
        }
    }
    let total_bytes = check_files(dir, &manifest, opts.progress)?;
    Ok(Verified {
        manifest_sha256: Sha256::digest(&manifest_bytes).into(),
        manifest,
        signers,
        rotated_in: trust.rotated_in,
        revoked: trust.newly_revoked,
        total_bytes,
    })
}

/// Check the folder against the manifest: no symlinks or special files, no extra or missing
/// files, sizes, then the SHA-256 of every listed file (in parallel). Returns the bytes hashed.
pub fn check_files(
    dir: &Path,
    manifest: &Manifest,
    progress: Progress<'_>,
) -> Result<u64, VerifyError> {
    let found = list_release_files(dir)?;
    let listed = manifest.all_files();
    let listed_paths: BTreeSet<&str> = listed.iter().map(|(p, _, _)| *p).collect();
    for f in &found {
        if f.rel != MANIFEST_FILE && f.rel != SIG_FILE && !listed_paths.contains(f.rel.as_str()) {
            return Err(VerifyError::ExtraFile {
                path: join_rel(dir, &f.rel),
            });
        }
    }
    let sizes: BTreeMap<&str, u64> = found.iter().map(|f| (f.rel.as_str(), f.size)).collect();
    for (p, size, _) in &listed {
        match sizes.get(p) {
            None => {
                return Err(VerifyError::MissingFile {
                    path: join_rel(dir, p),
                })
            }
            Some(actual) if actual != size => {
                return Err(VerifyError::SizeMismatch {
                    path: join_rel(dir, p),
                    expected: *size,
                    actual: *actual,
                })
            }
            Some(_) => {}
        }
    }
    let jobs: Vec<(PathBuf, u64)> = listed
        .iter()
        .map(|(p, size, _)| (join_rel(dir, p), *size))
        .collect();
    let results = hash_files(&jobs, progress);
    let mut total = 0;
    for ((p, size, sha), res) in listed.iter().zip(results) {
        let path = join_rel(dir, p);
        let h = res.map_err(|source| VerifyError::Io {
            path: path.clone(),
            source,
        })?;
        if h.len != *size {
            return Err(VerifyError::SizeMismatch {
                path,
                expected: *size,
                actual: h.len,
            });
        }
        if hex::encode(h.sha256) != *sha {
            return Err(VerifyError::HashMismatch { path });
        }
        total += h.len;
    }
    Ok(total)
}
