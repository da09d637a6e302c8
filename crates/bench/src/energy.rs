//! Energy: measured from RAPL/powercap counters when they are readable, otherwise estimated
//! from a device profile. Every reading says which method produced it — never a silent zero.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::{BenchError, Result};

/// Work done by a workload, for the estimate: bytes read from DRAM and multiply-accumulates.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct Work {
    pub dram_bytes: f64,
    pub int8_macs: f64,
    pub f32_macs: f64,
}

impl Work {
    pub fn add(&mut self, o: &Work) {
        self.dram_bytes += o.dram_bytes;
        self.int8_macs += o.int8_macs;
        self.f32_macs += o.f32_macs;
    }
}

/// Measures or estimates the energy of a stretch of work.
pub trait EnergyMeter {
    /// `rapl` or `estimate(<profile>)`.
    fn method(&self) -> String;
    fn begin(&mut self) -> Result<()>;
    /// Joules since `begin`; `work` is what was done meanwhile (used by estimates).
    fn end(&mut self, work: &Work) -> Result<f64>;
}

/// One powercap zone counter.
#[derive(Debug, Clone)]
struct Zone {
    energy: PathBuf,
    max_range_uj: u64,
    start: u64,
}

/// RAPL through Linux powercap: sums the top-level `intel-rapl:N` zones (packages; sub-zones
/// such as `intel-rapl:0:0` are inside them and are not added again).
#[derive(Debug, Clone)]
pub struct RaplMeter {
    zones: Vec<Zone>,
}

fn read_u64(p: &Path) -> Result<u64> {
    let s = std::fs::read_to_string(p).map_err(|e| BenchError::io(p, e))?;
    s.trim().parse().map_err(|_| BenchError::Profile {
        path: p.into(),
        msg: format!("`{}` is not a counter value", s.trim()),
    })
}

/// Microjoules between two readings of a counter that wraps at `max_range_uj`.
pub fn counter_delta(start: u64, end: u64, max_range_uj: u64) -> u64 {
    if end >= start {
        end - start
    } else {
        // One wrap: from start up to the range, then from 0 to end.
        max_range_uj.saturating_sub(start) + end
    }
}

impl RaplMeter {
    /// Open the package zones under `root` (normally `/sys/class/powercap`); `None` when there
    /// are none or their counters cannot be read (often root-only).
    pub fn open(root: &Path) -> Option<RaplMeter> {
        let mut zones = Vec::new();
        let mut names: Vec<_> = std::fs::read_dir(root)
            .ok()?
            .filter_map(|e| e.ok())
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| {
                n.strip_prefix("intel-rapl:")
                    .is_some_and(|r| !r.contains(':') && !r.is_empty())
            })
            .collect();
        names.sort();
        for n in names {
            let dir = root.join(&n);
            let energy = dir.join("energy_uj");
            let start = read_u64(&energy).ok()?;
            let max_range_uj = read_u64(&dir.join("max_energy_range_uj")).ok()?;
            zones.push(Zone {
                energy,
                max_range_uj,
                start,
            });
        }
        (!zones.is_empty()).then_some(RaplMeter { zones })
    }
}

impl EnergyMeter for RaplMeter {
    fn method(&self) -> String {
        "rapl".into()
    }
    fn begin(&mut self) -> Result<()> {
        for z in &mut self.zones {
            z.start = read_u64(&z.energy)?;
        }
        Ok(())
    }
    fn end(&mut self, _work: &Work) -> Result<f64> {
        let mut uj = 0u64;
        for z in &self.zones {
            let now = read_u64(&z.energy)?;
            uj += counter_delta(z.start, now, z.max_range_uj);
        }
        Ok(uj as f64 * 1e-6)
    }
}

/// Energy constants of a device class (benchmarks/devices/*.yaml). Each constant carries its
/// source in the file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeviceProfile {
    pub name: String,
    pub description: String,
    /// Picojoules per byte read from DRAM.
    pub dram_pj_per_byte: f64,
    /// Picojoules per 8-bit integer multiply-accumulate.
    pub int8_mac_pj: f64,
    /// Picojoules per 32-bit float multiply-accumulate.
    pub f32_mac_pj: f64,
    /// Where the constants come from.
    pub sources: Vec<String>,
}

