//! Runs scenarios over tiers and builds the [`Report`].
//!
//! Conventions (see also [`crate::stats`]):
//! * pp / tg follow llama-bench: random token ids, `depth` tokens put in the KV cache untimed
//!   first, `warmup` untimed runs, then at least `repetitions` timed runs (more while less than
//!   `min_duration_s` was measured); each run is one tokens/s sample.
//! * chat follows MLPerf's LLM metrics: TTFT = prompt submitted → first token chosen (prefill
//!   and the first sampling), TPOT = (end − first token) / decode steps, end-to-end = submit → last
//!   token. Greedy decoding; queries = max(repetitions × prompts, min_queries).
//! * perplexity / kld follow llama-perplexity: the text is tokenized once (BOS first if the
//!   model adds one), cut into chunks of `n_ctx`, the first token of each chunk is replaced by
//!   BOS when the model uses one, and only the second half of each chunk is scored (position
//!   `j` predicts token `j + 1` for `j` in `n_ctx/2 .. n_ctx-1`).
//! * classify / multiple_choice follow lm-eval-harness: each choice is scored by the summed
//!   log-likelihood of its continuation tokens (continuation = tokens of context+choice after
//!   the context's; trailing spaces of the context move to the continuation); `acc` picks the
//!   largest, `acc_norm` the largest per byte of the choice text.
//! * energy: tokens processed = prompt + generated; per answer = joules / queries.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use crate::energy::{EnergyMeter, Work};
use crate::error::{BenchError, Result, RunnerError};
use crate::machine::{Machine, MemoryProbe};
use crate::report::*;
use crate::runner::{Clock, LoadOptions, ModelHandle, ModelInfo, Runner};
use crate::scenario::{self, Scenario, Workload};
use crate::stats::{self, Accuracy, KldAccumulator, Percentiles, Perplexity, Summary};

/// A model file to benchmark.
#[derive(Debug, Clone, PartialEq)]
pub struct TierSpec {
    pub name: String,
    pub path: PathBuf,
    pub bits_per_weight: Option<f64>,
}

/// Progress display (a terminal bar in the CLI, nothing in tests).
pub trait Progress {
    fn start(&mut self, label: &str, total: u64);
    fn inc(&mut self, n: u64);
    fn finish(&mut self);
}

pub struct NoProgress;

impl Progress for NoProgress {
    fn start(&mut self, _: &str, _: u64) {}
    fn inc(&mut self, _: u64) {}
    fn finish(&mut self) {}
}

/// Everything the harness measures with.
pub struct Bench<'a> {
    pub runner: &'a dyn Runner,
    pub clock: &'a dyn Clock,
    pub energy: &'a mut dyn EnergyMeter,
    pub memory: &'a dyn MemoryProbe,
    pub progress: &'a mut dyn Progress,
    pub slmpack_version: String,
    pub created_unix: u64,
    /// Overrides the scenarios' `threads`.
    pub threads: Option<usize>,
}

/// Largest JSONL / text / prompt file read.
pub const MAX_DATA_BYTES: u64 = 64 << 20;
pub const MAX_ITEMS: usize = 100_000;
/// Largest reference log-probability cache kept for `kld` (floats).
pub const MAX_KLD_FLOATS: usize = 1 << 28;

/// Reference distributions of a `kld` workload: token ids and scored log-softmax rows.
struct RefLogits {
    tokens: Vec<u32>,
    rows: Vec<f32>,
}

fn rerr(tier: &str, workload: &str) -> impl Fn(RunnerError) -> BenchError {
    let tier = tier.to_string();
    let workload = workload.to_string();
    move |e| BenchError::Workload {
        tier: tier.clone(),
        workload: workload.clone(),
        msg: e.to_string(),
    }
}

fn werr(tier: &str, workload: &str, msg: impl Into<String>) -> BenchError {
    BenchError::Workload {
        tier: tier.into(),
        workload: workload.into(),
        msg: msg.into(),
    }
}

/// Deterministic pseudo-random token ids (xorshift), like llama-bench's `rand() % n_vocab`.
fn random_tokens(seed: u64, n: usize, n_vocab: usize) -> Vec<u32> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x % n_vocab as u64) as u32
        })
        .collect()
}

