//! Ed25519 keys. Secret keys are PKCS#8 PEM files (optionally passphrase-encrypted, PBES2 with
//! scrypt and AES-256-CBC), written mode 0600 and zeroized in memory. Public keys are one line,
//! `slmpack-ed25519 <64 lowercase hex digits>`. A key id is the SHA-256 of the 32 public-key bytes.

use std::fmt;
use std::path::{Path, PathBuf};

use ed25519_dalek::pkcs8::{DecodePrivateKey, EncodePrivateKey};
use ed25519_dalek::{Signature, Signer, SigningKey, VerifyingKey};
use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

use crate::KeyError;

/// First word of a public-key line.
pub const PUBLIC_KEY_PREFIX: &str = "slmpack-ed25519";
const PEM_PLAIN: &str = "-----BEGIN PRIVATE KEY-----";
const PEM_ENCRYPTED: &str = "-----BEGIN ENCRYPTED PRIVATE KEY-----";
const MAX_KEY_FILE_BYTES: u64 = 16 << 10;

/// SHA-256 of a public key's 32 bytes.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct KeyId(pub [u8; 32]);

impl fmt::Display for KeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hex::encode(self.0))
    }
}

impl fmt::Debug for KeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "KeyId({self})")
    }
}

impl KeyId {
    /// Parse 64 lowercase hex digits.
    pub fn parse(s: &str) -> Option<Self> {
        crate::decode_hex::<32>(s).map(KeyId)
    }
    /// The first 16 hex digits, for messages.
    pub fn short(&self) -> String {
        hex::encode(&self.0[..8])
    }
}

/// A verifying key, checked on load to be a valid, non-weak curve point.
#[derive(Clone, PartialEq, Eq)]
pub struct PublicKey {
    vk: VerifyingKey,
}

impl fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PublicKey({})", self.keyid())
    }
}

impl PublicKey {
    pub fn from_bytes(bytes: &[u8; 32]) -> Result<Self, String> {
        let vk = VerifyingKey::from_bytes(bytes)
            .map_err(|_| "the 32 bytes are not a valid ed25519 point".to_string())?;
        if vk.is_weak() {
            return Err("the key is a small-order (weak) point".into());
        }
        Ok(PublicKey { vk })
    }

    pub fn as_bytes(&self) -> &[u8; 32] {
        self.vk.as_bytes()
    }

    pub fn keyid(&self) -> KeyId {
        KeyId(Sha256::digest(self.vk.as_bytes()).into())
    }

    /// `slmpack-ed25519 <hex>`, without a newline.
    pub fn to_line(&self) -> String {
        format!("{PUBLIC_KEY_PREFIX} {}", hex::encode(self.vk.as_bytes()))
    }

    /// Parse the one-line form (one trailing newline allowed).
    pub fn parse_line(text: &str) -> Result<Self, String> {
        let line = text.strip_suffix('\n').unwrap_or(text);
        if line.contains('\n') || line.contains('\r') {
            return Err("more than one line".into());
        }
        let Some(hexpart) = line
            .strip_prefix(PUBLIC_KEY_PREFIX)
            .and_then(|r| r.strip_prefix(' '))
        else {
            return Err(format!(
                "the line does not start with `{PUBLIC_KEY_PREFIX} `"
            ));
        };
        let bytes = crate::decode_hex::<32>(hexpart).ok_or_else(|| {
            format!(
                "expected 64 lowercase hex digits after `{PUBLIC_KEY_PREFIX} `, found {} characters",
                hexpart.len()
            )
        })?;
        Self::from_bytes(&bytes)
    }

    /// Load a `.pub` file.
    pub fn load(path: &Path) -> Result<Self, KeyError> {
        let text = read_key_file(path)?;
        if text.starts_with(PEM_PLAIN) || text.starts_with(PEM_ENCRYPTED) {
            return Err(KeyError::SecretGivenAsPublic {
                path: path.to_path_buf(),
            });
        }
        Self::parse_line(&text).map_err(|reason| KeyError::MalformedPublic {
            path: path.to_path_buf(),
            reason,
        })
    }

    /// Strict Ed25519 verification (`verify_strict`: rejects small-order points and
    /// non-canonical signatures) of `context || msg`.
    pub fn verify(&self, context: &[u8], msg: &[u8], sig: &[u8; 64]) -> bool {
        let sig = Signature::from_bytes(sig);
        let mut full = Vec::with_capacity(context.len() + msg.len());
        full.extend_from_slice(context);
        full.extend_from_slice(msg);
        self.vk.verify_strict(&full, &sig).is_ok()
    }
}

/// A signing key. `SigningKey` zeroizes itself on drop.
pub struct SecretKey {
    sk: SigningKey,
}

