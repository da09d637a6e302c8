//! `slmpack-bench`: scenario benchmarks of GGUF tiers — speed, memory, accuracy and energy in
//! one report, with exporters, plots and a regression gate for CI.
//!
//! The pieces sit behind small traits so the harness is testable without real timing:
//! [`runner::Runner`] (the model runtime; [`runner::ScriptedRunner`] for tests),
//! [`runner::Clock`], [`energy::EnergyMeter`] (RAPL or a device-profile estimate),
//! [`machine::MemoryProbe`], [`harness::Progress`] and [`export::Exporter`].

pub mod compare;
pub mod energy;
pub mod error;
pub mod export;
pub mod harness;
pub mod machine;
pub mod plot;
pub mod report;
pub mod runner;
pub mod scenario;
pub mod stats;

#[cfg(test)]
mod tests;

pub use error::{BenchError, Result};
pub use harness::{Bench, NoProgress, Progress, TierSpec};
pub use report::Report;
pub use scenario::Scenario;

use std::io::Read;
use std::path::Path;

/// Read a UTF-8 file of at most `cap` bytes.
pub fn read_capped_string(path: &Path, cap: u64) -> Result<String> {
    let f = std::fs::File::open(path).map_err(|e| BenchError::io(path, e))?;
    let len = f.metadata().map_err(|e| BenchError::io(path, e))?.len();
    if len > cap {
        return Err(BenchError::Invalid(format!(
            "`{}`: {len} bytes is more than the {cap}-byte limit",
            path.display()
        )));
    }
    let mut s = String::new();
    f.take(cap)
        .read_to_string(&mut s)
        .map_err(|e| BenchError::io(path, e))?;
    Ok(s)
}

/// Write `bytes` to `path` atomically (temporary file in the same folder, then rename).
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = dir.join(format!(".{name}.tmp{}", std::process::id()));
    std::fs::write(&tmp, bytes).map_err(|e| BenchError::io(&tmp, e))?;
    std::fs::rename(&tmp, path).map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        BenchError::io(path, e)
    })
}
