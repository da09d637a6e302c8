//! Exporters: `report.json` (the full record), `report.csv` (one row per metric) and
//! `report.md` (summary tables).

use crate::error::{BenchError, Result};
use crate::report::{Metric, Report};

pub trait Exporter {
    /// File name the export is written to, e.g. `report.csv`.
    fn file_name(&self) -> &'static str;
    fn export(&self, report: &Report) -> Result<String>;
}

pub struct Json;
pub struct Csv;
pub struct Markdown;

/// The three exporters, in the order they are written.
pub fn all() -> Vec<Box<dyn Exporter>> {
    vec![Box::new(Json), Box::new(Csv), Box::new(Markdown)]
}

impl Exporter for Json {
    fn file_name(&self) -> &'static str {
        "report.json"
    }
    fn export(&self, report: &Report) -> Result<String> {
        let mut s = serde_json::to_string_pretty(report)
            .map_err(|e| BenchError::Invalid(format!("cannot serialize the report: {e}")))?;
        s.push('\n');
        Ok(s)
    }
}

fn csv_field(s: &str) -> String {
    if s.contains([',', '"', '\n']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_string()
    }
}

pub const CSV_HEADER: &str = "tier,scenario,workload,metric,value,err,unit,higher_is_better";

impl Exporter for Csv {
    fn file_name(&self) -> &'static str {
        "report.csv"
    }
    fn export(&self, report: &Report) -> Result<String> {
        let mut s = String::from(CSV_HEADER);
        s.push('\n');
        for m in report.metrics() {
            s.push_str(&format!(
                "{},{},{},{},{},{},{},{}\n",
                csv_field(&m.tier),
                csv_field(&m.scenario),
                csv_field(&m.workload),
                csv_field(&m.metric),
                m.value,
                m.err,
                m.unit,
                m.higher_is_better
            ));
        }
        Ok(s)
    }
}

/// A number with a sensible number of digits.
pub fn fmt_num(x: f64) -> String {
    let a = x.abs();
    if a == 0.0 {
        "0".into()
    } else if a >= 1000.0 {
        format!("{x:.0}")
    } else if a >= 10.0 {
        format!("{x:.2}")
    } else if a >= 0.01 {
        format!("{x:.4}")
    } else {
        format!("{x:.3e}")
    }
}

fn cell(m: &Metric) -> String {
    if m.err > 0.0 {
        format!("{} ± {}", fmt_num(m.value), fmt_num(m.err))
    } else {
        fmt_num(m.value)
    }
}

fn md_escape(s: &str) -> String {
    s.replace('|', "\\|")
}

impl Exporter for Markdown {
    fn file_name(&self) -> &'static str {
        "report.md"
    }
    fn export(&self, report: &Report) -> Result<String> {
        let m = &report.machine;
        let mut s = format!(
            "# slmpack bench: {}\n\n- machine: {} ({} cores, {} threads used, kernels {}), {} {}\n- slmpack {} (commit {}), runner `{}`\n- energy: {}\n",
            report.scenarios.join(", "),
            m.cpu, m.cores_available, m.threads_used, m.isa, m.os, m.arch,
            m.slmpack_version, m.git_commit, report.runner, report.energy_method,
        );
        if let Some(r) = &report.reference_tier {
            s.push_str(&format!("- KL-divergence reference tier: `{r}`\n"));
        }
        s.push_str("\n## Tiers\n\n| tier | bits/weight | file MB | load s | peak RSS MB | mapped MB | KV MB (n_ctx) | sha256 |\n|---|---|---|---|---|---|---|---|\n");
        for t in &report.tiers {
            s.push_str(&format!(
                "| {} | {} | {} | {} | {} | {} | {} ({}) | `{}` |\n",
                md_escape(&t.name),
                t.bits_per_weight.map_or("-".into(), fmt_num),
                fmt_num(t.file_bytes as f64 / 1e6),
                fmt_num(t.load_s),
                t.peak_rss_bytes
                    .map_or("-".into(), |b| fmt_num(b as f64 / 1e6)),
                fmt_num(t.mapped_bytes as f64 / 1e6),
                fmt_num(t.kv_bytes as f64 / 1e6),
                t.n_ctx,
                &t.sha256[..t.sha256.len().min(16)],
            ));
        }
        // One table per workload: rows are tiers, columns its metrics.
        let metrics = report.metrics();
        let mut groups: Vec<(String, String)> = Vec::new();
        for x in &metrics {
            if x.scenario != "-" && !groups.contains(&(x.scenario.clone(), x.workload.clone())) {
                groups.push((x.scenario.clone(), x.workload.clone()));
            }
        }
        for (sc, wl) in groups {
            let rows: Vec<&Metric> = metrics
                .iter()
                .filter(|x| x.scenario == sc && x.workload == wl)
                .collect();
            let mut cols: Vec<(String, &str)> = Vec::new();
            for x in &rows {
                if !cols.iter().any(|c| c.0 == x.metric) {
                    cols.push((x.metric.clone(), x.unit));
                }
            }
            s.push_str(&format!(
                "\n## {} / {}\n\n| tier |",
                md_escape(&sc),
                md_escape(&wl)
            ));
            for (c, u) in &cols {
                let arrow = if rows.iter().any(|x| &x.metric == c && x.higher_is_better) {
                    "↑"
                } else {
                    "↓"
                };
                if u.is_empty() {
                    s.push_str(&format!(" {c} {arrow} |"));
                } else {
                    s.push_str(&format!(" {c} ({u}) {arrow} |"));
                }
            }
            s.push_str("\n|---|");
            s.push_str(&"---|".repeat(cols.len()));
            s.push('\n');
            for t in &report.tiers {
                s.push_str(&format!("| {} |", md_escape(&t.name)));
                for (c, _) in &cols {
                    let v = rows.iter().find(|x| x.tier == t.name && &x.metric == c);
                    s.push_str(&format!(" {} |", v.map_or("-".into(), |v| cell(v))));
                }
                s.push('\n');
            }
        }
        s.push_str("\nValues are mean ± sample sd for speeds, ± one standard error for perplexity, KLD and accuracy; latencies are percentiles (linear interpolation). Full samples in `report.json`.\n");
        Ok(s)
    }
}