fn prefill_work(info: &ModelInfo, n: usize, pos: usize) -> Work {
    let macs = info.n_params as f64 * n as f64;
    Work {
        dram_bytes: info.weight_bytes as f64 + (info.kv_bytes_per_token * (pos + n) as u64) as f64,
        int8_macs: if info.int8_matmul { macs } else { 0.0 },
        f32_macs: if info.int8_matmul { 0.0 } else { macs },
    }
}

/// Read a data file with a size cap.
pub fn read_data(path: &Path) -> Result<String> {
    crate::read_capped_string(path, MAX_DATA_BYTES)
}

/// The context size a scenario needs (an upper bound: a token is at least one byte).
fn needed_ctx(s: &Scenario) -> Result<usize> {
    let mut n = 64usize;
    for w in &s.workloads {
        let need = match w {
            Workload::Pp(p) => p.depth + p.n_prompt,
            Workload::Tg(t) => t.depth + t.n_gen + 1,
            Workload::Chat(c) => {
                let longest = chat_prompts(s, c)?
                    .iter()
                    .map(|p| p.len())
                    .max()
                    .unwrap_or(0);
                c.prefix.len() + longest + 128 + c.max_tokens
            }
            Workload::Perplexity(t) | Workload::Kld(t) => t.n_ctx,
            Workload::Classify(c) => {
                let items = classify_items(s, c)?;
                let longest = items.iter().map(|i| i.0.len()).max().unwrap_or(0);
                let label = c.labels.iter().map(|l| l.text.len()).max().unwrap_or(0);
                c.template.len() + longest + label + 8
            }
            Workload::MultipleChoice(m) => {
                let items = mc_items(s, m)?;
                let longest = items
                    .iter()
                    .map(|i| i.0.len() + i.1.iter().map(|c| c.len()).max().unwrap_or(0))
                    .max()
                    .unwrap_or(0);
                m.template.len() + longest + 8
            }
        };
        n = n.max(need);
    }
    Ok(n.min(scenario::MAX_TOKENS))
}

fn chat_prompts(s: &Scenario, c: &scenario::Chat) -> Result<Vec<String>> {
    if let Some(f) = &c.prompts_file {
        let p = s.resolve(f);
        let text = read_data(&p)?;
        let v: Vec<String> = text
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .map(String::from)
            .take(MAX_ITEMS)
            .collect();
        if v.is_empty() {
            return Err(BenchError::Data {
                path: p,
                line: 1,
                msg: "no prompts (one per line)".into(),
            });
        }
        Ok(v)
    } else {
        Ok(c.prompts.clone())
    }
}

fn jsonl(path: &Path) -> Result<Vec<(usize, serde_json::Value)>> {
    let text = read_data(path)?;
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        if out.len() >= MAX_ITEMS {
            return Err(BenchError::Data {
                path: path.into(),
                line: i + 1,
                msg: format!("more than {MAX_ITEMS} items"),
            });
        }
        let v = serde_json::from_str(line).map_err(|e| BenchError::Data {
            path: path.into(),
            line: i + 1,
            msg: e.to_string(),
        })?;
        out.push((i + 1, v));
    }
    if out.is_empty() {
        return Err(BenchError::Data {
            path: path.into(),
            line: 1,
            msg: "no items".into(),
        });
    }
    Ok(out)
}

/// (utterance, gold label index)
fn classify_items(s: &Scenario, c: &scenario::Classify) -> Result<Vec<(String, usize)>> {
    let p = s.resolve(&c.file);
    let mut out = Vec::new();
    for (line, v) in jsonl(&p)? {
        let bad = |msg: String| BenchError::Data {
            path: p.clone(),
            line,
            msg,
        };
        let text = v.get("text").and_then(|t| t.as_str());
        let label = v.get("label").and_then(|t| t.as_str());
        let (Some(text), Some(label)) = (text, label) else {
            return Err(bad("expected {\"text\": string, \"label\": string}".into()));
        };
        let gold = c.labels.iter().position(|l| l.label == label).ok_or_else(|| {
            bad(format!(
                "label `{label}` is not in the scenario's `labels`\n  hint: add it to the workload's `labels`"
            ))
        })?;
        out.push((text.to_string(), gold));
    }
    if let Some(n) = c.limit {
        out.truncate(n);
    }
    Ok(out)
}

