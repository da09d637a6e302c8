//! `slmpack bench`: run scenarios over every tier of a release (or one GGUF) and write
//! report.json / report.csv / report.md and plots; `slmpack bench compare A B` prints per-metric
//! changes and, with `--fail-if-regress P%`, exits 4 when a metric regressed beyond its error
//! bars.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use indicatif::{ProgressBar, ProgressStyle};
use slmpack_bench::energy::{DeviceProfile, EnergyMeter, EstimateMeter, RaplMeter};
use slmpack_bench::export;
use slmpack_bench::machine::ProcMemory;
use slmpack_bench::runner::SystemClock;
use slmpack_bench::{Bench, Progress, Report, Scenario, TierSpec};

use crate::exit;

#[derive(clap::Args, Debug)]
#[command(args_conflicts_with_subcommands = true, subcommand_negates_reqs = true)]
pub struct Args {
    #[command(subcommand)]
    pub command: Option<Sub>,
    /// A release folder (tiers from `manifest.json` or `build.json`) or a single `.gguf`.
    #[arg(required = true)]
    pub target: Option<PathBuf>,
    /// Scenario file (repeat for several). Default: every `benchmarks/*.yaml`.
    #[arg(long, short)]
    pub scenario: Vec<PathBuf>,
    /// Folder for report.json, report.csv, report.md and the plots.
    #[arg(long, short, default_value = "reports")]
    pub out: PathBuf,
    /// Only these tiers (repeat for several).
    #[arg(long)]
    pub tier: Vec<String>,
    /// Tier to measure KL-divergence against (default: the highest bits per weight).
    #[arg(long)]
    pub reference: Option<String>,
    /// Compute threads (default: the scenario's `threads`, else all cores).
    #[arg(long, short)]
    pub threads: Option<usize>,
    /// How to obtain energy: `rapl` (powercap counters), `estimate` (device profile) or `auto`.
    #[arg(long, default_value = "auto", value_parser = ["auto", "rapl", "estimate"])]
    pub energy: String,
    /// Device profile for energy estimates (default: `devices/laptop-x86.yaml` on x86-64,
    /// `devices/phone-arm.yaml` elsewhere, next to the first scenario).
    #[arg(long)]
    pub device_profile: Option<PathBuf>,
    /// Verify the release's signature with this public key first (as `slmpack verify`).
    #[arg(long)]
    pub pubkey: Vec<PathBuf>,
    /// Skip the PNG/SVG plots.
    #[arg(long)]
    pub no_plots: bool,
    /// No progress bars.
    #[arg(long, short)]
    pub quiet: bool,
}

#[derive(clap::Subcommand, Debug)]
pub enum Sub {
    /// Compare two reports metric by metric (A = base, B = new).
    Compare(CompareArgs),
}

#[derive(clap::Args, Debug)]
pub struct CompareArgs {
    pub base: PathBuf,
    pub new: PathBuf,
    /// Exit 4 when a metric is worse by more than this percentage beyond its error bars
    /// (e.g. `5%`).
    #[arg(long, value_parser = parse_pct)]
    pub fail_if_regress: Option<f64>,
    /// Print the comparison as JSON.
    #[arg(long)]
    pub json: bool,
}

fn parse_pct(s: &str) -> Result<f64, String> {
    let v: f64 = s
        .trim()
        .trim_end_matches('%')
        .parse()
        .map_err(|_| format!("`{s}` is not a percentage (e.g. `5%`)"))?;
    if !(v.is_finite() && v >= 0.0) {
        return Err(format!("`{s}` must be a non-negative percentage"));
    }
    Ok(v)
}

struct Bar {
    bar: Option<ProgressBar>,
    quiet: bool,
}

impl Progress for Bar {
    fn start(&mut self, label: &str, total: u64) {
        if self.quiet {
            return;
        }
        let b = ProgressBar::new(total);
        b.set_style(
            ProgressStyle::with_template("{msg:40} [{bar:30}] {pos}/{len} {elapsed}")
                .expect("valid template")
                .progress_chars("=> "),
        );
        b.set_message(label.to_string());
        self.bar = Some(b);
    }
    fn inc(&mut self, n: u64) {
        if let Some(b) = &self.bar {
            b.inc(n);
        }
    }
    fn finish(&mut self) {
        if let Some(b) = self.bar.take() {
            b.finish();
        }
    }
}

