//! Release recipes (`recipes/*.yaml`): a model, its version and its device tiers, each tier one
//! GGUF; and `build.json`, the record of a build that `slmpack sign` consumes.
//!
//! ```yaml
//! model: smollm2-135m
//! version: 1.0.0
//! tiers:
//!   low:
//!     type: q4_k_m
//!     overrides:
//!       - { pattern: '^token_embd\.weight$', type: q5_0 }
//!     max_bytes: 100MB
//!     requires: { min_ram: 256MiB, cpu_features: [], arch: [x86_64, aarch64] }
//! ```
//!
//! Unknown keys are errors everywhere. Sizes are bytes, or a number with `KB`/`MB`/`GB`/`TB`
//! (powers of 1000) or `KiB`/`MiB`/`GiB`/`TiB` (powers of 1024).

use std::fmt;
use std::path::{Path, PathBuf};

use regex::Regex;
use serde::de::{self, MapAccess, Visitor};
use serde::{Deserialize, Deserializer, Serialize};

use crate::error::{ConvertError, Result};
use crate::ftype::{parse_tensor_type, Ftype};
use crate::rules::Override;

/// Largest recipe file read.
const MAX_RECIPE_BYTES: u64 = 1 << 20;

/// CPU features a tier may require (names as Rust's `is_x86_feature_detected!` /
/// `is_aarch64_feature_detected!` spell them).
pub const CPU_FEATURES: &[&str] = &[
    "sse3",
    "ssse3",
    "sse4.1",
    "sse4.2",
    "popcnt",
    "avx",
    "avx2",
    "fma",
    "f16c",
    "bmi2",
    "avx512f",
    "avx512bw",
    "avx512vl",
    "avx512vnni",
    "avx512bf16",
    "avxvnni",
    "neon",
    "fp16",
    "dotprod",
    "i8mm",
    "sve",
    "sve2",
    "bf16",
];

/// CPU architectures a tier may name (Rust's `std::env::consts::ARCH`).
pub const ARCHES: &[&str] = &[
    "x86_64",
    "x86",
    "aarch64",
    "arm",
    "riscv64",
    "wasm32",
    "powerpc64",
    "loongarch64",
];

#[derive(Clone, Debug)]
pub struct Recipe {
    pub path: PathBuf,
    pub model: String,
    pub version: String,
    pub name: Option<String>,
    pub source: Option<String>,
    pub notes: Option<String>,
    pub tiers: Vec<Tier>,
}

#[derive(Clone, Debug)]
pub struct Tier {
    pub name: String,
    pub ftype: Ftype,
    pub pure: bool,
    pub overrides: Vec<Override>,
    pub max_bytes: Option<u64>,
    pub requires: Requires,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Requires {
    pub min_ram_bytes: u64,
    pub cpu_features: Vec<String>,
    pub arch: Vec<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRecipe {
    model: String,
    version: String,
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    source: Option<String>,
    #[serde(default)]
    notes: Option<String>,
    tiers: Tiers,
}

struct Tiers(Vec<(String, RawTier)>);

impl<'de> Deserialize<'de> for Tiers {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Tiers;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a map of tier name to tier")
            }
            fn visit_map<A: MapAccess<'de>>(
                self,
                mut m: A,
            ) -> std::result::Result<Tiers, A::Error> {
                let mut v: Vec<(String, RawTier)> = Vec::new();
                while let Some((k, t)) = m.next_entry::<String, RawTier>()? {
                    if v.iter().any(|(n, _)| *n == k) {
                        return Err(de::Error::custom(format!("tier `{k}` appears twice")));
                    }
                    v.push((k, t));
                }
                Ok(Tiers(v))
            }
        }
        d.deserialize_map(V)
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTier {
    #[serde(rename = "type")]
    ty: String,
    #[serde(default)]
    pure: bool,
    #[serde(default)]
    overrides: Vec<RawOverride>,
    #[serde(default)]
    max_bytes: Option<Size>,
    #[serde(default)]
    requires: Option<RawRequires>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawOverride {
    pattern: String,
    #[serde(rename = "type")]
    ty: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRequires {
    #[serde(default)]
    min_ram: Option<Size>,
    #[serde(default)]
    cpu_features: Vec<String>,
    #[serde(default)]
    arch: Vec<String>,
}

/// A byte size written as an integer or a string with a unit.
#[derive(Clone, Copy, Debug, PartialEq)]
struct Size(u64);

impl<'de> Deserialize<'de> for Size {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            N(u64),
            S(String),
        }
        match Raw::deserialize(d).map_err(|_| {
            de::Error::custom("expected a size: bytes, or a number with KB/MB/GB or KiB/MiB/GiB")
        })? {
            Raw::N(n) => Ok(Size(n)),
            Raw::S(s) => parse_size(&s).map(Size).map_err(de::Error::custom),
        }
    }
}

