//! Scenario files: YAML naming the workloads of a benchmark and how often to run them.
//!
//! ```yaml
//! name: throughput
//! repetitions: 5        # timed runs per workload (llama-bench's -r), default 5
//! warmup: 1             # untimed runs first, default 1
//! min_duration_s: 0     # keep repeating until this much time was measured
//! min_queries: 0        # chat: answer at least this many prompts (MLPerf's minimum query count)
//! threads: 2            # compute threads (default: all cores)
//! workloads:
//!   - {kind: pp, name: pp512, n_prompt: 512, depth: 0}
//!   - {kind: tg, name: tg128, n_gen: 128, depth: 0}
//! ```
//!
//! Paths inside a scenario are relative to the scenario file's folder. Unknown keys are errors.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::{BenchError, Result};

/// Largest scenario file read.
pub const MAX_SCENARIO_BYTES: u64 = 1 << 20;
/// Caps that keep a typo from asking for hours of work.
pub const MAX_REPETITIONS: usize = 10_000;
pub const MAX_TOKENS: usize = 1 << 20;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Scenario {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    #[serde(default = "default_repetitions")]
    pub repetitions: usize,
    #[serde(default = "default_warmup")]
    pub warmup: usize,
    #[serde(default)]
    pub min_duration_s: f64,
    #[serde(default)]
    pub min_queries: usize,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub threads: Option<usize>,
    pub workloads: Vec<Workload>,
    /// The folder the scenario was read from (paths resolve against it).
    #[serde(skip)]
    pub base_dir: PathBuf,
}