impl DeviceProfile {
    pub fn load(path: &Path) -> Result<DeviceProfile> {
        let text = crate::read_capped_string(path, 1 << 20)?;
        let p: DeviceProfile = serde_norway::from_str(&text).map_err(|e| BenchError::Profile {
            path: path.into(),
            msg: e.to_string(),
        })?;
        let ok = |x: f64| x.is_finite() && x >= 0.0;
        if !(ok(p.dram_pj_per_byte) && ok(p.int8_mac_pj) && ok(p.f32_mac_pj)) {
            return Err(BenchError::Profile {
                path: path.into(),
                msg: "energy constants must be finite and non-negative".into(),
            });
        }
        if p.sources.is_empty() {
            return Err(BenchError::Profile {
                path: path.into(),
                msg: "no `sources`\n  hint: cite where each constant comes from".into(),
            });
        }
        Ok(p)
    }

    /// Joules for `work`.
    pub fn joules(&self, w: &Work) -> f64 {
        (w.dram_bytes * self.dram_pj_per_byte
            + w.int8_macs * self.int8_mac_pj
            + w.f32_macs * self.f32_mac_pj)
            * 1e-12
    }
}

/// Estimates energy from the work done and a device profile.
#[derive(Debug, Clone)]
pub struct EstimateMeter {
    pub profile: DeviceProfile,
}

impl EnergyMeter for EstimateMeter {
    fn method(&self) -> String {
        format!("estimate({})", self.profile.name)
    }
    fn begin(&mut self) -> Result<()> {
        Ok(())
    }
    fn end(&mut self, work: &Work) -> Result<f64> {
        Ok(self.profile.joules(work))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn zone(root: &Path, name: &str, uj: u64, max: u64) {
        let d = root.join(name);
        std::fs::create_dir_all(&d).unwrap();
        std::fs::write(d.join("energy_uj"), format!("{uj}\n")).unwrap();
        std::fs::write(d.join("max_energy_range_uj"), format!("{max}\n")).unwrap();
    }

    #[test]
    fn rapl_sums_packages_and_handles_wraparound() {
        let t = tempfile::tempdir().unwrap();
        let root = t.path();
        zone(root, "intel-rapl:0", 999_000_000, 1_000_000_000);
        zone(root, "intel-rapl:1", 10, 1_000_000_000);
        // a sub-zone: inside package 0, must not be added
        zone(root, "intel-rapl:0:0", 5, 1_000_000_000);
        let mut m = RaplMeter::open(root).unwrap();
        assert_eq!(m.method(), "rapl");
        m.begin().unwrap();
        // package 0 wraps: 999_000_000 -> 1_000_000_000 -> 2_000_000 = 3_000_000 uJ
        zone(root, "intel-rapl:0", 2_000_000, 1_000_000_000);
        zone(root, "intel-rapl:1", 1_000_010, 1_000_000_000);
        zone(root, "intel-rapl:0:0", 900_000_000, 1_000_000_000);
        let j = m.end(&Work::default()).unwrap();
        assert!((j - 4.0).abs() < 1e-9, "{j}");
    }

    #[test]
    fn rapl_absent_or_unreadable_is_none() {
        let t = tempfile::tempdir().unwrap();
        assert!(RaplMeter::open(t.path()).is_none());
        assert!(RaplMeter::open(&t.path().join("missing")).is_none());
        std::fs::create_dir_all(t.path().join("intel-rapl:0")).unwrap();
        assert!(RaplMeter::open(t.path()).is_none());
        assert_eq!(counter_delta(5, 7, 10), 2);
        assert_eq!(counter_delta(8, 3, 10), 5);
    }

    #[test]
    fn shipped_profiles_load_and_estimate() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../benchmarks/devices");
        for n in ["laptop-x86", "phone-arm", "board-arm"] {
            let p = DeviceProfile::load(&dir.join(format!("{n}.yaml"))).unwrap();
            assert_eq!(p.name, n);
            let mut m = EstimateMeter { profile: p.clone() };
            assert_eq!(m.method(), format!("estimate({n})"));
            m.begin().unwrap();
            let w = Work {
                dram_bytes: 1e6,
                int8_macs: 2e6,
                f32_macs: 3e6,
            };
            let want =
                (1e6 * p.dram_pj_per_byte + 2e6 * p.int8_mac_pj + 3e6 * p.f32_mac_pj) * 1e-12;
            assert_eq!(m.end(&w).unwrap(), want);
            assert!(want > 0.0);
        }
    }
}
