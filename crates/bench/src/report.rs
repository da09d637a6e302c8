//! The report: the full record of a bench run, every sample kept. Serialized as `report.json`;
//! CSV and Markdown are views of [`Report::metrics`].

use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::error::{BenchError, Result};
use crate::machine::Machine;
use crate::stats::{Accuracy, KldStats, Percentiles, PplEstimate, Summary};

pub const REPORT_SCHEMA: u32 = 1;
/// Largest report read back (compare).
pub const MAX_REPORT_BYTES: u64 = 512 << 20;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Report {
    pub schema: u32,
    pub created_unix: u64,
    pub machine: Machine,
    pub runner: String,
    /// How energy was obtained: `rapl` or `estimate(<profile>)`.
    pub energy_method: String,
    /// Scenario names, in run order.
    pub scenarios: Vec<String>,
    /// The tier KL-divergence is measured against (the highest tier), when any `kld` ran.
    pub reference_tier: Option<String>,
    pub tiers: Vec<TierReport>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TierReport {
    pub name: String,
    pub file: String,
    pub file_bytes: u64,
    pub sha256: String,
    pub bits_per_weight: Option<f64>,
    pub load_s: f64,
    pub mapped_bytes: u64,
    pub kv_bytes: u64,
    pub n_ctx: usize,
    pub n_params: u64,
    /// Peak resident set size while this tier ran (VmHWM), when readable.
    pub peak_rss_bytes: Option<u64>,
    /// Whether the peak was reset before the tier (otherwise it includes earlier tiers).
    pub peak_rss_reset: bool,
    pub workloads: Vec<WorkloadReport>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WorkloadReport {
    pub scenario: String,
    pub name: String,
    pub kind: String,
    pub duration_s: f64,
    pub result: WorkloadResult,
    pub energy: Energy,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Energy {
    pub method: String,
    pub joules: f64,
    /// Tokens processed (prompt and generated).
    pub tokens: u64,
    pub joules_per_token: f64,
    /// Chat: per answer.
    pub joules_per_answer: Option<f64>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum WorkloadResult {
    Speed(SpeedResult),
    Chat(ChatResult),
    Text(TextResult),
    Task(TaskResult),
}

/// pp / tg: one sample per repetition.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SpeedResult {
    pub n_tokens: usize,
    pub depth: usize,
    pub warmup: usize,
    pub samples_s: Vec<f64>,
    pub samples_tps: Vec<f64>,
    /// Mean ± sample sd of `samples_tps` (llama-bench's avg_ts / stddev_ts).
    pub tps: Summary,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChatResult {
    pub queries: usize,
    pub prompt_tokens: Vec<usize>,
    pub output_tokens: Vec<usize>,
    /// Prompt in → first output token, seconds.
    pub ttft_s: Vec<f64>,
    /// (end − first token) / (output tokens − 1), seconds; queries with one token omitted.
    pub tpot_s: Vec<f64>,
    pub e2e_s: Vec<f64>,
    pub ttft: Option<Percentiles>,
    pub tpot: Option<Percentiles>,
    pub e2e: Option<Percentiles>,
    pub prefill_tps: Summary,
    pub decode_tps: Summary,
    /// The first answer, for a glance at quality.
    pub sample_answer: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TextResult {
    pub file: String,
    pub n_ctx: usize,
    pub chunks: usize,
    pub ppl: PplEstimate,
    /// Against the reference tier (`kld` workloads).
    pub kld: Option<KldStats>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TaskResult {
    pub file: String,
    pub acc: Accuracy,
    pub acc_norm: Accuracy,
    /// Per item: gold index and the indices picked by acc and acc_norm.
    pub gold: Vec<usize>,
    pub pred: Vec<usize>,
    pub pred_norm: Vec<usize>,
}

/// One number of the report, with its error bar and direction.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Metric {
    pub tier: String,
    pub scenario: String,
    pub workload: String,
    pub metric: String,
    pub value: f64,
    /// One-sided error bar (sd for speed samples, standard error for estimates, 0 if none).
    pub err: f64,
    pub unit: &'static str,
    pub higher_is_better: bool,
}

impl Metric {
    pub fn key(&self) -> String {
        format!(
            "{}/{}/{}/{}",
            self.tier, self.scenario, self.workload, self.metric
        )
    }
}

impl Report {
    pub fn load(path: &Path) -> Result<Report> {
        let text = crate::read_capped_string(path, MAX_REPORT_BYTES)?;
        let r: Report = serde_json::from_str(&text).map_err(|e| BenchError::Report {
            path: path.into(),
            msg: format!("{e}\n  hint: give a `report.json` written by `slmpack bench`"),
        })?;
        if r.schema != REPORT_SCHEMA {
            return Err(BenchError::Report {
                path: path.into(),
                msg: format!(
                    "schema {} is not supported (expected {REPORT_SCHEMA})",
                    r.schema
                ),
            });
        }
        Ok(r)
    }

    /// Every comparable number, flattened.
    pub fn metrics(&self) -> Vec<Metric> {
        let mut out = Vec::new();
        for t in &self.tiers {
            let mut m = |scenario: &str,
                         workload: &str,
                         metric: &str,
                         value: f64,
                         err: f64,
                         unit: &'static str,
                         hib: bool| {
                if value.is_finite() {
                    out.push(Metric {
                        tier: t.name.clone(),
                        scenario: scenario.into(),
                        workload: workload.into(),
                        metric: metric.into(),
                        value,
                        err: if err.is_finite() { err } else { 0.0 },
                        unit,
                        higher_is_better: hib,
                    })
                }
            };
            m(
                "-",
                "-",
                "file_mb",
                t.file_bytes as f64 / 1e6,
                0.0,
                "MB",
                false,
            );
            m("-", "-", "load_s", t.load_s, 0.0, "s", false);
            if let Some(rss) = t.peak_rss_bytes {
                m("-", "-", "peak_rss_mb", rss as f64 / 1e6, 0.0, "MB", false);
            }
            m(
                "-",
                "-",
                "mapped_mb",
                t.mapped_bytes as f64 / 1e6,
                0.0,
                "MB",
                false,
            );
            m("-", "-", "kv_mb", t.kv_bytes as f64 / 1e6, 0.0, "MB", false);
            for w in &t.workloads {
                let (s, n) = (w.scenario.as_str(), w.name.as_str());
                match &w.result {
                    WorkloadResult::Speed(r) => {
                        m(s, n, "tps", r.tps.mean, r.tps.sd, "t/s", true);
                    }
                    WorkloadResult::Chat(r) => {
                        if let Some(p) = r.ttft {
                            m(s, n, "ttft_p50_ms", p.p50 * 1e3, 0.0, "ms", false);
                            m(s, n, "ttft_p90_ms", p.p90 * 1e3, 0.0, "ms", false);
                            m(s, n, "ttft_p99_ms", p.p99 * 1e3, 0.0, "ms", false);
                        }
                        if let Some(p) = r.tpot {
                            m(s, n, "tpot_p50_ms", p.p50 * 1e3, 0.0, "ms", false);
                            m(s, n, "tpot_p90_ms", p.p90 * 1e3, 0.0, "ms", false);
                            m(s, n, "tpot_p99_ms", p.p99 * 1e3, 0.0, "ms", false);
                        }
                        if let Some(p) = r.e2e {
                            m(s, n, "e2e_p50_ms", p.p50 * 1e3, 0.0, "ms", false);
                            m(s, n, "e2e_p90_ms", p.p90 * 1e3, 0.0, "ms", false);
                        }
                        m(
                            s,
                            n,
                            "prefill_tps",
                            r.prefill_tps.mean,
                            r.prefill_tps.sd,
                            "t/s",
                            true,
                        );
                        m(
                            s,
                            n,
                            "decode_tps",
                            r.decode_tps.mean,
                            r.decode_tps.sd,
                            "t/s",
                            true,
                        );
                    }
                    WorkloadResult::Text(r) => {
                        m(s, n, "ppl", r.ppl.ppl, r.ppl.err, "", false);
                        if let Some(k) = &r.kld {
                            m(s, n, "kld_mean", k.mean_kld, k.mean_kld_err, "nats", false);
                            m(s, n, "kld_p99", k.kld_p99, 0.0, "nats", false);
                            m(s, n, "rms_dp_pct", k.rms_dp_pct, 0.0, "%", false);
                            m(
                                s,
                                n,
                                "same_top_pct",
                                k.same_top_pct,
                                k.same_top_err_pct,
                                "%",
                                true,
                            );
                            m(s, n, "delta_ppl", k.delta_ppl, k.delta_ppl_err, "", false);
                        }
                    }
                    WorkloadResult::Task(r) => {
                        m(s, n, "acc", r.acc.acc, r.acc.stderr, "", true);
                        m(
                            s,
                            n,
                            "acc_norm",
                            r.acc_norm.acc,
                            r.acc_norm.stderr,
                            "",
                            true,
                        );
                    }
                }
                m(
                    s,
                    n,
                    "j_per_token",
                    w.energy.joules_per_token,
                    0.0,
                    "J",
                    false,
                );
                if let Some(j) = w.energy.joules_per_answer {
                    m(s, n, "j_per_answer", j, 0.0, "J", false);
                }
            }
        }
        out
    }
}
