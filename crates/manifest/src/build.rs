//! `build.json`, written by `slmpack quantize`: the tiers of a release folder. `sign` reads it
//! strictly (unknown keys are errors).

use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::manifest::{check_bpw, check_name, check_rel_path, check_requires, Requires};
use crate::{Error, MAX_SMALL_FILE_BYTES, MAX_TIERS};

/// The build description of a release folder.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BuildInfo {
    pub schema: u32,
    pub model: String,
    pub version: String,
    pub tiers: Vec<BuildTier>,
}

/// One tier as `quantize` describes it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BuildTier {
    pub name: String,
    pub file: String,
    pub mix: String,
    pub bits_per_weight: f64,
    pub size: u64,
    pub requires: Requires,
}

impl BuildInfo {
    /// Parse and validate `bytes`; `path` names the file in errors.
    pub fn parse(bytes: &[u8], path: &Path) -> Result<Self, Error> {
        let invalid = |reason: String| Error::Invalid {
            path: path.to_path_buf(),
            reason,
        };
        if bytes.len() as u64 > MAX_SMALL_FILE_BYTES {
            return Err(Error::TooLarge {
                path: path.to_path_buf(),
                size: bytes.len() as u64,
                cap: MAX_SMALL_FILE_BYTES,
            });
        }
        let b: BuildInfo = serde_json::from_slice(bytes).map_err(|e| {
            invalid(format!(
                "{e}\n  hint: `build.json` is written by `slmpack quantize`; fields: schema, model, version, tiers[name, file, mix, bits_per_weight, size, requires{{min_ram_bytes, cpu_features, arch}}]"
            ))
        })?;
        if b.schema != 1 {
            return Err(invalid(format!(
                "schema {} is not supported (expected 1)",
                b.schema
            )));
        }
        check_name("model", &b.model).map_err(|e| invalid(e.to_string()))?;
        semver::Version::parse(&b.version).map_err(|e| {
            invalid(format!(
                "version `{}` is not a semantic version: {e}",
                b.version
            ))
        })?;
        if b.tiers.is_empty() || b.tiers.len() > MAX_TIERS {
            return Err(invalid(format!("a release has 1 to {MAX_TIERS} tiers")));
        }
        let mut names = std::collections::BTreeSet::new();
        let mut files = std::collections::BTreeSet::new();
        for t in &b.tiers {
            check_name("tier name", &t.name).map_err(|e| invalid(e.to_string()))?;
            if !names.insert(&t.name) {
                return Err(invalid(format!("tier `{}` is listed twice", t.name)));
            }
            check_rel_path(&t.file).map_err(|r| {
                invalid(format!(
                    "tier `{}`: file `{}` {r}",
                    t.name,
                    t.file.escape_debug()
                ))
            })?;
            if !files.insert(&t.file) {
                return Err(invalid(format!("file `{}` is used by two tiers", t.file)));
            }
            check_name("quant mix", &t.mix).map_err(|e| invalid(e.to_string()))?;
            check_bpw(&t.name, t.bits_per_weight).map_err(|e| invalid(e.to_string()))?;
            check_requires(&t.name, &t.requires).map_err(|e| invalid(e.to_string()))?;
        }
        Ok(b)
    }

    /// Read and parse `<dir>/build.json`.
    pub fn load(dir: &Path) -> Result<Self, Error> {
        let path = dir.join(crate::BUILD_FILE);
        let bytes =
            crate::fsutil::read_capped(&path, MAX_SMALL_FILE_BYTES).map_err(|e| match e {
                crate::VerifyError::MissingMetadata { path } => Error::Missing {
                    path,
                    hint: "run `slmpack quantize` to build the release folder first".into(),
                },
                crate::VerifyError::Oversized { path, size, cap } => {
                    Error::TooLarge { path, size, cap }
                }
                other => Error::Verify(other),
            })?;
        Self::parse(&bytes, &path)
    }
}
