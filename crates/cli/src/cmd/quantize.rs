//! `slmpack quantize`: one GGUF per recipe tier, or one file for `--type`.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use anyhow::{anyhow, Context};
use indicatif::{ProgressBar, ProgressStyle};
use serde::Serialize;
use slmpack_convert::recipe::{human_size, parse_override, BuildJson, BuildTier, Recipe};
use slmpack_convert::{
    ConvertError, Fallback, Ftype, Input, Override, Plan, Progress, QuantizeOptions, TypeRules,
};
use slmpack_gguf::GgmlType;

use crate::exit::{coded, UNMET};

#[derive(clap::Args, Debug)]
#[command(
    after_help = "Examples:\n  slmpack quantize MODEL_DIR --recipe recipes/smollm2-135m.yaml --out dist/\n  slmpack quantize MODEL_DIR --type q4_k_m -o model.q4_k_m.gguf"
)]
pub struct Args {
    /// A Hugging Face checkpoint folder (config.json, *.safetensors, tokenizer.json) or a GGUF.
    pub input: PathBuf,
    /// Build the tiers of this recipe into OUT/<model>/<version>/<tier>.gguf.
    #[arg(long, conflicts_with = "ty")]
    pub recipe: Option<PathBuf>,
    /// Build one file with this mix: f32, f16, bf16, q8_0, q4_0, q4_1, q5_0, q5_1, q4_k_s,
    /// q4_k_m (q4_k), q5_k_s, q5_k_m (q5_k), q6_k, iq4_nl.
    #[arg(long = "type", short = 't', value_name = "TYPE")]
    pub ty: Option<String>,
    /// Output: a folder with --recipe, a .gguf file with --type.
    #[arg(long = "out", short = 'o', value_name = "PATH")]
    pub out: PathBuf,
    /// Build only these tiers of the recipe (repeatable).
    #[arg(long, value_name = "NAME")]
    pub tier: Vec<String>,
    /// Give every quantizable tensor the mix's base type (as llama-quantize --pure).
    #[arg(long)]
    pub pure: bool,
    /// Per-tensor type: REGEX=TYPE, first match wins, before the recipe's overrides (repeatable).
    #[arg(long = "override", value_name = "REGEX=TYPE")]
    pub overrides: Vec<String>,
    /// Allow requantizing a 4/5-bit GGUF (quality suffers).
    #[arg(long)]
    pub allow_requantize: bool,
    /// Worker threads (default: all cores).
    #[arg(long, short = 'j')]
    pub threads: Option<usize>,
    /// No progress output.
    #[arg(long, short = 'q')]
    pub quiet: bool,
    /// Print a JSON result on stdout instead of the table.
    #[arg(long)]
    pub json: bool,
    /// Choose types, check budgets and print the planned sizes; write nothing.
    #[arg(long)]
    pub dry_run: bool,
}

struct Job {
    tier: Option<String>,
    file: PathBuf,
    opts: QuantizeOptions,
    max_bytes: Option<u64>,
}

#[derive(Serialize)]
struct Output {
    tier: Option<String>,
    file: PathBuf,
    mix: String,
    size: u64,
    n_params: u64,
    bits_per_weight: f64,
    seconds: f64,
    types: Vec<(String, usize)>,
    fallbacks: Vec<Fallback>,
}

fn usage(e: impl Into<anyhow::Error>) -> anyhow::Error {
    coded(2, e)
}