/// (query, choices, gold)
fn mc_items(
    s: &Scenario,
    m: &scenario::MultipleChoice,
) -> Result<Vec<(String, Vec<String>, usize)>> {
    let p = s.resolve(&m.file);
    let mut out = Vec::new();
    for (line, v) in jsonl(&p)? {
        let bad = |msg: &str| BenchError::Data {
            path: p.clone(),
            line,
            msg: msg.into(),
        };
        let query = v.get("query").and_then(|t| t.as_str());
        let choices: Option<Vec<String>> =
            v.get("choices").and_then(|c| c.as_array()).and_then(|a| {
                a.iter()
                    .map(|c| c.as_str().map(String::from))
                    .collect::<Option<Vec<_>>>()
            });
        let gold = v.get("gold").and_then(|g| g.as_u64());
        let (Some(query), Some(choices), Some(gold)) = (query, choices, gold) else {
            return Err(bad(
                "expected {\"query\": string, \"choices\": [string], \"gold\": index}",
            ));
        };
        if choices.len() < 2 || gold as usize >= choices.len() {
            return Err(bad(
                "need at least two choices and `gold` < number of choices",
            ));
        }
        out.push((query.to_string(), choices, gold as usize));
    }
    if let Some(n) = m.limit {
        out.truncate(n);
    }
    Ok(out)
}

fn sha256_file(path: &Path) -> Result<String> {
    use sha2::{Digest, Sha256};
    use std::io::Read;
    let mut f = std::fs::File::open(path).map_err(|e| BenchError::io(path, e))?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f.read(&mut buf).map_err(|e| BenchError::io(path, e))?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Ok(hex::encode(h.finalize()))
}

/// The tier others are compared against: `name` if given, else the highest bits per weight
/// (then the largest file).
pub fn reference_tier(tiers: &[TierSpec], name: Option<&str>) -> Result<usize> {
    if let Some(n) = name {
        return tiers.iter().position(|t| t.name == n).ok_or_else(|| {
            BenchError::Invalid(format!(
                "reference tier `{n}` is not among the tiers ({})",
                tiers
                    .iter()
                    .map(|t| format!("`{}`", t.name))
                    .collect::<Vec<_>>()
                    .join(", ")
            ))
        });
    }
    let size = |t: &TierSpec| std::fs::metadata(&t.path).map(|m| m.len()).unwrap_or(0);
    (0..tiers.len())
        .max_by(|&a, &b| {
            let (ta, tb) = (&tiers[a], &tiers[b]);
            ta.bits_per_weight
                .unwrap_or(0.0)
                .total_cmp(&tb.bits_per_weight.unwrap_or(0.0))
                .then(size(ta).cmp(&size(tb)))
                .then(b.cmp(&a))
        })
        .ok_or_else(|| BenchError::Invalid("no tiers to benchmark".into()))
}

