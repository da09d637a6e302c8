//! Typed errors of the bench crate.

use std::path::PathBuf;

pub type Result<T, E = BenchError> = std::result::Result<T, E>;

/// A boxed error from a model runtime behind [`crate::runner::Runner`].
pub type RunnerError = Box<dyn std::error::Error + Send + Sync + 'static>;

#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    // The cause is part of the message (not a `source`), so error chains print it once.
    #[error("`{path}`: {error}")]
    Io {
        path: PathBuf,
        error: std::io::Error,
    },
    #[error("`{path}`: {msg}")]
    Scenario { path: PathBuf, msg: String },
    #[error("`{path}` line {line}: {msg}")]
    Data {
        path: PathBuf,
        line: usize,
        msg: String,
    },
    #[error("`{path}`: {msg}")]
    Report { path: PathBuf, msg: String },
    #[error("`{path}`: {msg}")]
    Profile { path: PathBuf, msg: String },
    #[error("workload `{workload}` on tier `{tier}`: {msg}")]
    Workload {
        tier: String,
        workload: String,
        msg: String,
    },
    #[error("model `{path}`: {error}")]
    Runner { path: PathBuf, error: RunnerError },
    #[error("plot `{path}`: {msg}")]
    Plot { path: PathBuf, msg: String },
    #[error("{0}")]
    Invalid(String),
}

impl BenchError {
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        BenchError::Io {
            path: path.into(),
            error: source,
        }
    }
}