pub fn run(a: Args) -> anyhow::Result<()> {
    let mut cli_overrides: Vec<Override> = Vec::new();
    for o in &a.overrides {
        cli_overrides.push(parse_override(o).map_err(usage)?);
    }
    let recipe = match &a.recipe {
        Some(p) => Some(Recipe::load(p)?),
        None => None,
    };
    if recipe.is_none() && a.ty.is_none() {
        return Err(usage(anyhow!(
            "nothing to build: pass --recipe FILE or --type TYPE\n  hint: slmpack quantize MODEL_DIR --type q4_k_m -o model.gguf"
        )));
    }
    if recipe.is_none() && !a.tier.is_empty() {
        return Err(usage(anyhow!("--tier needs --recipe")));
    }
    let single_ftype = match &a.ty {
        Some(t) => Some(t.parse::<Ftype>().map_err(usage)?),
        None => None,
    };
    if let Some(r) = &recipe {
        for t in &a.tier {
            r.tier(t).map_err(usage)?;
        }
    }

    let pool = {
        let mut b = rayon::ThreadPoolBuilder::new();
        if let Some(n) = a.threads {
            b = b.num_threads(n.max(1));
        }
        b.build().context("starting worker threads")?
    };
    pool.install(|| run_jobs(&a, recipe.as_ref(), single_ftype, cli_overrides))
}

fn run_jobs(
    a: &Args,
    recipe: Option<&Recipe>,
    single: Option<Ftype>,
    cli_overrides: Vec<Override>,
) -> anyhow::Result<()> {
    let input = Input::open(&a.input)?;
    let mut jobs = Vec::new();
    let out_dir: PathBuf;
    match (recipe, single) {
        (Some(r), _) => {
            out_dir = a.out.join(&r.model).join(&r.version);
            for t in &r.tiers {
                if !a.tier.is_empty() && !a.tier.contains(&t.name) {
                    continue;
                }
                let mut overrides = cli_overrides.clone();
                overrides.extend(t.overrides.iter().cloned());
                let mut opts = QuantizeOptions::new(t.ftype);
                opts.rules = TypeRules {
                    ftype: t.ftype,
                    pure: t.pure || a.pure,
                    overrides,
                };
                opts.allow_requantize = a.allow_requantize;
                opts.name = r.name.clone();
                opts.version = Some(r.version.clone());
                jobs.push(Job {
                    tier: Some(t.name.clone()),
                    file: out_dir.join(format!("{}.gguf", t.name)),
                    opts,
                    max_bytes: t.max_bytes,
                });
            }
        }
        (None, Some(f)) => {
            out_dir = match a.out.parent() {
                Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
                _ => PathBuf::from("."),
            };
            if a.out.is_dir() {
                return Err(usage(anyhow!(
                    "`{}` is a folder\n  hint: with --type, -o names the .gguf file to write",
                    a.out.display()
                )));
            }
            let mut opts = QuantizeOptions::new(f);
            opts.rules.pure = a.pure;
            opts.rules.overrides = cli_overrides;
            opts.allow_requantize = a.allow_requantize;
            jobs.push(Job {
                tier: None,
                file: a.out.clone(),
                opts,
                max_bytes: None,
            });
        }
        (None, None) => unreachable!("checked in run"),
    }

    // plan everything first: budgets and unsupported conversions fail before anything is written
    let mut plans: Vec<Plan> = Vec::with_capacity(jobs.len());
    for j in &jobs {
        let p = slmpack_convert::plan(&input, &j.opts)?;
        if let (Some(budget), Some(tier)) = (j.max_bytes, &j.tier) {
            if p.file_size > budget {
                return Err(coded(
                    UNMET,
                    ConvertError::Budget {
                        tier: tier.clone(),
                        size: p.file_size,
                        size_h: human_size(p.file_size),
                        budget,
                        budget_h: human_size(budget),
                    },
                ));
            }
        }
        plans.push(p);
    }
    if a.dry_run {
        let outputs: Vec<Output> = jobs
            .iter()
            .zip(&plans)
            .map(|(j, p)| {
                report_fallbacks(j.tier.as_deref(), &p.fallbacks);
                output_of(j, p, p.file_size, 0.0)
            })
            .collect();
        if a.json {
            let v = serde_json::json!({"input": a.input, "dry_run": true, "outputs": outputs});
            println!("{}", serde_json::to_string_pretty(&v)?);
        } else {
            print_table(&outputs);
            println!("dry run: nothing written");
        }
        return Ok(());
    }
    ensure_writable(&out_dir, recipe.is_some())?;

    let mut outputs = Vec::new();
    for (j, p) in jobs.iter().zip(&plans) {
        report_fallbacks(j.tier.as_deref(), &p.fallbacks);
        let prog = CliProgress::new(j.tier.clone().unwrap_or_else(|| "quantize".into()), a.quiet);
        let t0 = Instant::now();
        slmpack_convert::write(&input, p, &j.file, &prog)
            .with_context(|| format!("writing `{}`", j.file.display()))?;
        let secs = t0.elapsed().as_secs_f64();
        let size = std::fs::metadata(&j.file).map(|m| m.len()).unwrap_or(0);
        outputs.push(output_of(j, p, size, secs));
    }

    let mut build_json = None;
    if let Some(r) = recipe {
        let path = out_dir.join("build.json");
        let mut tiers: Vec<BuildTier> = Vec::new();
        // keep tiers built earlier (a --tier run) when model and version match
        let old = BuildJson::read(&path)
            .filter(|b| b.schema == 1 && b.model == r.model && b.version == r.version);
        for t in &r.tiers {
            if let Some(o) = outputs.iter().find(|o| o.tier.as_deref() == Some(&t.name)) {
                tiers.push(BuildTier {
                    name: t.name.clone(),
                    file: format!("{}.gguf", t.name),
                    mix: t.ftype.name().to_string(),
                    bits_per_weight: (o.bits_per_weight * 1000.0).round() / 1000.0,
                    size: o.size,
                    requires: t.requires.clone(),
                });
            } else if let Some(prev) = old
                .as_ref()
                .and_then(|b| b.tiers.iter().find(|x| x.name == t.name))
            {
                if out_dir.join(&prev.file).is_file() {
                    tiers.push(prev.clone());
                }
            }
        }
        let b = BuildJson {
            schema: 1,
            model: r.model.clone(),
            version: r.version.clone(),
            tiers,
        };
        b.write(&path)?;
        build_json = Some(path);
    }

    if a.json {
        let v = serde_json::json!({
            "input": a.input,
            "outputs": outputs,
            "build_json": build_json,
        });
        println!("{}", serde_json::to_string_pretty(&v)?);
    } else {
        print_table(&outputs);
        if let Some(p) = build_json {
            println!("wrote {}", p.display());
        }
    }
    Ok(())
}

