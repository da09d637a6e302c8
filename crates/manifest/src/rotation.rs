//! Key rotation. A rotation statement names an old and a new public key and is signed by both:
//! the old key vouches for the new one, and the new key proves its holder agreed. A verifier that
//! trusts the old key then trusts the new key *instead* (the old key is revoked), so rotation
//! never adds trusted keys and never weakens a signature threshold.
//!
//! Statement (signed as exact bytes, with the [`ROTATION_SIG_CONTEXT`] prefix):
//! `{"schema":1,"type":"slmpack-key-rotation","old_key":"slmpack-ed25519 <hex>","new_key":"slmpack-ed25519 <hex>","created":"<RFC 3339>"}`

use serde::{Deserialize, Serialize};

use crate::keys::{PublicKey, SecretKey};
use crate::sigfile::SigEntry;
use crate::ROTATION_SIG_CONTEXT;

/// The `type` of a rotation statement.
pub const ROTATION_TYPE: &str = "slmpack-key-rotation";
const MAX_STATEMENT_BYTES: usize = 4096;

/// The signed content of a rotation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RotationStatement {
    pub schema: u32,
    #[serde(rename = "type")]
    pub kind: String,
    pub old_key: String,
    pub new_key: String,
    pub created: String,
}

/// A statement (as the exact signed text) with its two signatures. This is also the content of
/// the file `slmpack rotate` writes, and an element of `manifest.sig`'s `rotations`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RotationBundle {
    pub statement: String,
    pub signatures: Vec<SigEntry>,
}

/// A rotation whose signatures both verified.
#[derive(Debug, Clone)]
pub struct Rotation {
    pub old: PublicKey,
    pub new: PublicKey,
}

impl RotationBundle {
    /// Sign a statement rotating from `old` to `new`.
    pub fn create(old: &SecretKey, new: &SecretKey, created: &str) -> Self {
        let st = RotationStatement {
            schema: 1,
            kind: ROTATION_TYPE.into(),
            old_key: old.public().to_line(),
            new_key: new.public().to_line(),
            created: created.into(),
        };
        let statement = serde_json::to_string(&st).expect("statement serializes");
        let sigs = [old, new]
            .iter()
            .map(|k| {
                SigEntry::new(
                    k.public().keyid(),
                    &k.sign(ROTATION_SIG_CONTEXT, statement.as_bytes()),
                )
            })
            .collect();
        RotationBundle {
            statement,
            signatures: sigs,
        }
    }

    /// Shape checks that need no keys (size caps, hex); part of parsing `manifest.sig`.
    pub fn check_shape(&self) -> Result<(), String> {
        if self.statement.len() > MAX_STATEMENT_BYTES {
            return Err("rotation statement is too long".into());
        }
        if self.signatures.len() != 2 {
            return Err(
                "a rotation statement carries exactly two signatures (old and new key)".into(),
            );
        }
        for s in &self.signatures {
            s.decode()?;
        }
        Ok(())
    }

    /// Parse the statement and verify both signatures (`verify_strict`).
    pub fn verify(&self) -> Result<Rotation, String> {
        self.check_shape()?;
        let st: RotationStatement =
            serde_json::from_str(&self.statement).map_err(|e| format!("statement: {e}"))?;
        if st.schema != 1 || st.kind != ROTATION_TYPE {
            return Err(format!("statement is not a schema 1 `{ROTATION_TYPE}`"));
        }
        if crate::manifest::parse_time(&st.created).is_none() {
            return Err("statement `created` is not an RFC 3339 time".into());
        }
        let old = PublicKey::parse_line(&st.old_key).map_err(|e| format!("old key: {e}"))?;
        let new = PublicKey::parse_line(&st.new_key).map_err(|e| format!("new key: {e}"))?;
        if old == new {
            return Err("old and new key are the same".into());
        }
        for (key, entry) in [(&old, &self.signatures[0]), (&new, &self.signatures[1])] {
            let (keyid, sig) = entry.decode()?;
            if keyid != key.keyid() {
                return Err(format!(
                    "signature key id `{}` is not the statement's key `{}`",
                    keyid.short(),
                    key.keyid().short()
                ));
            }
            if !key.verify(ROTATION_SIG_CONTEXT, self.statement.as_bytes(), &sig) {
                return Err(format!("signature by `{}` does not verify", keyid.short()));
            }
        }
        Ok(Rotation { old, new })
    }

    /// Parse a rotation file written by `slmpack rotate` (canonical pretty JSON).
    pub fn parse_file(bytes: &[u8]) -> Result<Self, String> {
        if bytes.len() > 2 * MAX_STATEMENT_BYTES {
            return Err("rotation file is too large".into());
        }
        let b: RotationBundle = serde_json::from_slice(bytes).map_err(|e| e.to_string())?;
        b.verify()?;
        Ok(b)
    }

    /// Pretty JSON and a newline.
    pub fn to_file_bytes(&self) -> Vec<u8> {
        let mut v = serde_json::to_vec_pretty(self).expect("rotation serializes");
        v.push(b'\n');
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rotation_verifies_and_rejects_tampering() {
        let a = SecretKey::from_seed(&[1; 32]);
        let b = SecretKey::from_seed(&[2; 32]);
        let r = RotationBundle::create(&a, &b, "2026-01-01T00:00:00Z");
        let v = r.verify().unwrap();
        assert_eq!(v.old, a.public());
        assert_eq!(v.new, b.public());
        // Statement edited.
        let mut t = r.clone();
        t.statement = t.statement.replace("2026", "2027");
        assert!(t.verify().is_err());
        // Only signed by the old key (new key's signature replaced by the old key's).
        let mut t = r.clone();
        t.signatures[1] = t.signatures[0].clone();
        assert!(t.verify().is_err());
        // A statement by a third key claiming to rotate `a`.
        let c = SecretKey::from_seed(&[3; 32]);
        let mut forged = RotationBundle::create(&c, &b, "2026-01-01T00:00:00Z");
        forged.statement = forged
            .statement
            .replace(&c.public().to_line(), &a.public().to_line());
        assert!(forged.verify().is_err());
        assert!(RotationBundle::parse_file(&r.to_file_bytes()).is_ok());
    }
}