/// Parse `100MB`, `96MiB`, `1.5GB`, `123` into bytes.
pub fn parse_size(s: &str) -> std::result::Result<u64, String> {
    let t = s.trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (num, unit) = (t[..split].trim(), t[split..].trim());
    let mult: u64 = match unit.to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "kb" => 1_000,
        "mb" => 1_000_000,
        "gb" => 1_000_000_000,
        "tb" => 1_000_000_000_000,
        "kib" => 1 << 10,
        "mib" => 1 << 20,
        "gib" => 1 << 30,
        "tib" => 1 << 40,
        _ => {
            return Err(format!(
                "size `{s}` has unknown unit `{unit}` (use B, KB, MB, GB, TB, KiB, MiB, GiB or TiB)"
            ))
        }
    };
    let bad = || format!("`{s}` is not a size (e.g. 100MB, 96MiB or 1000000)");
    if num.is_empty() || num.matches('.').count() > 1 {
        return Err(bad());
    }
    let (int, frac) = num.split_once('.').unwrap_or((num, ""));
    let int: u64 = if int.is_empty() {
        0
    } else {
        int.parse().map_err(|_| bad())?
    };
    let mut v = int.checked_mul(mult).ok_or_else(bad)?;
    if !frac.is_empty() {
        let digits = frac.len().min(12) as u32;
        let f: u64 = frac[..digits as usize].parse().map_err(|_| bad())?;
        v = v
            .checked_add((f as u128 * mult as u128 / 10u128.pow(digits)) as u64)
            .ok_or_else(bad)?;
    }
    Ok(v)
}

/// Bytes in a human form: `99.0 MB (94.4 MiB)`.
pub fn human_size(n: u64) -> String {
    format!(
        "{:.1} MB, {:.1} MiB",
        n as f64 / 1e6,
        n as f64 / (1u64 << 20) as f64
    )
}

fn valid_name(s: &str) -> bool {
    let mut c = s.chars();
    matches!(c.next(), Some(ch) if ch.is_ascii_lowercase() || ch.is_ascii_digit())
        && c.all(|ch| ch.is_ascii_lowercase() || ch.is_ascii_digit() || "._-".contains(ch))
        && s.len() <= 64
}

/// Parse a `REGEX=TYPE` override (command line).
pub fn parse_override(spec: &str) -> Result<Override> {
    let (pat, ty) = spec
        .rsplit_once('=')
        .ok_or_else(|| ConvertError::Override {
            spec: spec.to_string(),
            msg: "no `=`".into(),
        })?;
    make_override(spec, pat, ty)
}

fn make_override(spec: &str, pat: &str, ty: &str) -> Result<Override> {
    let pattern = Regex::new(pat).map_err(|e| ConvertError::Override {
        spec: spec.to_string(),
        msg: format!("invalid regex: {e}"),
    })?;
    let ty = parse_tensor_type(ty).map_err(|e| ConvertError::Override {
        spec: spec.to_string(),
        msg: e.to_string(),
    })?;
    Ok(Override { pattern, ty })
}

