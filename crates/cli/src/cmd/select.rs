//! `slmpack select`: verify a release, then print the best tier this device meets. Best is the
//! highest bits per weight (ties: larger file, then later in the manifest). No tier fits: exit 4
//! with the reasons for each tier. The device state is advanced only when a tier was selected, so
//! a release this device cannot run never locks it out of older ones it can.

use std::path::PathBuf;

use slmpack_manifest::device::DeviceProfile;
use slmpack_manifest::select::select;

use crate::exit;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Release folder holding `manifest.json`, `manifest.sig` and the listed files.
    pub dir: PathBuf,
    #[command(flatten)]
    pub trust: super::verify::TrustArgs,
    /// `auto` detects this machine; otherwise a device profile YAML (see `slmpack device`).
    #[arg(long, default_value = "auto")]
    pub device: String,
    /// Print JSON (selected tier, the rejected ones with reasons, the device profile).
    #[arg(long)]
    pub json: bool,
}

pub fn run(a: Args) -> anyhow::Result<()> {
    let device = if a.device == "auto" {
        DeviceProfile::detect()
    } else {
        DeviceProfile::load(std::path::Path::new(&a.device))?
    };
    let (v, state) = super::verify::verify_dir(&a.trust, &a.dir, a.json)?;
    let m = &v.manifest;
    let sel = select(m, &device);
    let Some(i) = sel.selected else {
        let reasons: Vec<String> = sel
            .rejected
            .iter()
            .map(|r| format!("\n  tier `{}`: {}", r.tier, r.reasons.join("; ")))
            .collect();
        if a.json {
            println!(
                "{}",
                serde_json::json!({"ok": false, "selected": null, "rejected": sel.rejected, "device": device})
            );
        }
        return Err(exit::coded(
            exit::UNMET,
            anyhow::anyhow!(
                "no tier of `{}` {} fits this device ({}, {} cores, {} bytes RAM available, features: {}){}\n  hint: check the profile with `slmpack device`",
                m.model,
                m.version,
                device.arch,
                device.cores,
                device.ram_available_bytes,
                if device.cpu_features.is_empty() { "none".to_string() } else { device.cpu_features.join(" ") },
                reasons.concat()
            ),
        ));
    };
    let updated = super::verify::commit_state(&a.trust, state, &v)?;
    let t = &m.tiers[i];
    let path = a.dir.join(&t.file);
    if a.json {
        println!(
            "{}",
            serde_json::json!({
                "ok": true, "model": m.model, "version": m.version, "counter": m.counter,
                "selected": {"tier": t.name, "file": t.file, "path": path, "size": t.size,
                             "sha256": t.sha256, "mix": t.mix, "bits_per_weight": t.bits_per_weight},
                "also_fit": sel.also_fit, "rejected": sel.rejected, "device": device,
                "state_updated": updated,
            })
        );
    } else {
        println!(
            "selected tier `{}`: `{}` ({}, {:.2} bits/weight, {} bytes)",
            t.name,
            path.display(),
            t.mix,
            t.bits_per_weight,
            t.size
        );
        for r in &sel.rejected {
            println!("  rejected `{}`: {}", r.tier, r.reasons.join("; "));
        }
        if !sel.also_fit.is_empty() {
            println!("  also fit: {}", sel.also_fit.join(", "));
        }
    }
    Ok(())
}
