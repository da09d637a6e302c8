//! `slmpack verify`: the device-side check of a signed release folder. Fails closed with exit
//! code 3; the message names the check and the file.

use std::path::{Path, PathBuf};
use std::time::SystemTime;

use anyhow::Context;
use slmpack_manifest::keys::PublicKey;
use slmpack_manifest::state::DeviceState;
use slmpack_manifest::verify::{verify_release, Verified, VerifyOptions};
use slmpack_manifest::VerifyError;

use crate::exit;

/// What the device trusts and remembers; shared by `verify` and `select`.
#[derive(clap::Args, Debug)]
pub struct TrustArgs {
    /// The publisher's public key(s) (`.pub`); repeat for several keys.
    #[arg(long, required = true)]
    pub pubkey: Vec<PathBuf>,
    /// Distinct trusted signatures required.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=32))]
    pub threshold: u32,
    /// Device state file (rollback counter, rotated keys). Read before, advanced atomically after
    /// a successful verification; a missing file is a fresh device.
    #[arg(long)]
    pub state: Option<PathBuf>,
    /// Refuse a manifest for any other model.
    #[arg(long)]
    pub model: Option<String>,
    /// No progress bar.
    #[arg(long, short)]
    pub quiet: bool,
}

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Release folder holding `manifest.json`, `manifest.sig` and the listed files.
    pub dir: PathBuf,
    #[command(flatten)]
    pub trust: TrustArgs,
    /// Print JSON instead of text (also on failure, with the failed check).
    #[arg(long)]
    pub json: bool,
}

/// Load keys and state, verify `dir`. On failure with `json`, prints `{"ok": false, ...}`.
pub fn verify_dir(
    t: &TrustArgs,
    dir: &Path,
    json: bool,
) -> anyhow::Result<(Verified, Option<DeviceState>)> {
    let keys = t
        .pubkey
        .iter()
        .map(|p| PublicKey::load(p))
        .collect::<Result<Vec<_>, _>>()?;
    let fail = |e: VerifyError| {
        if json {
            println!(
                "{}",
                serde_json::json!({"ok": false, "check": e.check(), "error": e.to_string()})
            );
        }
        exit::coded(exit::VERIFY_FAILED, e)
    };
    let state = match &t.state {
        Some(p) => Some(
            DeviceState::load(p)
                .map_err(fail)
                .context("reading the device state")?,
        ),
        None => None,
    };
    let bar = super::sign::hash_bar(t.quiet);
    let progress = |n| bar.inc(n);
    let mut opts = VerifyOptions::new(&keys);
    opts.threshold = t.threshold as usize;
    opts.state = state.as_ref();
    opts.now = SystemTime::now();
    opts.expect_model = t.model.as_deref();
    opts.progress = &progress;
    let res = verify_release(dir, &opts);
    bar.finish_and_clear();
    let v = res
        .map_err(fail)
        .with_context(|| format!("verification of `{}` failed", dir.display()))?;
    Ok((v, state))
}

/// Advance and write the state file (atomically) after a successful verification.
pub fn commit_state(
    t: &TrustArgs,
    state: Option<DeviceState>,
    v: &Verified,
) -> anyhow::Result<bool> {
    let (Some(path), Some(mut st)) = (&t.state, state) else {
        return Ok(false);
    };
    st.record(v, SystemTime::now());
    st.save(path).with_context(|| {
        format!(
            "release verified, but the device state `{}` could not be written",
            path.display()
        )
    })?;
    Ok(true)
}

pub fn run(a: Args) -> anyhow::Result<()> {
    let (v, state) = verify_dir(&a.trust, &a.dir, a.json)?;
    let updated = commit_state(&a.trust, state, &v)?;
    let m = &v.manifest;
    let signers: Vec<String> = v.signers.iter().map(|k| k.to_string()).collect();
    if a.json {
        println!(
            "{}",
            serde_json::json!({
                "ok": true, "model": m.model, "version": m.version, "counter": m.counter,
                "created": m.created, "expires": m.expires, "signers": signers,
                "tiers": m.tiers.iter().map(|t| &t.name).collect::<Vec<_>>(),
                "files": m.tiers.len() + m.files.len(), "bytes": v.total_bytes,
                "rotated_in": v.rotated_in.iter().map(|k| k.keyid().to_string()).collect::<Vec<_>>(),
                "state_updated": updated,
            })
        );
    } else {
        println!(
            "verified `{}` {} (counter {}): {} tiers, {} files, {} bytes; expires {}",
            m.model,
            m.version,
            m.counter,
            m.tiers.len(),
            m.tiers.len() + m.files.len(),
            v.total_bytes,
            m.expires
        );
        println!("signed by {}", signers.join(", "));
        for k in &v.rotated_in {
            println!("trusting rotated-in key {}", k.keyid());
        }
        if updated {
            println!("device state updated");
        }
    }
    Ok(())
}