pub fn run(a: Args) -> anyhow::Result<()> {
    if let Some(Sub::Compare(c)) = a.command {
        return compare(c);
    }
    let target = a.target.clone().expect("clap requires a target");
    let scenarios = load_scenarios(&a.scenario)?;
    let tiers = tiers(&a, &target)?;
    let profile_path = a.device_profile.clone().unwrap_or_else(|| {
        let base = scenarios
            .first()
            .map(|s| s.base_dir.clone())
            .unwrap_or_default();
        let class = if cfg!(target_arch = "x86_64") {
            "laptop-x86"
        } else {
            "phone-arm"
        };
        let next_to_scenario = base.join("devices").join(format!("{class}.yaml"));
        if next_to_scenario.is_file() {
            next_to_scenario
        } else {
            Path::new("benchmarks/devices").join(format!("{class}.yaml"))
        }
    });
    let rapl = if a.energy == "estimate" {
        None
    } else {
        RaplMeter::open(Path::new("/sys/class/powercap"))
    };
    let mut energy: Box<dyn EnergyMeter> = match rapl {
        Some(r) => Box::new(r),
        None if a.energy == "rapl" => bail!(
            "RAPL energy counters (`/sys/class/powercap/intel-rapl:*/energy_uj`) are absent or unreadable\n  hint: run as a user who may read them, or use `--energy estimate`"
        ),
        None => Box::new(EstimateMeter {
            profile: DeviceProfile::load(&profile_path).with_context(|| {
                "energy estimate needs a device profile\n  hint: pass `--device-profile benchmarks/devices/<class>.yaml`"
            })?,
        }),
    };
    std::fs::create_dir_all(&a.out).with_context(|| format!("creating `{}`", a.out.display()))?;
    let runner = crate::infer_runner::InferRunner;
    let clock = SystemClock::default();
    let mut progress = Bar {
        bar: None,
        quiet: a.quiet,
    };
    let created_unix = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let mut bench = Bench {
        runner: &runner,
        clock: &clock,
        energy: energy.as_mut(),
        memory: &ProcMemory,
        progress: &mut progress,
        slmpack_version: env!("CARGO_PKG_VERSION").into(),
        created_unix,
        threads: a.threads,
    };
    let report = bench.run(&tiers, &scenarios, a.reference.as_deref())?;
    let mut md = String::new();
    for e in export::all() {
        let text = e.export(&report)?;
        let path = a.out.join(e.file_name());
        slmpack_bench::write_atomic(&path, text.as_bytes())?;
        eprintln!("wrote {}", path.display());
        if e.file_name() == "report.md" {
            md = text;
        }
    }
    if !a.no_plots {
        match slmpack_bench::plot::write_plots(&report, &a.out) {
            Ok(files) => {
                for f in files {
                    eprintln!("wrote {}", f.display());
                }
            }
            Err(e) => eprintln!("warning: plots skipped: {e}"),
        }
    }
    println!("{md}");
    Ok(())
}

fn load_scenarios(given: &[PathBuf]) -> anyhow::Result<Vec<Scenario>> {
    let paths: Vec<PathBuf> = if given.is_empty() {
        let dir = Path::new("benchmarks");
        let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
            .with_context(|| {
                "no `--scenario` given and no `benchmarks/` folder here\n  hint: pass `--scenario benchmarks/throughput.yaml`"
            })?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
            .collect();
        v.sort();
        v
    } else {
        given.to_vec()
    };
    if paths.is_empty() {
        bail!("no scenarios found\n  hint: pass `--scenario benchmarks/throughput.yaml`");
    }
    let mut out: Vec<Scenario> = Vec::new();
    for p in paths {
        let s = Scenario::load(&p)?;
        if out.iter().any(|o| o.name == s.name) {
            bail!(
                "`{}`: scenario name `{}` is used twice",
                p.display(),
                s.name
            );
        }
        out.push(s);
    }
    Ok(out)
}

fn tiers(a: &Args, target: &Path) -> anyhow::Result<Vec<TierSpec>> {
    let meta = std::fs::metadata(target).with_context(|| format!("`{}`", target.display()))?;
    let mut tiers: Vec<TierSpec> = if meta.is_file() {
        let name = target
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_else(|| "model".into());
        vec![TierSpec {
            name,
            path: target.to_path_buf(),
            bits_per_weight: None,
        }]
    } else if !a.pubkey.is_empty() {
        let trust = crate::cmd::verify::TrustArgs {
            pubkey: a.pubkey.clone(),
            threshold: 1,
            state: None,
            model: None,
            quiet: a.quiet,
        };
        let (v, _) = crate::cmd::verify::verify_dir(&trust, target, false)?;
        v.manifest
            .tiers
            .iter()
            .map(|t| TierSpec {
                name: t.name.clone(),
                path: target.join(&t.file),
                bits_per_weight: Some(t.bits_per_weight),
            })
            .collect()
    } else if target.join(slmpack_manifest::MANIFEST_FILE).is_file() {
        let p = target.join(slmpack_manifest::MANIFEST_FILE);
        let bytes = std::fs::read(&p).with_context(|| format!("`{}`", p.display()))?;
        let m = slmpack_manifest::manifest::Manifest::parse(&bytes)
            .map_err(|e| anyhow::anyhow!("`{}`: {e}", p.display()))?;
        m.tiers
            .iter()
            .map(|t| TierSpec {
                name: t.name.clone(),
                path: target.join(&t.file),
                bits_per_weight: Some(t.bits_per_weight),
            })
            .collect()
    } else {
        let b = slmpack_manifest::build::BuildInfo::load(target)?;
        b.tiers
            .iter()
            .map(|t| TierSpec {
                name: t.name.clone(),
                path: target.join(&t.file),
                bits_per_weight: Some(t.bits_per_weight),
            })
            .collect()
    };
    if !a.tier.is_empty() {
        for t in &a.tier {
            if !tiers.iter().any(|x| &x.name == t) {
                bail!(
                    "tier `{t}` is not in `{}` (tiers: {})",
                    target.display(),
                    tiers
                        .iter()
                        .map(|x| format!("`{}`", x.name))
                        .collect::<Vec<_>>()
                        .join(", ")
                );
            }
        }
        tiers.retain(|x| a.tier.contains(&x.name));
    }
    Ok(tiers)
}

fn compare(c: CompareArgs) -> anyhow::Result<()> {
    let a = Report::load(&c.base)?;
    let b = Report::load(&c.new)?;
    let cmp = slmpack_bench::compare::compare(&a, &b, c.fail_if_regress);
    if c.json {
        println!("{}", serde_json::to_string_pretty(&cmp)?);
    } else {
        print!("{}", cmp.table());
    }
    let reg = cmp.regressions();
    if let (Some(p), false) = (c.fail_if_regress, reg.is_empty()) {
        let keys: Vec<String> = reg.iter().map(|r| format!("`{}`", r.key)).collect();
        return Err(exit::coded(
            exit::UNMET,
            anyhow::anyhow!(
                "{} metric(s) regressed by more than {p}% beyond their error bars: {}",
                reg.len(),
                keys.join(", ")
            ),
        ));
    }
    Ok(())
}