impl Recipe {
    pub fn load(path: &Path) -> Result<Recipe> {
        let len = std::fs::metadata(path)
            .map_err(|source| ConvertError::Read {
                path: path.to_path_buf(),
                source,
            })?
            .len();
        if len > MAX_RECIPE_BYTES {
            return Err(rerr(path, format!("is {len} bytes, above the 1 MiB limit")));
        }
        let text = std::fs::read_to_string(path).map_err(|source| ConvertError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Self::parse(path, &text)
    }

    pub fn parse(path: &Path, text: &str) -> Result<Recipe> {
        let raw: RawRecipe = serde_norway::from_str(text).map_err(|e| rerr(path, e.to_string()))?;
        if !valid_name(&raw.model) {
            return Err(rerr(
                path,
                format!("`model` `{}` must be lower-case letters, digits, `.`, `_` or `-` (it names a folder)", raw.model),
            ));
        }
        semver::Version::parse(&raw.version).map_err(|e| {
            rerr(
                path,
                format!(
                    "`version` `{}` is not a semantic version ({e})\n  hint: write e.g. 1.0.0",
                    raw.version
                ),
            )
        })?;
        if raw.tiers.0.is_empty() {
            return Err(rerr(path, "`tiers` is empty".to_string()));
        }
        let mut tiers = Vec::new();
        for (name, t) in raw.tiers.0 {
            if !valid_name(&name) {
                return Err(rerr(
                    path,
                    format!("tier name `{name}` must be lower-case letters, digits, `.`, `_` or `-` (it names a file)"),
                ));
            }
            let ftype = Ftype::parse(&t.ty).ok_or_else(|| {
                rerr(
                    path,
                    format!(
                        "tier `{name}`: unknown type `{}`\n  hint: use one of {}",
                        t.ty,
                        Ftype::names()
                    ),
                )
            })?;
            let mut overrides = Vec::new();
            for o in &t.overrides {
                let spec = format!("{}={}", o.pattern, o.ty);
                overrides.push(
                    make_override(&spec, &o.pattern, &o.ty)
                        .map_err(|e| rerr(path, format!("tier `{name}`: {e}")))?,
                );
            }
            let requires = match t.requires {
                None => Requires::default(),
                Some(r) => {
                    for f in &r.cpu_features {
                        if !CPU_FEATURES.contains(&f.as_str()) {
                            return Err(rerr(
                                path,
                                format!("tier `{name}`: unknown cpu feature `{f}`\n  hint: use one of {}", CPU_FEATURES.join(", ")),
                            ));
                        }
                    }
                    for a in &r.arch {
                        if !ARCHES.contains(&a.as_str()) {
                            return Err(rerr(
                                path,
                                format!(
                                    "tier `{name}`: unknown arch `{a}`\n  hint: use one of {}",
                                    ARCHES.join(", ")
                                ),
                            ));
                        }
                    }
                    Requires {
                        min_ram_bytes: r.min_ram.map_or(0, |s| s.0),
                        cpu_features: r.cpu_features,
                        arch: r.arch,
                    }
                }
            };
            if t.max_bytes == Some(Size(0)) {
                return Err(rerr(path, format!("tier `{name}`: `max_bytes` is 0")));
            }
            tiers.push(Tier {
                name,
                ftype,
                pure: t.pure,
                overrides,
                max_bytes: t.max_bytes.map(|s| s.0),
                requires,
            });
        }
        Ok(Recipe {
            path: path.to_path_buf(),
            model: raw.model,
            version: raw.version,
            name: raw.name,
            source: raw.source,
            notes: raw.notes,
            tiers,
        })
    }

    pub fn tier(&self, name: &str) -> Result<&Tier> {
        self.tiers
            .iter()
            .find(|t| t.name == name)
            .ok_or_else(|| ConvertError::UnknownTier {
                name: name.to_string(),
                known: self
                    .tiers
                    .iter()
                    .map(|t| format!("`{}`", t.name))
                    .collect::<Vec<_>>()
                    .join(", "),
            })
    }
}

fn rerr(path: &Path, msg: String) -> ConvertError {
    ConvertError::Recipe {
        path: path.to_path_buf(),
        msg,
    }
}

/// `build.json`: what a recipe build produced, for `slmpack sign`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct BuildJson {
    pub schema: u32,
    pub model: String,
    pub version: String,
    pub tiers: Vec<BuildTier>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct BuildTier {
    pub name: String,
    pub file: String,
    pub mix: String,
    pub bits_per_weight: f64,
    pub size: u64,
    pub requires: Requires,
}

impl BuildJson {
    /// Write atomically (temp file in the folder, then rename).
    pub fn write(&self, path: &Path) -> Result<()> {
        let dir = path.parent().unwrap_or(Path::new("."));
        let werr = |source: std::io::Error| ConvertError::Write {
            path: path.to_path_buf(),
            source,
        };
        let mut tmp = tempfile::Builder::new()
            .prefix(".slmpack-")
            .suffix(".tmp")
            .tempfile_in(dir)
            .map_err(werr)?;
        let text = serde_json::to_string_pretty(self).expect("serializable") + "\n";
        std::io::Write::write_all(&mut tmp, text.as_bytes()).map_err(werr)?;
        tmp.as_file().sync_all().map_err(werr)?;
        tmp.persist(path).map_err(|e| werr(e.error))?;
        crate::pipeline::readable(path);
        Ok(())
    }

