//! What this device can run: architecture, cores, RAM (total and available, capped by cgroup v1
//! and v2 memory limits) and CPU features. A [`DeviceProfile`] can also be read from YAML, so a
//! profile saved with `slmpack device` can be edited and used on another machine.

use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::{Error, MAX_SMALL_FILE_BYTES};

/// CPU feature names slmpack knows, lowercase, as `build.json` writes them.
pub const KNOWN_FEATURES: &[&str] = &[
    "sse4.2",
    "avx",
    "avx2",
    "fma",
    "f16c",
    "avx512f",
    "avx512bw",
    "avx512vnni",
    "avxvnni",
    "neon",
    "dotprod",
    "i8mm",
    "fp16",
];

/// A device's capabilities.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeviceProfile {
    /// `x86_64`, `aarch64`, ... (Rust's `std::env::consts::ARCH` names).
    pub arch: String,
    pub cores: u32,
    /// Physical RAM, capped by the cgroup memory limit.
    pub ram_total_bytes: u64,
    /// RAM this process can get now: `MemAvailable`, capped by the cgroup's remaining headroom.
    pub ram_available_bytes: u64,
    /// Sorted, lowercase.
    pub cpu_features: Vec<String>,
}

impl DeviceProfile {
    /// Detect this machine.
    pub fn detect() -> Self {
        let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
        let (total, available) = parse_meminfo(&meminfo);
        let cg = cgroup_memory(Path::new("/"));
        let (ram_total_bytes, ram_available_bytes) = apply_cgroup(total, available, cg);
        let mut cpu_features: Vec<String> =
            detect_features().into_iter().map(String::from).collect();
        cpu_features.sort();
        DeviceProfile {
            arch: std::env::consts::ARCH.to_string(),
            cores: std::thread::available_parallelism().map_or(1, |n| n.get() as u32),
            ram_total_bytes,
            ram_available_bytes,
            cpu_features,
        }
    }

    /// YAML text.
    pub fn to_yaml(&self) -> String {
        serde_norway::to_string(self).expect("profile serializes")
    }

    /// Parse YAML (unknown keys are errors).
    pub fn from_yaml(text: &str) -> Result<Self, String> {
        if text.len() as u64 > MAX_SMALL_FILE_BYTES {
            return Err("profile is too large".into());
        }
        let mut p: DeviceProfile = serde_norway::from_str(text).map_err(|e| e.to_string())?;
        if p.cpu_features.len() > 256 {
            return Err("more than 256 cpu features".into());
        }
        for f in &mut p.cpu_features {
            *f = f.to_ascii_lowercase();
        }
        p.cpu_features.sort();
        p.cpu_features.dedup();
        if p.ram_available_bytes > p.ram_total_bytes {
            return Err("ram_available_bytes is larger than ram_total_bytes".into());
        }
        Ok(p)
    }

    /// Read a profile file.
    pub fn load(path: &Path) -> Result<Self, Error> {
        let bytes =
            crate::fsutil::read_capped(path, MAX_SMALL_FILE_BYTES).map_err(|e| match e {
                crate::VerifyError::MissingMetadata { path } => Error::Missing {
                    path,
                    hint: "save one with `slmpack device > profile.yaml`".into(),
                },
                other => Error::Verify(other),
            })?;
        let text = String::from_utf8(bytes).map_err(|_| Error::Invalid {
            path: path.to_path_buf(),
            reason: "not UTF-8 text".into(),
        })?;
        Self::from_yaml(&text).map_err(|reason| Error::Invalid {
            path: path.to_path_buf(),
            reason: format!("{reason}\n  hint: fields: arch, cores, ram_total_bytes, ram_available_bytes, cpu_features"),
        })
    }
}

/// `MemTotal` and `MemAvailable` in bytes from `/proc/meminfo` text.
pub fn parse_meminfo(text: &str) -> (Option<u64>, Option<u64>) {
    let field = |name: &str| {
        text.lines().find_map(|l| {
            let rest = l.strip_prefix(name)?.strip_prefix(':')?;
            let mut it = rest.split_whitespace();
            let n: u64 = it.next()?.parse().ok()?;
            match it.next() {
                Some("kB") => n.checked_mul(1024),
                None => Some(n),
                _ => None,
            }
        })
    };
    (field("MemTotal"), field("MemAvailable"))
}

/// A cgroup memory limit and current usage, in bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CgroupMemory {
    pub limit: u64,
    pub usage: Option<u64>,
}

fn read_u64(p: &Path) -> Option<u64> {
    std::fs::read_to_string(p).ok()?.trim().parse().ok()
}

