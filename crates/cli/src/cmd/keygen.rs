//! `slmpack keygen`: a new Ed25519 release key pair.

use std::path::PathBuf;

use anyhow::Context;
use slmpack_manifest::keys;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Output prefix: writes `<OUT>.key` (secret, PKCS#8 PEM, mode 0600) and `<OUT>.pub`.
    #[arg(long)]
    pub out: PathBuf,
    /// Encrypt the secret key with the passphrase in this environment variable.
    #[arg(long, value_name = "VAR")]
    pub passphrase_env: Option<String>,
    /// Overwrite existing key files.
    #[arg(long)]
    pub force: bool,
    /// Print JSON instead of text.
    #[arg(long)]
    pub json: bool,
}

/// Read a passphrase from the environment variable `var`.
pub fn passphrase(var: Option<&str>) -> anyhow::Result<Option<zeroize::Zeroizing<String>>> {
    let Some(var) = var else { return Ok(None) };
    match std::env::var(var) {
        Ok(s) if !s.is_empty() => Ok(Some(zeroize::Zeroizing::new(s))),
        _ => anyhow::bail!(
            "environment variable `{var}` is unset or empty\n  hint: `--passphrase-env` names the variable that holds the passphrase"
        ),
    }
}

pub fn run(a: Args) -> anyhow::Result<()> {
    let pass = passphrase(a.passphrase_env.as_deref())?;
    let files = keys::keygen(&a.out, pass.as_ref().map(|p| p.as_bytes()), a.force)
        .with_context(|| format!("generating a key pair at `{}`", a.out.display()))?;
    if a.json {
        println!(
            "{}",
            serde_json::json!({
                "secret_key": files.secret, "public_key": files.public,
                "keyid": files.key.keyid().to_string(), "encrypted": pass.is_some(),
            })
        );
    } else {
        println!(
            "wrote `{}` (secret, mode 0600{}) and `{}`\nkey id: {}\nkeep the secret key off devices and out of git; ship `{}` to devices",
            files.secret.display(),
            if pass.is_some() { ", passphrase-protected" } else { "" },
            files.public.display(),
            files.key.keyid(),
            files.public.display()
        );
    }
    Ok(())
}
