//! The device state file: what a device must remember between updates to stop rollbacks and to
//! keep key rotations. JSON, read with a size cap, written atomically (temporary file, fsync,
//! rename), and advanced only after a release verified.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::SystemTime;

use serde::{Deserialize, Serialize};

use crate::keys::{KeyId, PublicKey};
use crate::verify::Verified;
use crate::{VerifyError, MAX_SMALL_FILE_BYTES};

/// Persistent device state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeviceState {
    pub schema: u32,
    /// Per model: the newest release this device accepted.
    #[serde(default)]
    pub releases: BTreeMap<String, ReleaseRecord>,
    /// Keys trusted through rotation statements (public-key lines).
    #[serde(default)]
    pub trusted_keys: Vec<String>,
    /// Key ids rotated away from; never trusted again, even if passed with `--pubkey`.
    #[serde(default)]
    pub revoked_keyids: Vec<String>,
}

/// The last accepted release of one model.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReleaseRecord {
    pub counter: u64,
    pub version: String,
    /// SHA-256 of the accepted `manifest.json` bytes.
    pub manifest_sha256: String,
    pub verified_at: String,
}

impl Default for DeviceState {
    fn default() -> Self {
        DeviceState {
            schema: 1,
            releases: BTreeMap::new(),
            trusted_keys: Vec::new(),
            revoked_keyids: Vec::new(),
        }
    }
}

impl DeviceState {
    /// Read the state file. A missing file is a fresh device (empty state); anything malformed is
    /// an error, never silently reset.
    pub fn load(path: &Path) -> Result<Self, VerifyError> {
        let bytes = match crate::fsutil::read_capped(path, MAX_SMALL_FILE_BYTES) {
            Ok(b) => b,
            Err(VerifyError::MissingMetadata { .. }) => return Ok(Self::default()),
            Err(e) => return Err(e),
        };
        Self::parse(&bytes).map_err(|reason| VerifyError::MalformedState {
            path: path.to_path_buf(),
            reason,
        })
    }

    pub fn parse(bytes: &[u8]) -> Result<Self, String> {
        let s: DeviceState = serde_json::from_slice(bytes).map_err(|e| e.to_string())?;
        if s.schema != 1 {
            return Err(format!("schema {} is not supported (expected 1)", s.schema));
        }
        s.keys()?;
        s.revoked()?;
        Ok(s)
    }

    /// Keys trusted through earlier rotations.
    pub fn keys(&self) -> Result<Vec<PublicKey>, String> {
        self.trusted_keys
            .iter()
            .map(|l| PublicKey::parse_line(l).map_err(|e| format!("trusted key: {e}")))
            .collect()
    }

    /// Key ids revoked by earlier rotations.
    pub fn revoked(&self) -> Result<Vec<KeyId>, String> {
        self.revoked_keyids
            .iter()
            .map(|k| {
                KeyId::parse(k)
                    .ok_or_else(|| format!("revoked key id `{k}` is not 64 lowercase hex digits"))
            })
            .collect()
    }

    /// The counter recorded for `model` (0 if none).
    pub fn counter(&self, model: &str) -> u64 {
        self.releases.get(model).map_or(0, |r| r.counter)
    }

    /// Advance the state after a successful verification: the counter never goes down, rotated
    /// keys are kept, revoked ones remembered.
    pub fn record(&mut self, v: &Verified, now: SystemTime) {
        let m = &v.manifest;
        if m.counter >= self.counter(&m.model) {
            self.releases.insert(
                m.model.clone(),
                ReleaseRecord {
                    counter: m.counter,
                    version: m.version.clone(),
                    manifest_sha256: hex::encode(v.manifest_sha256),
                    verified_at: crate::manifest::format_time(now),
                },
            );
        }
        for k in &v.rotated_in {
            let line = k.to_line();
            if !self.trusted_keys.contains(&line) {
                self.trusted_keys.push(line);
            }
        }
        let revoked: Vec<String> = v.revoked.iter().map(|k| k.to_string()).collect();
        self.trusted_keys.retain(|l| {
            PublicKey::parse_line(l).is_ok_and(|k| !revoked.contains(&k.keyid().to_string()))
        });
        for k in revoked {
            if !self.revoked_keyids.contains(&k) {
                self.revoked_keyids.push(k);
            }
        }
    }

    /// Write atomically: temporary file in the same folder, fsync, rename.
    pub fn save(&self, path: &Path) -> std::io::Result<()> {
        let mut v = serde_json::to_vec_pretty(self).expect("state serializes");
        v.push(b'\n');
        crate::write_atomic(path, &v, false)
    }
}