    pub fn read(path: &Path) -> Option<BuildJson> {
        let text = std::fs::read_to_string(path).ok()?;
        serde_json::from_str(&text).ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
model: smollm2-135m
version: 1.0.0
name: SmolLM2 135M Instruct
tiers:
  low:
    type: q4_k_m
    overrides:
      - pattern: '^token_embd\.weight$'
        type: q8_0
    max_bytes: 100MB
    requires:
      min_ram: 256MiB
      cpu_features: [avx2]
      arch: [x86_64, aarch64]
  medium:
    type: Q8_0
  high:
    type: f16
"#;

    fn p(s: &str) -> Result<Recipe> {
        Recipe::parse(Path::new("r.yaml"), s)
    }

    #[test]
    fn parses_tiers_in_order() {
        let r = p(GOOD).unwrap();
        let names: Vec<&str> = r.tiers.iter().map(|t| t.name.as_str()).collect();
        assert_eq!(names, ["low", "medium", "high"]);
        let low = &r.tiers[0];
        assert_eq!(low.ftype, Ftype::Q4_K_M);
        assert_eq!(low.max_bytes, Some(100_000_000));
        assert_eq!(low.requires.min_ram_bytes, 256 << 20);
        assert_eq!(low.overrides.len(), 1);
        assert_eq!(r.tiers[1].ftype, Ftype::Q8_0);
        assert_eq!(r.tiers[2].max_bytes, None);
        assert!(r.tier("medium").is_ok());
        assert!(r
            .tier("ultra")
            .unwrap_err()
            .to_string()
            .contains("unknown tier `ultra`"));
    }

    #[test]
    fn sizes() {
        assert_eq!(parse_size("100MB"), Ok(100_000_000));
        assert_eq!(parse_size("96MiB"), Ok(96 << 20));
        assert_eq!(parse_size("1.5GB"), Ok(1_500_000_000));
        assert_eq!(parse_size("123"), Ok(123));
        assert_eq!(parse_size("2 kib"), Ok(2048));
        assert!(parse_size("12XB").is_err());
        assert!(parse_size("MB").is_err());
        assert!(parse_size("1.2.3MB").is_err());
        assert!(parse_size("99999999999999999999TB").is_err());
    }

    #[test]
    fn typos_and_bad_values_are_errors() {
        let cases = [
            (
                GOOD.replace("max_bytes", "max_byte"),
                "unknown field `max_byte`",
            ),
            (
                GOOD.replace("model: smollm2", "modle: smollm2"),
                "unknown field `modle`",
            ),
            (GOOD.replace("type: f16", "type: f17"), "unknown type `f17`"),
            (
                GOOD.replace("[avx2]", "[avx3]"),
                "unknown cpu feature `avx3`",
            ),
            (
                GOOD.replace("x86_64, aarch64", "x86-64"),
                "unknown arch `x86-64`",
            ),
            (GOOD.replace("1.0.0", "1.0"), "not a semantic version"),
            (GOOD.replace("100MB", "100XB"), "unknown unit"),
            (GOOD.replace("type: q8_0", "type: q9_0"), "q9_0"),
            (
                GOOD.replace("min_ram: 256MiB", "min_ram: 256MiB\n      gpu: yes"),
                "unknown field `gpu`",
            ),
            (GOOD.replace("  medium:", "  Medium:"), "tier name `Medium`"),
            (
                GOOD.replace("'^token_embd\\.weight$'", "'(['"),
                "invalid regex",
            ),
        ];
        for (text, want) in cases {
            let e = p(&text).unwrap_err().to_string();
            assert!(e.contains(want), "{want:?} not in {e:?}");
        }
    }

    #[test]
    fn cli_overrides() {
        let o = parse_override("attn_v=q8_0").unwrap();
        assert!(o.pattern.is_match("blk.0.attn_v.weight"));
        assert!(parse_override("attn_v").is_err());
        assert!(parse_override("attn_v=q9_9").is_err());
        // the regex may itself contain '='
        let o = parse_override("a=b=f16").unwrap();
        assert!(o.pattern.is_match("a=b"));
    }
}