/// This process's cgroup memory limit, if any. `root` is the file-system root (tests pass a
/// fake tree). cgroup v2: `memory.max` of the process's cgroup ("max" means none); v1:
/// `memory.limit_in_bytes` (values near `u64::MAX` mean none).
pub fn cgroup_memory(root: &Path) -> Option<CgroupMemory> {
    let cgroup = std::fs::read_to_string(root.join("proc/self/cgroup")).unwrap_or_default();
    for line in cgroup.lines() {
        let mut parts = line.splitn(3, ':');
        let (_, controllers, path) = (parts.next()?, parts.next()?, parts.next()?);
        let rel = path.trim_start_matches('/');
        if controllers.is_empty() {
            // v2 unified hierarchy.
            let dir = root.join("sys/fs/cgroup").join(rel);
            let max = std::fs::read_to_string(dir.join("memory.max")).ok();
            if let Some(limit) = max
                .as_deref()
                .map(str::trim)
                .and_then(|s| s.parse::<u64>().ok())
            {
                return Some(CgroupMemory {
                    limit,
                    usage: read_u64(&dir.join("memory.current")),
                });
            }
        } else if controllers.split(',').any(|c| c == "memory") {
            for dir in [
                root.join("sys/fs/cgroup/memory").join(rel),
                root.join("sys/fs/cgroup/memory"),
            ] {
                if let Some(limit) = read_u64(&dir.join("memory.limit_in_bytes")) {
                    if limit >= 1 << 60 {
                        return None;
                    }
                    return Some(CgroupMemory {
                        limit,
                        usage: read_u64(&dir.join("memory.usage_in_bytes")),
                    });
                }
            }
        }
    }
    None
}

/// Combine `/proc/meminfo` with a cgroup limit: (total, available).
pub fn apply_cgroup(
    total: Option<u64>,
    available: Option<u64>,
    cg: Option<CgroupMemory>,
) -> (u64, u64) {
    let mut total = total.unwrap_or(0);
    let mut available = available.unwrap_or(total);
    if let Some(cg) = cg {
        if total == 0 || cg.limit < total {
            total = cg.limit;
        }
        let headroom = cg.limit.saturating_sub(cg.usage.unwrap_or(0));
        available = available.min(headroom);
    }
    (total, available.min(total))
}

/// CPU features of this machine among [`KNOWN_FEATURES`].
#[allow(unused_mut)]
pub fn detect_features() -> Vec<&'static str> {
    let mut out = Vec::new();
    #[cfg(target_arch = "x86_64")]
    {
        macro_rules! x86 {
            ($($name:tt),*) => {$(
                if std::arch::is_x86_feature_detected!($name) { out.push($name); }
            )*};
        }
        x86!(
            "sse4.2",
            "avx",
            "avx2",
            "fma",
            "f16c",
            "avx512f",
            "avx512bw",
            "avx512vnni",
            "avxvnni"
        );
    }
    #[cfg(target_arch = "aarch64")]
    {
        macro_rules! arm {
            ($($name:tt),*) => {$(
                if std::arch::is_aarch64_feature_detected!($name) { out.push($name); }
            )*};
        }
        arm!("neon", "dotprod", "i8mm", "fp16");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn meminfo() {
        let t = "MemTotal:       24576000 kB\nMemFree:  100 kB\nMemAvailable:   12288000 kB\n";
        assert_eq!(
            parse_meminfo(t),
            (Some(24576000 * 1024), Some(12288000 * 1024))
        );
        assert_eq!(parse_meminfo("garbage"), (None, None));
    }

    fn fake_root(cgroup: &str, files: &[(&str, &str)]) -> tempfile::TempDir {
        let d = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(d.path().join("proc/self")).unwrap();
        std::fs::write(d.path().join("proc/self/cgroup"), cgroup).unwrap();
        for (p, c) in files {
            let p = d.path().join(p);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(p, c).unwrap();
        }
        d
    }

    #[test]
    fn cgroup_v2_and_v1() {
        let d = fake_root(
            "0::/user.slice/app\n",
            &[
                ("sys/fs/cgroup/user.slice/app/memory.max", "536870912\n"),
                ("sys/fs/cgroup/user.slice/app/memory.current", "136870912\n"),
            ],
        );
        let cg = cgroup_memory(d.path()).unwrap();
        assert_eq!(cg.limit, 536870912);
        assert_eq!(
            apply_cgroup(Some(8 << 30), Some(4 << 30), Some(cg)),
            (536870912, 400000000)
        );
        let d = fake_root("0::/\n", &[("sys/fs/cgroup/memory.max", "max\n")]);
        assert_eq!(cgroup_memory(d.path()), None);
        let d = fake_root(
            "12:memory:/docker/abc\n3:cpu,cpuacct:/docker/abc\n",
            &[
                (
                    "sys/fs/cgroup/memory/docker/abc/memory.limit_in_bytes",
                    "1073741824\n",
                ),
                (
                    "sys/fs/cgroup/memory/docker/abc/memory.usage_in_bytes",
                    "73741824\n",
                ),
            ],
        );
        assert_eq!(
            cgroup_memory(d.path()),
            Some(CgroupMemory {
                limit: 1 << 30,
                usage: Some(73741824)
            })
        );
        let d = fake_root(
            "12:memory:/\n",
            &[(
                "sys/fs/cgroup/memory/memory.limit_in_bytes",
                "9223372036854771712\n",
            )],
        );
        assert_eq!(cgroup_memory(d.path()), None);
    }

    #[test]
    fn detect_and_yaml_round_trip() {
        let p = DeviceProfile::detect();
        assert_eq!(p.arch, std::env::consts::ARCH);
        assert!(p.cores >= 1);
        assert!(p.ram_available_bytes <= p.ram_total_bytes);
        assert_eq!(DeviceProfile::from_yaml(&p.to_yaml()).unwrap(), p);
        assert!(DeviceProfile::from_yaml("arch: x86_64\ncores: 1\n").is_err());
        assert!(DeviceProfile::from_yaml(&format!("{}extra: 1\n", p.to_yaml())).is_err());
    }
}