impl SecretKey {
    /// A fresh key from the operating system's random source.
    pub fn generate() -> Result<Self, KeyError> {
        let mut seed = Zeroizing::new([0u8; 32]);
        rand_core::RngCore::try_fill_bytes(&mut rand_core::OsRng, seed.as_mut())
            .map_err(|e| KeyError::Random(e.to_string()))?;
        Ok(SecretKey {
            sk: SigningKey::from_bytes(&seed),
        })
    }

    /// A key from a fixed seed (tests and fuzzing only).
    pub fn from_seed(seed: &[u8; 32]) -> Self {
        SecretKey {
            sk: SigningKey::from_bytes(seed),
        }
    }

    pub fn public(&self) -> PublicKey {
        PublicKey {
            vk: self.sk.verifying_key(),
        }
    }

    /// Ed25519 signature over `context || msg`.
    pub fn sign(&self, context: &[u8], msg: &[u8]) -> [u8; 64] {
        let mut full = Vec::with_capacity(context.len() + msg.len());
        full.extend_from_slice(context);
        full.extend_from_slice(msg);
        self.sk.sign(&full).to_bytes()
    }

    /// PKCS#8 PEM, encrypted when a passphrase is given.
    pub fn to_pem(&self, passphrase: Option<&[u8]>) -> Result<Zeroizing<String>, KeyError> {
        let le = ed25519_dalek::pkcs8::spki::der::pem::LineEnding::LF;
        match passphrase {
            None => self
                .sk
                .to_pkcs8_pem(le)
                .map_err(|e| KeyError::Encode(e.to_string())),
            Some(p) => self
                .sk
                .to_pkcs8_encrypted_pem(rand_core::OsRng, p, le)
                .map_err(|e| KeyError::Encode(e.to_string())),
        }
    }

    /// Parse PKCS#8 PEM text. `path` is only used in error messages.
    pub fn from_pem(text: &str, passphrase: Option<&[u8]>, path: &Path) -> Result<Self, KeyError> {
        let p = || path.to_path_buf();
        let trimmed = text.trim_start();
        if trimmed.starts_with(PUBLIC_KEY_PREFIX) {
            return Err(KeyError::PublicGivenAsSecret { path: p() });
        }
        if trimmed.starts_with(PEM_ENCRYPTED) {
            let Some(pass) = passphrase else {
                return Err(KeyError::NeedPassphrase { path: p() });
            };
            let sk = SigningKey::from_pkcs8_encrypted_pem(trimmed, pass)
                .map_err(|_| KeyError::WrongPassphrase { path: p() })?;
            return Ok(SecretKey { sk });
        }
        if trimmed.starts_with(PEM_PLAIN) {
            let sk =
                SigningKey::from_pkcs8_pem(trimmed).map_err(|e| KeyError::MalformedSecret {
                    path: p(),
                    reason: e.to_string(),
                })?;
            return Ok(SecretKey { sk });
        }
        Err(KeyError::MalformedSecret {
            path: p(),
            reason: format!("expected a `{PEM_PLAIN}` or `{PEM_ENCRYPTED}` block"),
        })
    }

    /// Load a `.key` file. On Unix the file must not be readable by group or others.
    pub fn load(path: &Path, passphrase: Option<&[u8]>) -> Result<Self, KeyError> {
        let text = read_key_file(path)?;
        #[cfg(unix)]
        if !text.trim_start().starts_with(PUBLIC_KEY_PREFIX) {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(path)
                .map_err(|source| KeyError::Io {
                    path: path.to_path_buf(),
                    source,
                })?
                .permissions()
                .mode()
                & 0o777;
            if mode & 0o077 != 0 {
                return Err(KeyError::Permissions {
                    path: path.to_path_buf(),
                    mode,
                });
            }
        }
        Self::from_pem(&text, passphrase, path)
    }
}

fn read_key_file(path: &Path) -> Result<Zeroizing<String>, KeyError> {
    let io = |source| KeyError::Io {
        path: path.to_path_buf(),
        source,
    };
    let meta = std::fs::metadata(path).map_err(io)?;
    if meta.len() > MAX_KEY_FILE_BYTES {
        return Err(KeyError::TooLarge {
            path: path.to_path_buf(),
            size: meta.len(),
        });
    }
    let bytes = Zeroizing::new(std::fs::read(path).map_err(io)?);
    match std::str::from_utf8(&bytes) {
        Ok(s) => Ok(Zeroizing::new(s.to_string())),
        Err(_) => Err(KeyError::MalformedPublic {
            path: path.to_path_buf(),
            reason: "the file is not UTF-8 text".into(),
        }),
    }
}

/// The two files `keygen` wrote.
#[derive(Debug)]
pub struct KeyPairFiles {
    pub secret: PathBuf,
    pub public: PathBuf,
    pub key: PublicKey,
}

