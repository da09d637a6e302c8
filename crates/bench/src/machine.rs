//! The machine a report was measured on, and memory probes.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Machine {
    pub cpu: String,
    pub cores_available: usize,
    pub threads_used: usize,
    /// Instruction set the kernels chose (from the runtime).
    pub isa: String,
    pub os: String,
    pub arch: String,
    pub slmpack_version: String,
    pub git_commit: String,
}

/// The git commit this crate was built from (`unknown` outside a git checkout).
pub const GIT_COMMIT: &str = env!("SLMPACK_GIT_COMMIT");

fn cpu_model() -> String {
    let info = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    for key in ["model name", "Hardware", "Model", "cpu model"] {
        if let Some(v) = info
            .lines()
            .find(|l| l.split(':').next().is_some_and(|k| k.trim() == key))
            .and_then(|l| l.split_once(':'))
        {
            return v.1.trim().to_string();
        }
    }
    "unknown".into()
}

fn os_name() -> String {
    let pretty = std::fs::read_to_string("/etc/os-release")
        .ok()
        .and_then(|t| {
            t.lines().find_map(|l| {
                l.strip_prefix("PRETTY_NAME=")
                    .map(|v| v.trim_matches('"').to_string())
            })
        });
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| s.trim().to_string())
        .ok();
    match (pretty, kernel) {
        (Some(p), Some(k)) => format!("{p} (Linux {k})"),
        (Some(p), None) => p,
        (None, Some(k)) => format!("Linux {k}"),
        (None, None) => std::env::consts::OS.to_string(),
    }
}

impl Machine {
    pub fn detect(slmpack_version: &str, threads_used: usize, isa: &str) -> Machine {
        Machine {
            cpu: cpu_model(),
            cores_available: std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(1),
            threads_used,
            isa: isa.into(),
            os: os_name(),
            arch: std::env::consts::ARCH.into(),
            slmpack_version: slmpack_version.into(),
            git_commit: GIT_COMMIT.into(),
        }
    }
}

/// Peak resident memory of this process.
pub trait MemoryProbe {
    /// Start a new peak measurement; `false` when the peak cannot be reset (then the peak is
    /// since the process started).
    fn reset_peak(&self) -> bool;
    /// Peak resident set size in bytes, when known.
    fn peak_rss(&self) -> Option<u64>;
}

/// Linux: `VmHWM` of `/proc/self/status`, reset by writing `5` to `/proc/self/clear_refs`.
pub struct ProcMemory;

/// Parse `VmHWM:  1234 kB` from `/proc/<pid>/status` text.
pub fn parse_vmhwm(status: &str) -> Option<u64> {
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: u64 = line["VmHWM:".len()..]
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()?;
    Some(kb * 1024)
}

impl MemoryProbe for ProcMemory {
    fn reset_peak(&self) -> bool {
        std::fs::write("/proc/self/clear_refs", "5").is_ok()
    }
    fn peak_rss(&self) -> Option<u64> {
        parse_vmhwm(&std::fs::read_to_string("/proc/self/status").ok()?)
    }
}

/// A probe with a fixed answer, for tests.
pub struct FixedMemory(pub Option<u64>);

impl MemoryProbe for FixedMemory {
    fn reset_peak(&self) -> bool {
        true
    }
    fn peak_rss(&self) -> Option<u64> {
        self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vmhwm_parses() {
        assert_eq!(
            parse_vmhwm("Name:\tx\nVmPeak:\t 10 kB\nVmHWM:\t    2048 kB\n"),
            Some(2048 * 1024)
        );
        assert_eq!(parse_vmhwm("VmRSS: 1 kB"), None);
        if cfg!(target_os = "linux") {
            assert!(ProcMemory.peak_rss().unwrap() > 0);
        }
    }

    #[test]
    fn machine_is_described() {
        let m = Machine::detect("0.1.0", 2, "scalar");
        assert!(m.cores_available >= 1);
        assert!(!m.cpu.is_empty() && !m.os.is_empty() && !m.git_commit.is_empty());
    }
}
