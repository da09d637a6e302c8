//! `slmpack sign`: write and sign `manifest.json` for a release folder, or co-sign one.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::time::SystemTime;

use anyhow::Context;
use indicatif::{ProgressBar, ProgressStyle};
use slmpack_manifest::keys::SecretKey;
use slmpack_manifest::rotation::RotationBundle;
use slmpack_manifest::sign::{cosign_release, parse_duration, sign_release, SignOptions, Signed};

use crate::exit;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Release folder (`dist/<model>/<version>`) holding `build.json` and the tier files.
    pub dir: PathBuf,
    /// Secret key written by `slmpack keygen`.
    #[arg(long)]
    pub key: PathBuf,
    /// Lifetime of the manifest (e.g. `180d`, `30d 12h`); devices refuse it afterwards.
    #[arg(long, default_value = "180d")]
    pub expires: String,
    /// Release counter. Default: derived from the version, major*10^12 + minor*10^6 + patch.
    #[arg(long)]
    pub counter: Option<u64>,
    /// Add this key's signature to the existing manifest (threshold co-signing) instead of
    /// writing a new manifest.
    #[arg(long, conflicts_with_all = ["counter", "rotation"])]
    pub append: bool,
    /// A key-rotation statement (from `slmpack rotate`) to ship with the signature; repeatable.
    #[arg(long)]
    pub rotation: Vec<PathBuf>,
    /// Environment variable holding the secret key's passphrase.
    #[arg(long, value_name = "VAR")]
    pub passphrase_env: Option<String>,
    /// No progress bar.
    #[arg(long, short)]
    pub quiet: bool,
    /// Print JSON instead of text.
    #[arg(long)]
    pub json: bool,
}

/// A byte counter on stderr while hashing; hidden when stderr is not a terminal or with `quiet`.
pub fn hash_bar(quiet: bool) -> ProgressBar {
    if quiet || !std::io::stderr().is_terminal() {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new_spinner();
    bar.set_style(
        ProgressStyle::with_template("{spinner} hashing {binary_bytes} ({binary_bytes_per_sec})")
            .expect("valid template"),
    );
    bar.enable_steady_tick(std::time::Duration::from_millis(120));
    bar
}

/// Map a library error to an exit code: verification failures are 3.
pub fn code(e: slmpack_manifest::Error) -> anyhow::Error {
    match e {
        slmpack_manifest::Error::Verify(v) => exit::coded(exit::VERIFY_FAILED, v),
        other => other.into(),
    }
}

pub fn run(a: Args) -> anyhow::Result<()> {
    let pass = super::keygen::passphrase(a.passphrase_env.as_deref())?;
    let key = SecretKey::load(&a.key, pass.as_ref().map(|p| p.as_bytes()))?;
    let bar = hash_bar(a.quiet);
    let progress = |n| bar.inc(n);
    let signed: Signed = if a.append {
        cosign_release(&a.dir, &key, &progress)
            .map_err(code)
            .with_context(|| format!("co-signing `{}`", a.dir.display()))?
    } else {
        let expires_in =
            parse_duration(&a.expires).map_err(|e| anyhow::anyhow!("`--expires`: {e}"))?;
        let mut rotations = Vec::new();
        for p in &a.rotation {
            let bytes = std::fs::read(p).with_context(|| format!("reading `{}`", p.display()))?;
            rotations.push(RotationBundle::parse_file(&bytes).map_err(|e| {
                anyhow::anyhow!("`{}`: invalid rotation statement: {e}", p.display())
            })?);
        }
        let opts = SignOptions {
            expires_in,
            counter: a.counter,
            now: SystemTime::now(),
            rotations,
            progress: &progress,
        };
        sign_release(&a.dir, &key, &opts)
            .map_err(code)
            .with_context(|| format!("signing `{}`", a.dir.display()))?
    };
    bar.finish_and_clear();
    let m = &signed.manifest;
    if a.json {
        println!(
            "{}",
            serde_json::json!({
                "manifest": signed.manifest_path, "signatures_file": signed.sig_path,
                "model": m.model, "version": m.version, "counter": m.counter,
                "created": m.created, "expires": m.expires, "keyid": signed.keyid.to_string(),
                "signatures": signed.signatures,
                "tiers": m.tiers.iter().map(|t| &t.name).collect::<Vec<_>>(),
                "files": m.tiers.len() + m.files.len(),
            })
        );
    } else {
        println!(
            "{} `{}` {} (counter {}): {} tiers, {} files; expires {}\nkey {} — `{}` holds {} signature(s)",
            if a.append { "co-signed" } else { "signed" },
            m.model,
            m.version,
            m.counter,
            m.tiers.len(),
            m.tiers.len() + m.files.len(),
            m.expires,
            signed.keyid,
            signed.sig_path.display(),
            signed.signatures
        );
    }
    Ok(())
}