fn default_repetitions() -> usize {
    5
}
fn default_warmup() -> usize {
    1
}
fn default_n_ctx() -> usize {
    512
}
fn default_max_tokens() -> usize {
    32
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Workload {
    /// Prompt processing of `n_prompt` tokens after `depth` tokens already in the KV cache.
    Pp(Pp),
    /// Generation of `n_gen` tokens, one at a time, after `depth` tokens in the KV cache.
    Tg(Tg),
    /// Chat turns with real prompts: time to first token, time per output token, end to end.
    Chat(Chat),
    /// Perplexity of a text file (llama-perplexity's chunked method).
    Perplexity(TextEval),
    /// Perplexity plus KL-divergence against the reference tier on a text file.
    Kld(TextEval),
    /// Pick one label per utterance from a labelled JSONL (`{"text": ..., "label": ...}`).
    Classify(Classify),
    /// Pick one of several choices per item from a JSONL (`{"query", "choices", "gold"}`).
    MultipleChoice(MultipleChoice),
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Pp {
    pub name: String,
    pub n_prompt: usize,
    #[serde(default)]
    pub depth: usize,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Tg {
    pub name: String,
    pub n_gen: usize,
    #[serde(default)]
    pub depth: usize,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Chat {
    pub name: String,
    /// Prompts given inline…
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub prompts: Vec<String>,
    /// …or one per line of a text file.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prompts_file: Option<PathBuf>,
    /// Text put before each prompt (a system line or an instruction).
    #[serde(default)]
    pub prefix: String,
    #[serde(default = "default_max_tokens")]
    pub max_tokens: usize,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TextEval {
    pub name: String,
    pub file: PathBuf,
    #[serde(default = "default_n_ctx")]
    pub n_ctx: usize,
    /// Score at most this many chunks (default: all that fit).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub chunks: Option<usize>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Classify {
    pub name: String,
    pub file: PathBuf,
    /// Context for each utterance; `{text}` is replaced by the utterance.
    pub template: String,
    /// Label → the words the model is scored on (the continuation after the template).
    pub labels: Vec<Label>,
    /// Score at most this many items (default: all).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit: Option<usize>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Label {
    pub label: String,
    pub text: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MultipleChoice {
    pub name: String,
    pub file: PathBuf,
    /// Context for each item; `{query}` is replaced by the item's query.
    #[serde(default = "default_mc_template")]
    pub template: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit: Option<usize>,
}

fn default_mc_template() -> String {
    "{query}".into()
}

impl Workload {
    pub fn name(&self) -> &str {
        match self {
            Workload::Pp(w) => &w.name,
            Workload::Tg(w) => &w.name,
            Workload::Chat(w) => &w.name,
            Workload::Perplexity(w) | Workload::Kld(w) => &w.name,
            Workload::Classify(w) => &w.name,
            Workload::MultipleChoice(w) => &w.name,
        }
    }

    pub fn kind(&self) -> &'static str {
        match self {
            Workload::Pp(_) => "pp",
            Workload::Tg(_) => "tg",
            Workload::Chat(_) => "chat",
            Workload::Perplexity(_) => "perplexity",
            Workload::Kld(_) => "kld",
            Workload::Classify(_) => "classify",
            Workload::MultipleChoice(_) => "multiple_choice",
        }
    }
}

impl Scenario {
    /// Read and check a scenario file.
    pub fn load(path: &Path) -> Result<Scenario> {
        let meta = std::fs::metadata(path).map_err(|e| BenchError::io(path, e))?;
        if meta.len() > MAX_SCENARIO_BYTES {
            return Err(BenchError::Scenario {
                path: path.into(),
                msg: format!(
                    "{} bytes is more than the {MAX_SCENARIO_BYTES}-byte limit for a scenario",
                    meta.len()
                ),
            });
        }
        let text = std::fs::read_to_string(path).map_err(|e| BenchError::io(path, e))?;
        let base = path.parent().unwrap_or(Path::new(".")).to_path_buf();
        Scenario::parse(&text, base).map_err(|msg| BenchError::Scenario {
            path: path.into(),
            msg,
        })
    }

    /// Parse and check scenario text; relative paths resolve against `base_dir`.
    pub fn parse(text: &str, base_dir: PathBuf) -> std::result::Result<Scenario, String> {
        let mut s: Scenario = serde_norway::from_str(text).map_err(|e| {
            format!(
                "{e}\n  hint: workload kinds are pp, tg, chat, perplexity, kld, classify, multiple_choice"
            )
        })?;
        s.base_dir = base_dir;
        s.check()?;
        Ok(s)
    }

    fn check(&self) -> std::result::Result<(), String> {
        if self.workloads.is_empty() {
            return Err("no workloads\n  hint: add a `workloads:` list".into());
        }
        if self.repetitions == 0 || self.repetitions > MAX_REPETITIONS {
            return Err(format!(
                "`repetitions` must be 1..={MAX_REPETITIONS}, got {}",
                self.repetitions
            ));
        }
        if self.warmup > MAX_REPETITIONS || self.min_queries > MAX_REPETITIONS {
            return Err(format!(
                "`warmup` and `min_queries` must be at most {MAX_REPETITIONS}"
            ));
        }
        if !(self.min_duration_s >= 0.0 && self.min_duration_s <= 86_400.0) {
            return Err("`min_duration_s` must be between 0 and 86400".into());
        }
        if self.threads == Some(0) {
            return Err("`threads` must be at least 1".into());
        }
        let mut names = std::collections::HashSet::new();
        for w in &self.workloads {
            let name = w.name();
            if name.is_empty() || !names.insert(name.to_string()) {
                return Err(format!(
                    "workload name `{name}` is empty or used twice\n  hint: names key the report"
                ));
            }
            let bad = |m: &str| Err(format!("workload `{name}`: {m}"));
            match w {
                Workload::Pp(p) => {
                    if p.n_prompt == 0 || p.n_prompt + p.depth > MAX_TOKENS {
                        return bad("`n_prompt` must be at least 1 and `n_prompt + depth` sane");
                    }
                }
                Workload::Tg(t) => {
                    if t.n_gen == 0 || t.n_gen + t.depth > MAX_TOKENS {
                        return bad("`n_gen` must be at least 1 and `n_gen + depth` sane");
                    }
                }
                Workload::Chat(c) => {
                    if c.prompts.is_empty() == c.prompts_file.is_none() {
                        return bad("give either `prompts` or `prompts_file`");
                    }
                    if c.max_tokens == 0 || c.max_tokens > MAX_TOKENS {
                        return bad("`max_tokens` must be at least 1");
                    }
                }
                Workload::Perplexity(t) | Workload::Kld(t) => {
                    if t.n_ctx < 4 || t.n_ctx > MAX_TOKENS {
                        return bad("`n_ctx` must be at least 4");
                    }
                    if t.chunks == Some(0) {
                        return bad("`chunks` must be at least 1");
                    }
                }
                Workload::Classify(c) => {
                    if c.labels.len() < 2 {
                        return bad("give at least two `labels`");
                    }
                    if !c.template.contains("{text}") {
                        return bad("`template` must contain `{text}`");
                    }
                    if c.labels.iter().any(|l| l.text.is_empty()) {
                        return bad("every label needs a non-empty `text`");
                    }
                }
                Workload::MultipleChoice(m) => {
                    if !m.template.contains("{query}") {
                        return bad("`template` must contain `{query}`");
                    }
                }
            }
        }
        Ok(())
    }

    /// A path from the scenario, resolved against its folder.
    pub fn resolve(&self, p: &Path) -> PathBuf {
        if p.is_absolute() {
            p.to_path_buf()
        } else {
            self.base_dir.join(p)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shipped(name: &str) -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../benchmarks")
            .join(name)
    }

    #[test]
    fn every_shipped_scenario_parses_and_its_files_exist() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../benchmarks");
        let mut n = 0;
        for e in std::fs::read_dir(&dir).unwrap() {
            let p = e.unwrap().path();
            if p.extension().and_then(|e| e.to_str()) != Some("yaml") {
                continue;
            }
            let s = Scenario::load(&p).unwrap_or_else(|e| panic!("{e}"));
            for w in &s.workloads {
                let file = match w {
                    Workload::Chat(c) => c.prompts_file.clone(),
                    Workload::Perplexity(t) | Workload::Kld(t) => Some(t.file.clone()),
                    Workload::Classify(c) => Some(c.file.clone()),
                    Workload::MultipleChoice(m) => Some(m.file.clone()),
                    _ => None,
                };
                if let Some(f) = file {
                    assert!(s.resolve(&f).is_file(), "{}: {}", p.display(), f.display());
                }
            }
            n += 1;
        }
        assert!(n >= 3, "expected the three shipped scenarios");
        let names: Vec<_> = ["assistant.yaml", "throughput.yaml", "quality.yaml"]
            .iter()
            .map(|n| Scenario::load(&shipped(n)).unwrap())
            .collect();
        assert!(names[0]
            .workloads
            .iter()
            .all(|w| matches!(w, Workload::Chat(_))));
        let kinds: Vec<_> = names[1].workloads.iter().map(|w| w.kind()).collect();
        assert_eq!(kinds, ["pp", "tg"]);
        let kinds: Vec<_> = names[2].workloads.iter().map(|w| w.kind()).collect();
        assert!(kinds.contains(&"kld") && kinds.contains(&"classify"));
    }

    #[test]
    fn unknown_keys_are_errors() {
        let e = Scenario::parse(
            "name: x\nworkloads:\n  - {kind: pp, name: a, n_prompt: 4, dpeth: 2}\n",
            ".".into(),
        )
        .unwrap_err();
        assert!(e.contains("dpeth"), "{e}");
        let e = Scenario::parse("name: x\nrepetition: 3\nworkloads: []\n", ".".into()).unwrap_err();
        assert!(e.contains("repetition"), "{e}");
        let e = Scenario::parse(
            "name: x\nworkloads:\n  - {kind: flops, name: a}\n",
            ".".into(),
        )
        .unwrap_err();
        assert!(e.contains("flops") && e.contains("hint"), "{e}");
    }

    #[test]
    fn checks_values() {
        let e = Scenario::parse("name: x\nworkloads: []\n", ".".into()).unwrap_err();
        assert!(e.contains("no workloads"));
        let e = Scenario::parse(
            "name: x\nworkloads:\n  - {kind: tg, name: a, n_gen: 2}\n  - {kind: pp, name: a, n_prompt: 2}\n",
            ".".into(),
        )
        .unwrap_err();
        assert!(e.contains("used twice"), "{e}");
        let e = Scenario::parse(
            "name: x\nworkloads:\n  - {kind: chat, name: a}\n",
            ".".into(),
        )
        .unwrap_err();
        assert!(e.contains("prompts"), "{e}");
        let s = Scenario::parse(
            "name: x\nrepetitions: 3\nworkloads:\n  - {kind: pp, name: a, n_prompt: 8, depth: 4}\n",
            "/b".into(),
        )
        .unwrap();
        assert_eq!(s.repetitions, 3);
        assert_eq!(s.warmup, 1);
        assert_eq!(s.resolve(Path::new("t.txt")), Path::new("/b/t.txt"));
    }
}
