//! Release manifests: signing, verification and device-side tier selection.
//!
//! A release folder (`dist/<model>/<version>/`) holds the tier files and `build.json` written by
//! `slmpack quantize`. [`sign::sign_release`] hashes every file and writes `manifest.json` (the
//! signed bytes) and `manifest.sig` (one or more Ed25519 signatures, plus key-rotation statements).
//! [`verify::verify_release`] is the device side: it fails closed, each failure a distinct
//! [`VerifyError`] variant. [`device`] detects what this machine can run and [`select`] picks the
//! best tier it meets. The threat model is in `docs/security.md`.

pub mod build;
pub mod device;
mod error;
mod fsutil;
pub mod hash;
pub mod keys;
pub mod manifest;
pub mod rotation;
pub mod select;
pub mod sigfile;
pub mod sign;
pub mod state;
pub mod verify;

#[cfg(any(test, feature = "fuzzing"))]
pub mod fuzzing;

#[cfg(test)]
mod tests;

pub use error::{Error, KeyError, VerifyError};
pub use fsutil::write_atomic;

/// The signed manifest inside a release folder.
pub const MANIFEST_FILE: &str = "manifest.json";
/// The signatures (and rotation statements) over `manifest.json`.
pub const SIG_FILE: &str = "manifest.sig";
/// The build description written by `slmpack quantize`.
pub const BUILD_FILE: &str = "build.json";

/// `manifest.json` larger than this is refused before it is read.
pub const MAX_MANIFEST_BYTES: u64 = 1 << 20;
/// `manifest.sig` larger than this is refused before it is read.
pub const MAX_SIG_BYTES: u64 = 64 << 10;
/// `build.json`, device state and device profiles larger than this are refused before reading.
pub const MAX_SMALL_FILE_BYTES: u64 = 1 << 20;
/// Most files a release may hold (tiers and other files together).
pub const MAX_FILES: usize = 4096;
/// Most tiers a release may hold.
pub const MAX_TIERS: usize = 64;
/// Most signatures a signature file may hold.
pub const MAX_SIGNATURES: usize = 32;
/// Most rotation statements a signature file may hold.
pub const MAX_ROTATIONS: usize = 16;
/// Deepest folder nesting inside a release.
pub const MAX_DEPTH: usize = 16;

/// Domain separation: a manifest signature is over this prefix followed by the exact bytes.
pub const MANIFEST_SIG_CONTEXT: &[u8] = b"slmpack-manifest-v1\n";
/// Domain separation for key-rotation statements.
pub const ROTATION_SIG_CONTEXT: &[u8] = b"slmpack-rotation-v1\n";

/// Lowercase hex of a SHA-256 digest.
pub type Sha256Hex = String;

/// Decode exactly `N` bytes of lowercase hex; anything else (uppercase, wrong length) is refused so
/// every value has one spelling.
pub(crate) fn decode_hex<const N: usize>(s: &str) -> Option<[u8; N]> {
    if s.len() != 2 * N
        || !s
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    {
        return None;
    }
    let mut out = [0u8; N];
    hex::decode_to_slice(s, &mut out).ok()?;
    Some(out)
}
