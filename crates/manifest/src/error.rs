//! Typed errors. Verification failures each have their own [`VerifyError`] variant so callers (and
//! tests) can tell them apart; the text names the check and the file.

use std::path::PathBuf;

/// Reading, writing or parsing keys.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("`{path}`: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("`{path}` is larger than a key file can be ({size} bytes)")]
    TooLarge { path: PathBuf, size: u64 },
    #[error("`{path}` is a public key, not a secret key\n  hint: pass the `.key` file written by `slmpack keygen`")]
    PublicGivenAsSecret { path: PathBuf },
    #[error("`{path}` is a secret key, not a public key\n  hint: pass the `.pub` file written by `slmpack keygen`; never ship the secret key to devices")]
    SecretGivenAsPublic { path: PathBuf },
    #[error("`{path}`: not an slmpack public key: {reason}\n  hint: a public key file is one line `slmpack-ed25519 <64 lowercase hex digits>`")]
    MalformedPublic { path: PathBuf, reason: String },
    #[error("`{path}`: not a PKCS#8 Ed25519 secret key: {reason}")]
    MalformedSecret { path: PathBuf, reason: String },
    #[error("`{path}` is passphrase-protected\n  hint: put the passphrase in an environment variable and pass `--passphrase-env VAR`")]
    NeedPassphrase { path: PathBuf },
    #[error("`{path}`: wrong passphrase, or the encrypted key is corrupted")]
    WrongPassphrase { path: PathBuf },
    #[error(
        "`{path}` can be read by other users (mode {mode:03o})\n  hint: run `chmod 600 {path}`"
    )]
    Permissions { path: PathBuf, mode: u32 },
    #[error("`{path}` already exists\n  hint: pass `--force` to overwrite it, or choose another `--out`")]
    Exists { path: PathBuf },
    #[error("could not encrypt or encode the secret key: {0}")]
    Encode(String),
    #[error("could not read random bytes from the operating system: {0}")]
    Random(String),
}

/// Errors from signing, building manifests and other publisher-side work.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("`{path}`: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("`{path}` is missing\n  hint: {hint}")]
    Missing { path: PathBuf, hint: String },
    #[error("`{path}` is {size} bytes, more than the {cap}-byte limit")]
    TooLarge { path: PathBuf, size: u64, cap: u64 },
    #[error("`{path}`: {reason}")]
    Invalid { path: PathBuf, reason: String },
    #[error(transparent)]
    Key(#[from] KeyError),
    #[error(transparent)]
    Verify(#[from] VerifyError),
}

/// Why a release failed verification. Every variant means "do not install this".
#[derive(Debug, thiserror::Error)]
pub enum VerifyError {
    #[error("`{path}` is missing\n  hint: a signed release folder holds `manifest.json` and `manifest.sig`; run `slmpack sign` on the publisher side")]
    MissingMetadata { path: PathBuf },
    #[error("`{path}` is {size} bytes, more than the {cap}-byte limit; refused before parsing")]
    Oversized { path: PathBuf, size: u64, cap: u64 },
    #[error("`{path}` is not a regular file (symlink, folder or device); refused")]
    NotRegular { path: PathBuf },
    #[error("`{path}`: malformed signature file: {reason}")]
    MalformedSignatures { path: PathBuf, reason: String },
    #[error("`{path}`: no signature by a trusted key; signed only by unknown key(s) {keyids}\n  hint: pass the publisher's public key with `--pubkey`, or ship a rotation statement")]
    UnknownKey { path: PathBuf, keyids: String },
    #[error("`{path}`: signature by trusted key `{keyid}` does not match the manifest bytes\n  hint: the manifest was edited after signing (any byte, whitespace included)")]
    BadSignature { path: PathBuf, keyid: String },
    #[error("`{path}`: {have} distinct trusted signature(s), {need} required (threshold)\n  hint: co-sign with `slmpack sign --append --key OTHER.key`; several signatures by one key count once")]
    BelowThreshold {
        path: PathBuf,
        have: usize,
        need: usize,
    },
    #[error("`{path}`: invalid key-rotation statement: {reason}")]
    BadRotation { path: PathBuf, reason: String },
    #[error("`{path}`: signed manifest is malformed: {reason}")]
    MalformedManifest { path: PathBuf, reason: String },
    #[error("`{path}`: manifest lists path `{entry}`, which {reason}; refused")]
    UnsafePath {
        path: PathBuf,
        entry: String,
        reason: &'static str,
    },
    #[error("`{path}`: manifest is for model `{found}`, expected `{expected}`")]
    WrongModel {
        path: PathBuf,
        expected: String,
        found: String,
    },
    #[error("`{path}`: manifest expired at {expires} (now {now})\n  hint: the publisher must re-sign the release (freeze protection)")]
    Expired {
        path: PathBuf,
        expires: String,
        now: String,
    },
    #[error("`{path}`: release counter {counter} of `{model}` is lower than {recorded}, recorded in the device state (rollback)\n  hint: this device already ran a newer release; an older one is refused")]
    Rollback {
        path: PathBuf,
        model: String,
        counter: u64,
        recorded: u64,
    },
    #[error("`{path}`: {reason}; refused")]
    TooMany { path: PathBuf, reason: String },
    #[error("`{path}` is a symlink; releases must hold regular files only")]
    Symlink { path: PathBuf },
    #[error("`{path}` is not listed in the signed manifest (extra file)")]
    ExtraFile { path: PathBuf },
    #[error("`{path}` is listed in the signed manifest but missing")]
    MissingFile { path: PathBuf },
    #[error(
        "`{path}`: size {actual} bytes, the signed manifest says {expected} (truncated or grown)"
    )]
    SizeMismatch {
        path: PathBuf,
        expected: u64,
        actual: u64,
    },
    #[error(
        "`{path}`: sha-256 does not match the signed manifest (modified, swapped or replaced)"
    )]
    HashMismatch { path: PathBuf },
    #[error("`{path}`: malformed device state: {reason}\n  hint: the state file is written only by `slmpack verify --state`; restore it from backup")]
    MalformedState { path: PathBuf, reason: String },
    #[error("`{path}`: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

impl VerifyError {
    /// A stable, machine-readable name of the failed check (for `--json` output).
    pub fn check(&self) -> &'static str {
        match self {
            VerifyError::MissingMetadata { .. } => "missing_metadata",
            VerifyError::Oversized { .. } => "oversized",
            VerifyError::NotRegular { .. } => "not_regular",
            VerifyError::MalformedSignatures { .. } => "malformed_signatures",
            VerifyError::UnknownKey { .. } => "unknown_key",
            VerifyError::BadSignature { .. } => "bad_signature",
            VerifyError::BelowThreshold { .. } => "below_threshold",
            VerifyError::BadRotation { .. } => "bad_rotation",
            VerifyError::MalformedManifest { .. } => "malformed_manifest",
            VerifyError::UnsafePath { .. } => "unsafe_path",
            VerifyError::WrongModel { .. } => "wrong_model",
            VerifyError::Expired { .. } => "expired",
            VerifyError::Rollback { .. } => "rollback",
            VerifyError::TooMany { .. } => "too_many",
            VerifyError::Symlink { .. } => "symlink",
            VerifyError::ExtraFile { .. } => "extra_file",
            VerifyError::MissingFile { .. } => "missing_file",
            VerifyError::SizeMismatch { .. } => "size_mismatch",
            VerifyError::HashMismatch { .. } => "hash_mismatch",
            VerifyError::MalformedState { .. } => "malformed_state",
            VerifyError::Io { .. } => "io",
        }
    }
}