/// Generate a key pair: `<out>.key` (PKCS#8 PEM, mode 0600) and `<out>.pub` (one line).
/// Existing files are refused unless `force`.
pub fn keygen(
    out: &Path,
    passphrase: Option<&[u8]>,
    force: bool,
) -> Result<KeyPairFiles, KeyError> {
    let with_ext = |ext: &str| {
        let mut s = out.as_os_str().to_owned();
        s.push(ext);
        PathBuf::from(s)
    };
    let secret = with_ext(".key");
    let public = with_ext(".pub");
    if !force {
        for p in [&secret, &public] {
            if p.exists() {
                return Err(KeyError::Exists { path: p.clone() });
            }
        }
    }
    if let Some(dir) = out.parent() {
        if !dir.as_os_str().is_empty() {
            std::fs::create_dir_all(dir).map_err(|source| KeyError::Io {
                path: dir.to_path_buf(),
                source,
            })?;
        }
    }
    let sk = SecretKey::generate()?;
    let pem = sk.to_pem(passphrase)?;
    // tempfile creates the temporary file with mode 0600, so the secret is never world-readable.
    crate::write_atomic(&secret, pem.as_bytes(), !force).map_err(|source| KeyError::Io {
        path: secret.clone(),
        source,
    })?;
    let key = sk.public();
    let line = format!("{}\n", key.to_line());
    crate::write_atomic(&public, line.as_bytes(), !force).map_err(|source| KeyError::Io {
        path: public.clone(),
        source,
    })?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let _ = std::fs::set_permissions(&public, std::fs::Permissions::from_mode(0o644));
    }
    Ok(KeyPairFiles {
        secret,
        public,
        key,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn public_line_round_trips_and_rejects_variants() {
        let sk = SecretKey::from_seed(&[7; 32]);
        let line = sk.public().to_line();
        assert_eq!(PublicKey::parse_line(&line).unwrap(), sk.public());
        assert_eq!(
            PublicKey::parse_line(&format!("{line}\n")).unwrap(),
            sk.public()
        );
        assert!(PublicKey::parse_line(&line.to_uppercase()).is_err());
        assert!(PublicKey::parse_line(&format!("{line}\n\n")).is_err());
        assert!(PublicKey::parse_line(&line[..line.len() - 2]).is_err());
        assert!(PublicKey::parse_line("ssh-ed25519 AAAA").is_err());
        // The identity point is weak.
        let mut id = [0u8; 32];
        id[0] = 1;
        assert!(PublicKey::from_bytes(&id).is_err());
    }

    #[test]
    fn sign_verify_with_context() {
        let sk = SecretKey::from_seed(&[1; 32]);
        let sig = sk.sign(b"ctx", b"msg");
        assert!(sk.public().verify(b"ctx", b"msg", &sig));
        assert!(!sk.public().verify(b"ctx2", b"msg", &sig));
        assert!(!sk.public().verify(b"ctx", b"msg ", &sig));
    }

    #[test]
    fn keygen_writes_0600_secret_and_loads_back() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("k/release");
        let files = keygen(&out, None, false).unwrap();
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&files.secret)
                .unwrap()
                .permissions()
                .mode()
                & 0o777;
            assert_eq!(mode, 0o600);
        }
        let sk = SecretKey::load(&files.secret, None).unwrap();
        assert_eq!(sk.public(), PublicKey::load(&files.public).unwrap());
        assert!(matches!(
            keygen(&out, None, false),
            Err(KeyError::Exists { .. })
        ));
        // Swapped roles give clear errors.
        assert!(matches!(
            SecretKey::load(&files.public, None),
            Err(KeyError::PublicGivenAsSecret { .. })
        ));
        assert!(matches!(
            PublicKey::load(&files.secret),
            Err(KeyError::SecretGivenAsPublic { .. })
        ));
    }

    #[test]
    fn passphrase_protected_key() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("enc");
        let files = keygen(&out, Some(b"correct horse"), false).unwrap();
        let text = std::fs::read_to_string(&files.secret).unwrap();
        assert!(text.starts_with(PEM_ENCRYPTED));
        assert!(matches!(
            SecretKey::load(&files.secret, None),
            Err(KeyError::NeedPassphrase { .. })
        ));
        assert!(matches!(
            SecretKey::load(&files.secret, Some(b"wrong")),
            Err(KeyError::WrongPassphrase { .. })
        ));
        let sk = SecretKey::load(&files.secret, Some(b"correct horse")).unwrap();
        assert_eq!(sk.public(), files.key);
    }

    #[cfg(unix)]
    #[test]
    fn group_readable_secret_is_refused() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let files = keygen(&dir.path().join("k"), None, false).unwrap();
        std::fs::set_permissions(&files.secret, std::fs::Permissions::from_mode(0o644)).unwrap();
        assert!(matches!(
            SecretKey::load(&files.secret, None),
            Err(KeyError::Permissions { mode: 0o644, .. })
        ));
    }

    #[test]
    fn malformed_secret() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("bad.key");
        std::fs::write(
            &p,
            "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n",
        )
        .unwrap();
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).unwrap();
        }
        assert!(matches!(
            SecretKey::load(&p, None),
            Err(KeyError::MalformedSecret { .. })
        ));
    }
}
