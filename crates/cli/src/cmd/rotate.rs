//! `slmpack rotate`: a key-rotation statement signed by the old and the new key.

use std::path::PathBuf;
use std::time::SystemTime;

use anyhow::Context;
use slmpack_manifest::keys::SecretKey;
use slmpack_manifest::manifest::format_time;
use slmpack_manifest::rotation::RotationBundle;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// The key devices trust now.
    #[arg(long)]
    pub old: PathBuf,
    /// The key that replaces it.
    #[arg(long)]
    pub new: PathBuf,
    /// Where to write the statement (pass it to `slmpack sign --rotation`).
    #[arg(long)]
    pub out: PathBuf,
    /// Environment variable holding the old key's passphrase.
    #[arg(long, value_name = "VAR")]
    pub old_passphrase_env: Option<String>,
    /// Environment variable holding the new key's passphrase.
    #[arg(long, value_name = "VAR")]
    pub new_passphrase_env: Option<String>,
    /// Print JSON instead of text.
    #[arg(long)]
    pub json: bool,
}

pub fn run(a: Args) -> anyhow::Result<()> {
    let op = super::keygen::passphrase(a.old_passphrase_env.as_deref())?;
    let np = super::keygen::passphrase(a.new_passphrase_env.as_deref())?;
    let old = SecretKey::load(&a.old, op.as_ref().map(|p| p.as_bytes()))?;
    let new = SecretKey::load(&a.new, np.as_ref().map(|p| p.as_bytes()))?;
    if old.public() == new.public() {
        anyhow::bail!("`--old` and `--new` are the same key");
    }
    let bundle = RotationBundle::create(&old, &new, &format_time(SystemTime::now()));
    slmpack_manifest::write_atomic(&a.out, &bundle.to_file_bytes(), false)
        .with_context(|| format!("writing `{}`", a.out.display()))?;
    let (o, n) = (old.public().keyid(), new.public().keyid());
    if a.json {
        println!(
            "{}",
            serde_json::json!({"rotation": a.out, "old_keyid": o.to_string(), "new_keyid": n.to_string()})
        );
    } else {
        println!(
            "wrote `{}`: key {} replaced by {}\nship it with `slmpack sign --rotation {}` so devices trusting the old key move to the new one",
            a.out.display(),
            o.short(),
            n.short(),
            a.out.display()
        );
    }
    Ok(())
}