fn output_of(j: &Job, p: &Plan, size: u64, seconds: f64) -> Output {
    let mut types: Vec<(String, usize)> = Vec::new();
    for t in &p.tensors {
        let k = t.ty.to_string();
        match types.iter_mut().find(|(n, _)| *n == k) {
            Some(e) => e.1 += 1,
            None => types.push((k, 1)),
        }
    }
    Output {
        tier: j.tier.clone(),
        file: j.file.clone(),
        mix: p.ftype.name().to_string(),
        size,
        n_params: p.n_params,
        bits_per_weight: p.bits_per_weight(),
        seconds,
        types,
        fallbacks: p.fallbacks.clone(),
    }
}

/// One warning line per kind of fallback (wanted type, used type, reason), naming the tensors:
/// all of them when there are a few, the first ones and a count otherwise (`--json` lists all).
fn report_fallbacks(tier: Option<&str>, fallbacks: &[Fallback]) {
    let mut groups: Vec<(&Fallback, Vec<&str>)> = Vec::new();
    for f in fallbacks {
        match groups
            .iter_mut()
            .find(|(g, _)| g.wanted == f.wanted && g.used == f.used && g.reason == f.reason)
        {
            Some((_, names)) => names.push(&f.tensor),
            None => groups.push((f, vec![&f.tensor])),
        }
    }
    let tier = tier.map(|t| format!("[{t}] ")).unwrap_or_default();
    for (f, names) in groups {
        let shown: Vec<String> = names.iter().take(4).map(|n| format!("`{n}`")).collect();
        let more = if names.len() > 4 {
            format!(" and {} more (--json lists them)", names.len() - 4)
        } else {
            String::new()
        };
        eprintln!(
            "warning: {tier}{} -> {} for {} tensor{} ({}): {}{more}",
            f.wanted,
            f.used,
            names.len(),
            if names.len() == 1 { "" } else { "s" },
            f.reason,
            shown.join(", ")
        );
    }
}

