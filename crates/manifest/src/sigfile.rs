//! `manifest.sig`: the signatures over `manifest.json` and any key-rotation statements.
//!
//! ```json
//! {
//!   "schema": 1,
//!   "signatures": [
//!     { "keyid": "<sha-256 of the public key, hex>", "sig": "<ed25519 signature, hex>" }
//!   ],
//!   "rotations": [ { "statement": "<exact JSON text>", "signatures": [ ... ] } ]
//! }
//! ```
//!
//! The file has exactly one accepted spelling: it is parsed, re-serialized, and refused unless the
//! result equals the input byte for byte. Hex must be lowercase. So a signature file cannot be
//! altered without being refused, even where the change would not alter its meaning.

use serde::{Deserialize, Serialize};

use crate::keys::KeyId;
use crate::rotation::RotationBundle;
use crate::{MAX_ROTATIONS, MAX_SIGNATURES, MAX_SIG_BYTES};

/// One signature.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SigEntry {
    pub keyid: String,
    pub sig: String,
}

impl SigEntry {
    pub fn new(keyid: KeyId, sig: &[u8; 64]) -> Self {
        SigEntry {
            keyid: keyid.to_string(),
            sig: hex::encode(sig),
        }
    }

    /// Decoded key id and signature bytes.
    pub fn decode(&self) -> Result<(KeyId, [u8; 64]), String> {
        let keyid = KeyId::parse(&self.keyid).ok_or_else(|| {
            format!(
                "key id `{}` is not 64 lowercase hex digits",
                self.keyid.escape_debug()
            )
        })?;
        let sig = crate::decode_hex::<64>(&self.sig).ok_or_else(|| {
            format!(
                "signature by `{}` is not 128 lowercase hex digits",
                keyid.short()
            )
        })?;
        Ok((keyid, sig))
    }
}

/// The contents of `manifest.sig`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SigFile {
    pub schema: u32,
    pub signatures: Vec<SigEntry>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub rotations: Vec<RotationBundle>,
}

impl SigFile {
    pub fn new() -> Self {
        SigFile {
            schema: 1,
            signatures: Vec::new(),
            rotations: Vec::new(),
        }
    }

    /// The one accepted spelling: pretty JSON and a newline.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut v = serde_json::to_vec_pretty(self).expect("signature file serializes");
        v.push(b'\n');
        v
    }

    /// Parse strictly: size cap first, then JSON, counts, hex, and canonical spelling.
    pub fn parse(bytes: &[u8]) -> Result<Self, String> {
        if bytes.len() as u64 > MAX_SIG_BYTES {
            return Err(format!(
                "{} bytes, more than the {MAX_SIG_BYTES}-byte limit",
                bytes.len()
            ));
        }
        let f: SigFile = serde_json::from_slice(bytes).map_err(|e| e.to_string())?;
        if f.schema != 1 {
            return Err(format!("schema {} is not supported (expected 1)", f.schema));
        }
        if f.signatures.is_empty() {
            return Err("no signatures".into());
        }
        if f.signatures.len() > MAX_SIGNATURES {
            return Err(format!("more than {MAX_SIGNATURES} signatures"));
        }
        if f.rotations.len() > MAX_ROTATIONS {
            return Err(format!("more than {MAX_ROTATIONS} rotation statements"));
        }
        for s in &f.signatures {
            s.decode()?;
        }
        for r in &f.rotations {
            r.check_shape()?;
        }
        if f.to_bytes() != bytes {
            return Err("not in canonical form (the file was edited)".into());
        }
        Ok(f)
    }
}

impl Default for SigFile {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keys::SecretKey;

    #[test]
    fn canonical_only() {
        let sk = SecretKey::from_seed(&[3; 32]);
        let mut f = SigFile::new();
        f.signatures
            .push(SigEntry::new(sk.public().keyid(), &sk.sign(b"", b"x")));
        let bytes = f.to_bytes();
        assert_eq!(SigFile::parse(&bytes).unwrap(), f);
        let text = String::from_utf8(bytes.clone()).unwrap();
        // Same meaning, different spelling: refused.
        assert!(SigFile::parse(text.replace("  ", "\t").as_bytes()).is_err());
        assert!(SigFile::parse(text.trim_end().as_bytes()).is_err());
        assert!(SigFile::parse(text.to_uppercase().as_bytes()).is_err());
        let upper_sig = text.replace(&f.signatures[0].sig, &f.signatures[0].sig.to_uppercase());
        assert!(SigFile::parse(upper_sig.as_bytes()).is_err());
        let with_unknown = text.replacen("\"schema\": 1,", "\"schema\": 1, \"x\": 1,", 1);
        assert!(SigFile::parse(with_unknown.as_bytes()).is_err());
        assert!(SigFile::parse(&vec![b' '; MAX_SIG_BYTES as usize + 1]).is_err());
    }
}
