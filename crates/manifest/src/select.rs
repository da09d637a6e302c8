//! Tier selection. "Best" is the highest `bits_per_weight` (the least lossy quantization); ties go
//! to the larger file, then to the tier listed later in the manifest. The order of tiers in
//! `build.json` therefore does not matter.

use serde::Serialize;

use crate::device::DeviceProfile;
use crate::manifest::{Manifest, Tier};

/// Why one tier does not fit.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Rejection {
    pub tier: String,
    pub reasons: Vec<String>,
}

/// The outcome of selection.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Selection {
    /// Index into `manifest.tiers` of the chosen tier, if any fits.
    pub selected: Option<usize>,
    /// Tiers that fit but are not the best, best first.
    pub also_fit: Vec<String>,
    /// Tiers that do not fit, with reasons, in manifest order.
    pub rejected: Vec<Rejection>,
}

fn gib(b: u64) -> String {
    format!("{:.2} GiB", b as f64 / (1u64 << 30) as f64)
}

/// Reasons `tier` cannot run on `device` (empty: it fits).
pub fn unmet(tier: &Tier, device: &DeviceProfile) -> Vec<String> {
    let r = &tier.requires;
    let mut reasons = Vec::new();
    if !r.arch.is_empty() && !r.arch.iter().any(|a| a == &device.arch) {
        reasons.push(format!(
            "built for {}; this device is {}",
            r.arch.join(", "),
            device.arch
        ));
    }
    for f in &r.cpu_features {
        if !device.cpu_features.iter().any(|d| d == f) {
            reasons.push(format!("needs cpu feature `{f}`"));
        }
    }
    if device.ram_available_bytes < r.min_ram_bytes {
        reasons.push(format!(
            "needs {} of RAM ({} bytes); {} available",
            gib(r.min_ram_bytes),
            r.min_ram_bytes,
            gib(device.ram_available_bytes)
        ));
    }
    reasons
}

/// Rank: higher is better.
fn rank(t: &Tier, i: usize) -> (f64, u64, usize) {
    (t.bits_per_weight, t.size, i)
}

/// Choose the best tier `device` meets.
pub fn select(manifest: &Manifest, device: &DeviceProfile) -> Selection {
    let mut fitting = Vec::new();
    let mut rejected = Vec::new();
    for (i, t) in manifest.tiers.iter().enumerate() {
        let reasons = unmet(t, device);
        if reasons.is_empty() {
            fitting.push(i);
        } else {
            rejected.push(Rejection {
                tier: t.name.clone(),
                reasons,
            });
        }
    }
    let tiers = &manifest.tiers;
    // Best first. bits_per_weight is validated finite, so `partial_cmp` always answers.
    fitting.sort_by(|&a, &b| {
        rank(&tiers[b], b)
            .partial_cmp(&rank(&tiers[a], a))
            .unwrap_or(std::cmp::Ordering::Equal)
    });
    Selection {
        selected: fitting.first().copied(),
        also_fit: fitting
            .iter()
            .skip(1)
            .map(|&i| tiers[i].name.clone())
            .collect(),
        rejected,
    }
}