/// Create the output folder and prove it takes a file, before spending time quantizing.
fn ensure_writable(dir: &Path, create: bool) -> anyhow::Result<()> {
    let nw = |source: std::io::Error| ConvertError::NotWritable {
        path: dir.to_path_buf(),
        source,
    };
    if create {
        std::fs::create_dir_all(dir).map_err(nw)?;
    } else if !dir.is_dir() {
        return Err(nw(std::io::Error::new(
            std::io::ErrorKind::NotFound,
            "no such folder",
        ))
        .into());
    }
    tempfile::Builder::new()
        .prefix(".slmpack-probe-")
        .tempfile_in(dir)
        .map_err(nw)?;
    Ok(())
}

fn print_table(outputs: &[Output]) {
    let rows: Vec<[String; 5]> = outputs
        .iter()
        .map(|o| {
            [
                o.tier.clone().unwrap_or_else(|| "-".into()),
                o.file.display().to_string(),
                format!("{:.1} MB", o.size as f64 / 1e6),
                format!("{:.2}", o.bits_per_weight),
                format!("{:.1}", o.seconds),
            ]
        })
        .collect();
    let head = ["tier", "file", "size", "bpw", "seconds"];
    let mut w = head.map(|h| h.len());
    for r in &rows {
        for (i, c) in r.iter().enumerate() {
            w[i] = w[i].max(c.len());
        }
    }
    println!(
        "{:<w0$}  {:<w1$}  {:>w2$}  {:>w3$}  {:>w4$}",
        head[0],
        head[1],
        head[2],
        head[3],
        head[4],
        w0 = w[0],
        w1 = w[1],
        w2 = w[2],
        w3 = w[3],
        w4 = w[4]
    );
    for r in rows {
        println!(
            "{:<w0$}  {:<w1$}  {:>w2$}  {:>w3$}  {:>w4$}",
            r[0],
            r[1],
            r[2],
            r[3],
            r[4],
            w0 = w[0],
            w1 = w[1],
            w2 = w[2],
            w3 = w[3],
            w4 = w[4]
        );
    }
}

/// An indicatif bar on a terminal, plain `[tier] n/N tensor` lines otherwise.
struct CliProgress {
    tier: String,
    quiet: bool,
    bar: Option<ProgressBar>,
    total: AtomicUsize,
}

impl CliProgress {
    fn new(tier: String, quiet: bool) -> Self {
        let bar = (!quiet && std::io::stderr().is_terminal()).then(|| {
            let b = ProgressBar::new(0).with_prefix(tier.clone());
            if let Ok(s) = ProgressStyle::with_template(
                "{prefix:>8} [{bar:30}] {bytes}/{total_bytes} {elapsed} {msg}",
            ) {
                b.set_style(s.progress_chars("=> "));
            }
            b
        });
        CliProgress {
            tier,
            quiet,
            bar,
            total: AtomicUsize::new(0),
        }
    }
}

impl Progress for CliProgress {
    fn start(&self, n_tensors: usize, total_bytes: u64) {
        self.total.store(n_tensors, Ordering::Relaxed);
        if let Some(b) = &self.bar {
            b.set_length(total_bytes);
        }
    }

    fn tensor_done(&self, index: usize, name: &str, ty: GgmlType, bytes: u64) {
        if let Some(b) = &self.bar {
            b.set_message(format!("{name} {ty}"));
            b.inc(bytes);
        } else if !self.quiet {
            eprintln!(
                "[{}] {}/{} {name} {ty}",
                self.tier,
                index + 1,
                self.total.load(Ordering::Relaxed)
            );
        }
    }

    fn finish(&self) {
        if let Some(b) = &self.bar {
            b.finish_and_clear();
        }
    }
}