impl Bench<'_> {
    /// Run every scenario on every tier.
    pub fn run(
        &mut self,
        tiers: &[TierSpec],
        scenarios: &[Scenario],
        reference: Option<&str>,
    ) -> Result<Report> {
        let r = reference_tier(tiers, reference)?;
        let has_kld = scenarios
            .iter()
            .any(|s| s.workloads.iter().any(|w| matches!(w, Workload::Kld(_))));
        let mut n_ctx = 64;
        for s in scenarios {
            n_ctx = n_ctx.max(needed_ctx(s)?);
        }
        let threads = self
            .threads
            .or_else(|| scenarios.iter().find_map(|s| s.threads));
        let opts = LoadOptions { n_ctx, threads };
        let mut order: Vec<usize> = vec![r];
        order.extend((0..tiers.len()).filter(|&i| i != r));
        let mut cache: HashMap<String, RefLogits> = HashMap::new();
        let mut reports: Vec<Option<TierReport>> = vec![None; tiers.len()];
        let mut isa = String::from("unknown");
        for &i in &order {
            let t = self.run_tier(&tiers[i], scenarios, &opts, i == r, &mut cache, &mut isa)?;
            reports[i] = Some(t);
        }
        let threads_used = threads.unwrap_or_else(|| {
            std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(1)
        });
        Ok(Report {
            schema: REPORT_SCHEMA,
            created_unix: self.created_unix,
            machine: Machine::detect(&self.slmpack_version, threads_used, &isa),
            runner: self.runner.name(),
            energy_method: self.energy.method(),
            scenarios: scenarios.iter().map(|s| s.name.clone()).collect(),
            reference_tier: has_kld.then(|| tiers[r].name.clone()),
            tiers: reports
                .into_iter()
                .map(|t| t.expect("every tier ran"))
                .collect(),
        })
    }

    fn run_tier(
        &mut self,
        tier: &TierSpec,
        scenarios: &[Scenario],
        opts: &LoadOptions,
        is_ref: bool,
        cache: &mut HashMap<String, RefLogits>,
        isa: &mut String,
    ) -> Result<TierReport> {
        let meta = std::fs::metadata(&tier.path).map_err(|e| BenchError::io(&tier.path, e))?;
        let sha256 = sha256_file(&tier.path)?;
        let reset = self.memory.reset_peak();
        let t_load = self.clock.now();
        let mut out: Option<TierReport> = None;
        let runner = self.runner;
        runner.with_model(&tier.path, opts, &mut |h: &mut dyn ModelHandle| {
            let load_s = self.clock.now() - t_load;
            let info = h.info();
            *isa = info.isa.clone();
            let mut workloads = Vec::new();
            for s in scenarios {
                for w in &s.workloads {
                    let label = format!("{} {}/{}", tier.name, s.name, w.name());
                    let start = self.clock.now();
                    let (result, work_j) =
                        self.run_workload(h, &tier.name, s, w, is_ref, cache, &label)?;
                    workloads.push(WorkloadReport {
                        scenario: s.name.clone(),
                        name: w.name().into(),
                        kind: w.kind().into(),
                        duration_s: self.clock.now() - start,
                        result,
                        energy: work_j,
                    });
                }
            }
            out = Some(TierReport {
                name: tier.name.clone(),
                file: tier.path.display().to_string(),
                file_bytes: meta.len(),
                sha256: sha256.clone(),
                bits_per_weight: tier.bits_per_weight,
                load_s,
                mapped_bytes: info.mapped_bytes,
                kv_bytes: info.kv_bytes,
                n_ctx: h.n_ctx(),
                n_params: info.n_params,
                peak_rss_bytes: None,
                peak_rss_reset: reset,
                workloads,
            });
            Ok(())
        })?;
        let mut t =
            out.ok_or_else(|| werr(&tier.name, "-", "the runner did not load the model"))?;
        t.peak_rss_bytes = self.memory.peak_rss();
        Ok(t)
    }

    #[allow(clippy::too_many_arguments)]
    fn run_workload(
        &mut self,
        h: &mut dyn ModelHandle,
        tier: &str,
        s: &Scenario,
        w: &Workload,
        is_ref: bool,
        cache: &mut HashMap<String, RefLogits>,
        label: &str,
    ) -> Result<(WorkloadResult, Energy)> {
        let name = w.name();
        let info = h.info();
        let mut acc = EnergyAcc::default();
        let result = match w {
            Workload::Pp(p) => WorkloadResult::Speed(self.speed(
                h, tier, s, name, p.n_prompt, p.depth, false, &info, &mut acc, label,
            )?),
            Workload::Tg(t) => WorkloadResult::Speed(self.speed(
                h, tier, s, name, t.n_gen, t.depth, true, &info, &mut acc, label,
            )?),
            Workload::Chat(c) => {
                WorkloadResult::Chat(self.chat(h, tier, s, c, &info, &mut acc, label)?)
            }
            Workload::Perplexity(t) => {
                WorkloadResult::Text(self.text(h, tier, s, t, None, &info, &mut acc, label)?)
            }
            Workload::Kld(t) => {
                let key = format!("{}/{}", s.name, t.name);
                WorkloadResult::Text(self.text(
                    h,
                    tier,
                    s,
                    t,
                    Some((key, is_ref, cache)),
                    &info,
                    &mut acc,
                    label,
                )?)
            }
            Workload::Classify(c) => {
                let items = classify_items(s, c)?;
                let choices: Vec<String> = c.labels.iter().map(|l| l.text.clone()).collect();
                let items: Vec<(String, Vec<String>, usize)> = items
                    .into_iter()
                    .map(|(text, gold)| {
                        (c.template.replace("{text}", &text), choices.clone(), gold)
                    })
                    .collect();
                WorkloadResult::Task(
                    self.task(h, tier, name, &c.file, &items, &info, &mut acc, label)?,
                )
            }
            Workload::MultipleChoice(m) => {
                let items: Vec<_> = mc_items(s, m)?
                    .into_iter()
                    .map(|(q, ch, g)| (m.template.replace("{query}", &q), ch, g))
                    .collect();
                WorkloadResult::Task(
                    self.task(h, tier, name, &m.file, &items, &info, &mut acc, label)?,
                )
            }
        };
        let tokens = acc.tokens;
        Ok((
            result,
            Energy {
                method: self.energy.method(),
                joules: acc.joules,
                tokens,
                joules_per_token: if tokens > 0 {
                    acc.joules / tokens as f64
                } else {
                    f64::NAN
                },
                joules_per_answer: acc.answers.map(|n| {
                    if n > 0 {
                        acc.joules / n as f64
                    } else {
                        f64::NAN
                    }
                }),
            },
        ))
    }

    fn measure_begin(&mut self) -> Result<()> {
        self.energy.begin()
    }

    fn measure_end(&mut self, work: &Work, tokens: u64, acc: &mut EnergyAcc) -> Result<()> {
        acc.joules += self.energy.end(work)?;
        acc.tokens += tokens;
        Ok(())
    }

    fn go_on(&self, s: &Scenario, done: usize, measured_s: f64) -> bool {
        done < s.repetitions || (measured_s < s.min_duration_s && done < scenario::MAX_REPETITIONS)
    }

    #[allow(clippy::too_many_arguments)]
    fn speed(
        &mut self,
        h: &mut dyn ModelHandle,
        tier: &str,
        s: &Scenario,
        name: &str,
        n: usize,
        depth: usize,
        generate: bool,
        info: &ModelInfo,
        acc: &mut EnergyAcc,
        label: &str,
    ) -> Result<SpeedResult> {
        let e = rerr(tier, name);
        let n_vocab = h.n_vocab();
        if depth + n + usize::from(generate) > h.n_ctx() {
            return Err(werr(
                tier,
                name,
                format!("depth + tokens exceeds n_ctx {}", h.n_ctx()),
            ));
        }
        self.progress
            .start(label, (s.warmup + s.repetitions) as u64);
        let mut samples = Vec::new();
        let mut measured = 0.0;
        let mut run = 0usize;
        while run < s.warmup || self.go_on(s, samples.len(), measured) {
            let timed = run >= s.warmup;
            let toks = random_tokens(run as u64 + 1, depth + n, n_vocab);
            h.reset();
            if depth > 0 {
                h.eval(&toks[..depth]).map_err(&e)?;
            }
            let mut work = Work::default();
            if timed {
                self.measure_begin()?;
            }
            let t0 = self.clock.now();
            if generate {
                // llama-bench's tg: BOS (or a random token) first, then random tokens.
                let mut tok = h.bos().unwrap_or(toks[depth]);
                for i in 0..n {
                    h.eval(&[tok]).map_err(&e)?;
                    work.add(&prefill_work(info, 1, depth + i));
                    tok = toks[depth + i];
                }
            } else {
                h.eval(&toks[depth..]).map_err(&e)?;
                work.add(&prefill_work(info, n, depth));
            }
            let dt = self.clock.now() - t0;
            if timed {
                self.measure_end(&work, n as u64, acc)?;
                samples.push(dt);
                measured += dt;
            }
            run += 1;
            self.progress.inc(1);
        }
        self.progress.finish();
        let tps = stats::rates(&vec![n; samples.len()], &samples);
        Ok(SpeedResult {
            n_tokens: n,
            depth,
            warmup: s.warmup,
            tps: Summary::of(&tps),
            samples_s: samples,
            samples_tps: tps,
        })
    }

    #[allow(clippy::too_many_arguments)]
    fn chat(
        &mut self,
        h: &mut dyn ModelHandle,
        tier: &str,
        s: &Scenario,
        c: &scenario::Chat,
        info: &ModelInfo,
        acc: &mut EnergyAcc,
        label: &str,
    ) -> Result<ChatResult> {
        let e = rerr(tier, &c.name);
        let prompts = chat_prompts(s, c)?;
        let queries = (s.repetitions * prompts.len()).max(s.min_queries);
        self.progress.start(label, (s.warmup + queries) as u64);
        let mut r = ChatResult {
            queries: 0,
            prompt_tokens: vec![],
            output_tokens: vec![],
            ttft_s: vec![],
            tpot_s: vec![],
            e2e_s: vec![],
            ttft: None,
            tpot: None,
            e2e: None,
            prefill_tps: Summary::of(&[]),
            decode_tps: Summary::of(&[]),
            sample_answer: String::new(),
        };
        let (mut pre, mut dec) = (vec![], vec![]);
        let mut measured = 0.0;
        let mut q = 0usize;
        loop {
            let timed = q >= s.warmup;
            let done = q.saturating_sub(s.warmup);
            if timed
                && done >= queries
                && !(measured < s.min_duration_s && done < scenario::MAX_REPETITIONS)
            {
                break;
            }
            let prompt = &prompts[q % prompts.len()];
            let text = h
                .chat_prompt(&format!("{}{}", c.prefix, prompt))
                .map_err(&e)?;
            let toks = h.tokenize(&text, true).map_err(&e)?;
            if toks.is_empty() || toks.len() + c.max_tokens > h.n_ctx() {
                return Err(werr(
                    tier,
                    &c.name,
                    format!(
                        "prompt of {} tokens + {} new tokens does not fit n_ctx {}",
                        toks.len(),
                        c.max_tokens,
                        h.n_ctx()
                    ),
                ));
            }
            h.reset();
            if timed {
                self.measure_begin()?;
            }
            let mut work = prefill_work(info, toks.len(), 0);
            let t0 = self.clock.now();
            let mut tok = stats::argmax(h.eval(&toks).map_err(&e)?) as u32;
            let t_first = self.clock.now();
            let mut out = Vec::new();
            let mut steps = 0usize;
            while !h.is_eog(tok) {
                out.push(tok);
                if out.len() >= c.max_tokens {
                    break;
                }
                let l = h.eval(&[tok]).map_err(&e)?;
                work.add(&prefill_work(info, 1, toks.len() + steps));
                steps += 1;
                tok = stats::argmax(l) as u32;
            }
            let t_end = self.clock.now();
            if timed {
                self.measure_end(&work, (toks.len() + steps) as u64, acc)?;
                r.queries += 1;
                r.prompt_tokens.push(toks.len());
                r.output_tokens.push(out.len());
                r.ttft_s.push(t_first - t0);
                r.e2e_s.push(t_end - t0);
                if steps > 0 {
                    r.tpot_s.push((t_end - t_first) / steps as f64);
                    dec.push(steps as f64 / (t_end - t_first));
                }
                if t_first > t0 {
                    pre.push(toks.len() as f64 / (t_first - t0));
                }
                measured += t_end - t0;
                if r.queries == 1 {
                    r.sample_answer = h.detokenize(&out).map_err(&e)?;
                }
            }
            q += 1;
            self.progress.inc(1);
        }
        self.progress.finish();
        r.ttft = Percentiles::of(&r.ttft_s);
        r.tpot = Percentiles::of(&r.tpot_s);
        r.e2e = Percentiles::of(&r.e2e_s);
        r.prefill_tps = Summary::of(&pre);
        r.decode_tps = Summary::of(&dec);
        acc.answers = Some(r.queries);
        Ok(r)
    }

    #[allow(clippy::too_many_arguments)]
    fn text(
        &mut self,
        h: &mut dyn ModelHandle,
        tier: &str,
        s: &Scenario,
        t: &scenario::TextEval,
        kld: Option<(String, bool, &mut HashMap<String, RefLogits>)>,
        info: &ModelInfo,
        acc: &mut EnergyAcc,
        label: &str,
    ) -> Result<TextResult> {
        let e = rerr(tier, &t.name);
        let path = s.resolve(&t.file);
        let text = read_data(&path)?;
        let tokens = h.tokenize(&text, true).map_err(&e)?;
        let n_ctx = t.n_ctx;
        if n_ctx > h.n_ctx() {
            return Err(werr(
                tier,
                &t.name,
                format!("n_ctx {n_ctx} exceeds the loaded context {}", h.n_ctx()),
            ));
        }
        let fit = tokens.len() / n_ctx;
        let chunks = t.chunks.map_or(fit, |c| c.min(fit));
        if chunks == 0 {
            return Err(werr(tier, &t.name, format!(
                "`{}` has {} tokens, fewer than n_ctx {n_ctx}\n  hint: use a longer text or a smaller `n_ctx`",
                path.display(), tokens.len()
            )));
        }
        let n_vocab = h.n_vocab();
        let first = n_ctx / 2;
        let scored = n_ctx - 1 - first;
        let mut ppl = Perplexity::default();
        let (mut kacc, mut ref_rows) = (KldAccumulator::default(), Vec::new());
        let mut reference: Option<&RefLogits> = None;
        let mut store = false;
        let mut kld_key = String::new();
        let mut cache_ref: Option<&mut HashMap<String, RefLogits>> = None;
        if let Some((key, is_ref, cache)) = kld {
            if is_ref {
                if chunks * scored * n_vocab > MAX_KLD_FLOATS {
                    return Err(werr(tier, &t.name, format!(
                        "the reference distributions need {} floats (cap {MAX_KLD_FLOATS})\n  hint: lower `chunks` or `n_ctx`",
                        chunks * scored * n_vocab
                    )));
                }
                store = true;
                ref_rows.reserve(chunks * scored * n_vocab);
            }
            kld_key = key;
            cache_ref = Some(cache);
        }
        if let Some(c) = cache_ref.as_deref() {
            if !store {
                let r = c.get(&kld_key).ok_or_else(|| {
                    werr(
                        tier,
                        &t.name,
                        "the reference tier has no distributions for this workload",
                    )
                })?;
                if r.tokens != tokens[..chunks * n_ctx] {
                    return Err(werr(tier, &t.name, "the text tokenizes differently from the reference tier\n  hint: KL-divergence needs tiers of the same model"));
                }
                reference = Some(r);
            }
        }
        self.progress.start(label, chunks as u64);
        let mut lp = Vec::with_capacity(n_vocab);
        let mut ref_lp = Vec::with_capacity(n_vocab);
        self.measure_begin()?;
        let mut work = Work::default();
        for c in 0..chunks {
            let start = c * n_ctx;
            let mut chunk = tokens[start..start + n_ctx].to_vec();
            if let Some(b) = h.bos() {
                chunk[0] = b;
            }
            h.reset();
            let logits = h.eval_all(&chunk).map_err(&e)?;
            if logits.len() != n_ctx * n_vocab {
                return Err(werr(
                    tier,
                    &t.name,
                    "the runner returned a wrong number of logits",
                ));
            }
            work.add(&prefill_work(info, n_ctx, 0));
            for j in 0..scored {
                let pos = first + j;
                let actual = tokens[start + pos + 1] as usize;
                stats::log_softmax(&logits[pos * n_vocab..(pos + 1) * n_vocab], &mut lp);
                ppl.push(-lp[actual]);
                if store {
                    ref_rows.extend(lp.iter().map(|&x| x as f32));
                }
                if store {
                    kacc.push(&lp, &lp, actual);
                } else if let Some(r) = reference {
                    let row = (c * scored + j) * n_vocab;
                    ref_lp.clear();
                    ref_lp.extend(r.rows[row..row + n_vocab].iter().map(|&x| x as f64));
                    kacc.push(&ref_lp, &lp, actual);
                }
            }
            self.progress.inc(1);
        }
        self.measure_end(&work, (chunks * n_ctx) as u64, acc)?;
        self.progress.finish();
        let has_kld = cache_ref.is_some();
        if store {
            if let Some(c) = cache_ref {
                c.insert(
                    kld_key,
                    RefLogits {
                        tokens: tokens[..chunks * n_ctx].to_vec(),
                        rows: ref_rows,
                    },
                );
            }
        }
        Ok(TextResult {
            file: t.file.display().to_string(),
            n_ctx,
            chunks,
            ppl: ppl.estimate(),
            kld: has_kld.then(|| kacc.finish()),
        })
    }

    /// Score `(context, choices, gold)` items.
    #[allow(clippy::too_many_arguments)]
    fn task(
        &mut self,
        h: &mut dyn ModelHandle,
        tier: &str,
        name: &str,
        file: &Path,
        items: &[(String, Vec<String>, usize)],
        info: &ModelInfo,
        acc: &mut EnergyAcc,
        label: &str,
    ) -> Result<TaskResult> {
        let e = rerr(tier, name);
        self.progress.start(label, items.len() as u64);
        self.measure_begin()?;
        let mut work = Work::default();
        let mut tokens = 0u64;
        let (mut gold, mut pred, mut pred_norm) = (vec![], vec![], vec![]);
        let mut lp = Vec::new();
        // Tokens in the KV cache: shared prefixes (the template) are evaluated once when the
        // runtime can drop cached tokens.
        let mut cached: Vec<u32> = Vec::new();
        let n_vocab = h.n_vocab();
        for (context, choices, g) in items {
            // lm-eval-harness: trailing spaces of the context belong to the continuation.
            let ctx = context.trim_end_matches(' ');
            let spaces = &context[ctx.len()..];
            let ctx_toks = h.tokenize(ctx, true).map_err(&e)?;
            if ctx_toks.is_empty() {
                return Err(werr(
                    tier,
                    name,
                    "an item has an empty context and the model has no BOS",
                ));
            }
            let (from, rows) =
                eval_from(h, &mut cached, &ctx_toks, ctx_toks.len(), false).map_err(&e)?;
            stats::log_softmax(&rows, &mut lp);
            let lp0 = lp.clone();
            let n = ctx_toks.len() - from;
            work.add(&prefill_work(info, n, from));
            tokens += n as u64;
            let mut ll = Vec::with_capacity(choices.len());
            for choice in choices {
                let whole = h
                    .tokenize(&format!("{ctx}{spaces}{choice}"), true)
                    .map_err(&e)?;
                let clean = whole.len() > ctx_toks.len() && whole[..ctx_toks.len()] == ctx_toks[..];
                let split = if clean {
                    ctx_toks.len()
                } else {
                    ctx_toks.len().min(whole.len().saturating_sub(1)).max(1)
                };
                let cont = &whole[split.min(whole.len())..];
                if cont.is_empty() {
                    return Err(werr(
                        tier,
                        name,
                        format!("choice `{choice}` adds no tokens"),
                    ));
                }
                if clean && cont.len() == 1 {
                    ll.push(lp0[cont[0] as usize]);
                    continue;
                }
                // Logits at positions split-1 .. whole.len()-2 predict the continuation; a
                // clean split already has position split-1 (lp0).
                let keep = if clean { split } else { split - 1 };
                let (from, rows) =
                    eval_from(h, &mut cached, &whole[..whole.len() - 1], keep, true).map_err(&e)?;
                let evaluated = rows.len() / n_vocab;
                tokens += evaluated as u64;
                work.add(&prefill_work(info, evaluated, from));
                let mut sum = 0.0;
                for (k, &tok) in cont.iter().enumerate() {
                    let p = split - 1 + k;
                    if p < from {
                        sum += lp0[tok as usize];
                    } else {
                        let r = p - from;
                        stats::log_softmax(&rows[r * n_vocab..(r + 1) * n_vocab], &mut lp);
                        sum += lp[tok as usize];
                    }
                }
                ll.push(sum);
            }
            let best = |score: &dyn Fn(usize) -> f64| {
                let mut b = 0;
                for i in 1..ll.len() {
                    if score(i) > score(b) {
                        b = i;
                    }
                }
                b
            };
            pred.push(best(&|i| ll[i]));
            pred_norm.push(best(&|i| ll[i] / choices[i].len().max(1) as f64));
            gold.push(*g);
            self.progress.inc(1);
        }
        self.measure_end(&work, tokens, acc)?;
        self.progress.finish();
        let count = |p: &[usize]| p.iter().zip(&gold).filter(|(a, b)| a == b).count();
        Ok(TaskResult {
            file: file.display().to_string(),
            acc: Accuracy::new(count(&pred), gold.len()),
            acc_norm: Accuracy::new(count(&pred_norm), gold.len()),
            gold,
            pred,
            pred_norm,
        })
    }
}

/// Evaluate `toks` so the cache holds exactly them, reusing the longest common prefix with
/// `cached` (at most `max_keep` tokens) when the runtime can drop the rest. Returns the first
/// evaluated position and the logits: of every evaluated position (`all`) or of the last.
fn eval_from(
    h: &mut dyn ModelHandle,
    cached: &mut Vec<u32>,
    toks: &[u32],
    max_keep: usize,
    all: bool,
) -> std::result::Result<(usize, Vec<f32>), RunnerError> {
    let lcp = cached.iter().zip(toks).take_while(|(a, b)| a == b).count();
    let mut keep = lcp.min(max_keep).min(toks.len().saturating_sub(1));
    if keep == 0 || !h.truncate(keep) {
        h.reset();
        keep = 0;
    }
    cached.clear();
    let out = if all {
        h.eval_all(&toks[keep..])
    } else {
        h.eval(&toks[keep..]).map(|l| l.to_vec())
    };
    // On error the cache state is unknown: the next call resets.
    if out.is_ok() {
        cached.extend_from_slice(toks);
    }
    Ok((keep, out?))
}

#[derive(Default)]
struct EnergyAcc {
    joules: f64,
    tokens: u64,
    answers: Option<usize>,
}
