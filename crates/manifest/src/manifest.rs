//! The manifest schema. `manifest.json` is written once by `sign` and from then on handled only
//! as bytes: signatures cover those exact bytes and verification never re-serializes them.

use std::time::SystemTime;

use serde::{Deserialize, Serialize};

use crate::{MAX_FILES, MAX_MANIFEST_BYTES, MAX_TIERS};

/// The only schema version this build reads and writes.
pub const SCHEMA: u32 = 1;
/// The `type` field of a release manifest.
pub const MANIFEST_TYPE: &str = "slmpack-release";
/// Longest relative path in a manifest.
pub const MAX_PATH_BYTES: usize = 1024;

/// A signed release manifest.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    pub schema: u32,
    #[serde(rename = "type")]
    pub kind: String,
    pub model: String,
    /// Semantic version of the release.
    pub version: String,
    /// Monotonically increasing release counter (rollback protection).
    pub counter: u64,
    /// RFC 3339, UTC, seconds.
    pub created: String,
    /// RFC 3339, UTC, seconds; devices refuse the manifest after this (freeze protection).
    pub expires: String,
    /// One entry per device tier.
    pub tiers: Vec<Tier>,
    /// Every other file of the release (e.g. `build.json`).
    pub files: Vec<FileEntry>,
}

/// One device tier: its file and what a device needs to run it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Tier {
    pub name: String,
    /// Relative path inside the release folder.
    pub file: String,
    pub size: u64,
    pub sha256: String,
    /// Quantization mix, e.g. `q4_k_m`.
    pub mix: String,
    pub bits_per_weight: f64,
    pub requires: Requires,
}

/// Device requirements of a tier. Empty lists mean "any".
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Requires {
    pub min_ram_bytes: u64,
    #[serde(default)]
    pub cpu_features: Vec<String>,
    #[serde(default)]
    pub arch: Vec<String>,
}

/// A file of the release that is not a tier file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileEntry {
    pub path: String,
    pub size: u64,
    pub sha256: String,
}

/// Why a parsed manifest is not acceptable.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Invalid {
    /// A listed path could escape the release folder or is otherwise unsafe.
    UnsafePath {
        entry: String,
        reason: &'static str,
    },
    Other(String),
}

impl std::fmt::Display for Invalid {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Invalid::UnsafePath { entry, reason } => write!(f, "path `{entry}` {reason}"),
            Invalid::Other(s) => f.write_str(s),
        }
    }
}

fn other(s: impl Into<String>) -> Invalid {
    Invalid::Other(s.into())
}

/// Check a manifest path: relative, `/`-separated, no `.`/`..`/empty components, no NUL, control
/// characters, backslashes or colons, and not one of the metadata file names.
pub fn check_rel_path(p: &str) -> Result<(), &'static str> {
    if p.is_empty() {
        return Err("is empty");
    }
    if p.len() > MAX_PATH_BYTES {
        return Err("is too long");
    }
    if p.contains('\0') {
        return Err("contains a NUL byte");
    }
    if p.starts_with('/') {
        return Err("is absolute");
    }
    if p.chars().any(|c| c.is_control()) {
        return Err("contains a control character");
    }
    if p.contains('\\') || p.contains(':') {
        return Err("contains `\\` or `:` (not portable, may escape on Windows)");
    }
    for comp in p.split('/') {
        match comp {
            "" => return Err("has an empty component"),
            "." => return Err("has a `.` component"),
            ".." => return Err("escapes the release folder (`..`)"),
            c if c.len() > 255 => return Err("has a component longer than 255 bytes"),
            _ => {}
        }
    }
    if p == crate::MANIFEST_FILE || p == crate::SIG_FILE {
        return Err("names the manifest or signature file");
    }
    Ok(())
}

/// A name (model, tier, mix, cpu feature, arch): 1..=128 printable ASCII characters without
/// spaces or quotes.
pub(crate) fn check_name(what: &str, s: &str) -> Result<(), Invalid> {
    if s.is_empty()
        || s.len() > 128
        || !s
            .bytes()
            .all(|b| b.is_ascii_graphic() && b != b'"' && b != b'`')
    {
        return Err(other(format!(
            "{what} `{}` must be 1 to 128 printable ASCII characters",
            s.escape_debug()
        )));
    }
    Ok(())
}

pub(crate) fn check_requires(tier: &str, r: &Requires) -> Result<(), Invalid> {
    if r.cpu_features.len() > 64 || r.arch.len() > 64 {
        return Err(other(format!(
            "tier `{tier}`: too many cpu features or archs"
        )));
    }
    for f in r.cpu_features.iter().chain(&r.arch) {
        check_name("cpu feature or arch", f)?;
    }
    Ok(())
}

pub(crate) fn check_bpw(tier: &str, bpw: f64) -> Result<(), Invalid> {
    if !(bpw.is_finite() && bpw > 0.0 && bpw <= 64.0) {
        return Err(other(format!(
            "tier `{tier}`: bits_per_weight {bpw} is not in (0, 64]"
        )));
    }
    Ok(())
}

/// Parse an RFC 3339 UTC timestamp.
pub fn parse_time(s: &str) -> Option<SystemTime> {
    humantime::parse_rfc3339(s).ok()
}

/// Format as RFC 3339 UTC, whole seconds.
pub fn format_time(t: SystemTime) -> String {
    humantime::format_rfc3339_seconds(t).to_string()
}

