//! Exit codes and error printing, in one place.
//!
//! | code | meaning |
//! |------|---------|
//! | 0    | success |
//! | 1    | any other error (bad input, I/O) |
//! | 2    | usage error (clap) |
//! | 3    | verification failed (tampered, unsigned, expired, rolled back) |
//! | 4    | a requirement could not be met (byte budget, no tier fits this device) |

use std::process::ExitCode;

/// An error that carries its own exit code; wrap library errors with it where the code matters.
#[derive(Debug)]
pub struct Coded {
    pub code: u8,
    pub error: anyhow::Error,
}

impl std::fmt::Display for Coded {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.error)
    }
}

impl std::error::Error for Coded {
    // The wrapped error is the next link of the chain; `report` skips the `Coded` link itself,
    // so returning `self.error.source()` here would drop the wrapped error's own message.
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(self.error.as_ref())
    }
}

#[allow(dead_code)]
pub const VERIFY_FAILED: u8 = 3;
#[allow(dead_code)]
pub const UNMET: u8 = 4;

/// Attach an exit code to an error.
#[allow(dead_code)]
pub fn coded(code: u8, error: impl Into<anyhow::Error>) -> anyhow::Error {
    anyhow::Error::new(Coded {
        code,
        error: error.into(),
    })
}

/// Print `error: ...` once, then each cause on its own line, then return the exit code.
pub fn report(err: &anyhow::Error) -> ExitCode {
    let code = err
        .chain()
        .find_map(|e| e.downcast_ref::<Coded>().map(|c| c.code))
        .unwrap_or(1);
    let mut msg = String::new();
    let mut last = String::new();
    for (i, cause) in err.chain().enumerate() {
        if cause.downcast_ref::<Coded>().is_some() {
            continue;
        }
        let text = cause.to_string();
        if text == last {
            continue;
        }
        if i == 0 || msg.is_empty() {
            msg.push_str(&format!("error: {text}"));
        } else {
            msg.push_str(&format!("\n  caused by: {text}"));
        }
        last = text;
    }
    eprintln!("{msg}");
    ExitCode::from(code)
}