impl Manifest {
    /// Parse and validate. Size is capped before parsing.
    pub fn parse(bytes: &[u8]) -> Result<Self, Invalid> {
        if bytes.len() as u64 > MAX_MANIFEST_BYTES {
            return Err(other(format!(
                "{} bytes, more than the {MAX_MANIFEST_BYTES}-byte limit",
                bytes.len()
            )));
        }
        let m: Manifest = serde_json::from_slice(bytes).map_err(|e| other(e.to_string()))?;
        m.validate()?;
        Ok(m)
    }

    /// The bytes `sign` writes: pretty JSON and a newline.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut v = serde_json::to_vec_pretty(self).expect("manifest serializes");
        v.push(b'\n');
        v
    }

    pub fn created_time(&self) -> SystemTime {
        parse_time(&self.created).expect("validated")
    }

    pub fn expires_time(&self) -> SystemTime {
        parse_time(&self.expires).expect("validated")
    }

    /// Every listed file: (path, size, sha256 hex); tier files first.
    pub fn all_files(&self) -> Vec<(&str, u64, &str)> {
        self.tiers
            .iter()
            .map(|t| (t.file.as_str(), t.size, t.sha256.as_str()))
            .chain(
                self.files
                    .iter()
                    .map(|f| (f.path.as_str(), f.size, f.sha256.as_str())),
            )
            .collect()
    }

    /// Check every field; the first problem found is returned.
    pub fn validate(&self) -> Result<(), Invalid> {
        if self.schema != SCHEMA {
            return Err(other(format!(
                "schema {} is not supported (this build reads schema {SCHEMA})",
                self.schema
            )));
        }
        if self.kind != MANIFEST_TYPE {
            return Err(other(format!("`type` must be `{MANIFEST_TYPE}`")));
        }
        check_name("model", &self.model)?;
        semver::Version::parse(&self.version)
            .map_err(|e| other(format!("version `{}`: {e}", self.version.escape_debug())))?;
        if self.counter == 0 {
            return Err(other("counter must be at least 1"));
        }
        let created = parse_time(&self.created).ok_or_else(|| {
            other(format!(
                "`created` {:?} is not an RFC 3339 time",
                self.created
            ))
        })?;
        let expires = parse_time(&self.expires).ok_or_else(|| {
            other(format!(
                "`expires` {:?} is not an RFC 3339 time",
                self.expires
            ))
        })?;
        if expires <= created {
            return Err(other("`expires` is not after `created`"));
        }
        if self.tiers.is_empty() || self.tiers.len() > MAX_TIERS {
            return Err(other(format!("a release has 1 to {MAX_TIERS} tiers")));
        }
        if self.tiers.len() + self.files.len() > MAX_FILES {
            return Err(other(format!("more than {MAX_FILES} files")));
        }
        let mut names = std::collections::BTreeSet::new();
        for t in &self.tiers {
            check_name("tier name", &t.name)?;
            if !names.insert(t.name.as_str()) {
                return Err(other(format!("tier `{}` is listed twice", t.name)));
            }
            check_name("quant mix", &t.mix)?;
            check_bpw(&t.name, t.bits_per_weight)?;
            check_requires(&t.name, &t.requires)?;
        }
        let mut paths = std::collections::BTreeSet::new();
        for (path, _, sha) in self.all_files() {
            check_rel_path(path).map_err(|reason| Invalid::UnsafePath {
                entry: path.escape_debug().to_string(),
                reason,
            })?;
            if !paths.insert(path) {
                return Err(other(format!("file `{path}` is listed twice")));
            }
            if crate::decode_hex::<32>(sha).is_none() {
                return Err(other(format!(
                    "file `{path}`: sha256 must be 64 lowercase hex digits"
                )));
            }
        }
        // A folder and a file with the same name cannot both exist; refuse `a` next to `a/b`.
        for p in &paths {
            let prefix = format!("{p}/");
            // Paths under `p/` sort right after `prefix`; one range lookup finds them.
            if paths
                .range::<str, _>((
                    std::ops::Bound::Included(prefix.as_str()),
                    std::ops::Bound::Unbounded,
                ))
                .next()
                .is_some_and(|q| q.starts_with(&prefix))
            {
                return Err(other(format!(
                    "`{p}` is listed both as a file and as a folder"
                )));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rel_paths() {
        for ok in ["low.gguf", "sub/high.gguf", "a b.gguf", "ünïcode.bin"] {
            assert!(check_rel_path(ok).is_ok(), "{ok}");
        }
        for bad in [
            "",
            "../x",
            "a/../../x",
            "/etc/passwd",
            "a\0b",
            "./a",
            "a//b",
            "a/",
            "c:\\x",
            "a\\..\\b",
            "manifest.json",
            "manifest.sig",
            "a\nb",
            "..",
        ] {
            assert!(check_rel_path(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn file_and_folder_with_one_name_is_refused() {
        let b = tempfile::tempdir().unwrap();
        let dir = b.path().join("r");
        crate::fuzzing::write_release(&dir, "1.0.0", 1, crate::fuzzing::TIERS);
        crate::fuzzing::sign_fixed(&dir, &crate::fuzzing::test_key(1));
        let mut m = Manifest::parse(&std::fs::read(dir.join("manifest.json")).unwrap()).unwrap();
        let mut extra = m.files[0].clone();
        extra.path = "build.json-x".into();
        m.files.push(extra.clone());
        assert!(m.validate().is_ok());
        extra.path = "build.json/inner".into();
        m.files.push(extra);
        assert!(m
            .validate()
            .unwrap_err()
            .to_string()
            .contains("both as a file and as a folder"));
    }
}
