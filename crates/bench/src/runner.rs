//! The model runtime behind the harness: [`Runner`] loads a model and lends a [`ModelHandle`]
//! (tokenize, prefill, decode, reset) to a callback — a callback rather than a returned handle
//! because real runtimes borrow their weights from a memory-mapped file.
//!
//! [`ScriptedRunner`] is a deterministic stand-in for tests: a tiny "model" whose logits are a
//! fixed function of the previous token, and whose every call advances a [`ScriptedClock`] by a
//! scripted cost, so reports built on it have exact, hand-checkable values.

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use crate::error::{BenchError, Result, RunnerError};

/// Options for loading a model.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LoadOptions {
    /// Context (KV cache) size in tokens.
    pub n_ctx: usize,
    /// Compute threads; `None` = the runtime's default.
    pub threads: Option<usize>,
}

/// What a loaded model reports about itself.
#[derive(Debug, Clone, PartialEq)]
pub struct ModelInfo {
    /// Parameters in the weight tensors.
    pub n_params: u64,
    /// Bytes of weights read for one forward pass.
    pub weight_bytes: u64,
    /// Bytes of the model file mapped into memory.
    pub mapped_bytes: u64,
    /// Bytes allocated for the KV cache at the loaded context size.
    pub kv_bytes: u64,
    /// KV-cache bytes per cached token (read once per decoded token per cached token).
    pub kv_bytes_per_token: u64,
    /// Whether the matrix products run on 8-bit activations (quantized weights).
    pub int8_matmul: bool,
    /// Instruction set chosen by the kernels, e.g. `avx2+fma`.
    pub isa: String,
}

/// A loaded model with one sequence (KV cache).
pub trait ModelHandle {
    fn info(&self) -> ModelInfo;
    fn n_vocab(&self) -> usize;
    fn n_ctx(&self) -> usize;
    /// Whether the model's tokenizer puts a BOS token first, and which one.
    fn bos(&self) -> Option<u32>;
    fn is_eog(&self, id: u32) -> bool;
    /// Tokenize `text` (with BOS first when `add_bos` and the model has one).
    fn tokenize(&self, text: &str, add_bos: bool) -> std::result::Result<Vec<u32>, RunnerError>;
    /// Text of generated tokens.
    fn detokenize(&self, ids: &[u32]) -> std::result::Result<String, RunnerError>;
    /// The text of a single user turn in the model's chat format (its template, if any).
    fn chat_prompt(&self, user: &str) -> std::result::Result<String, RunnerError>;
    /// Forget the cached sequence.
    fn reset(&mut self);
    /// Drop cached tokens after the first `n`; `false` when the runtime cannot (then the
    /// harness resets and evaluates again).
    fn truncate(&mut self, n: usize) -> bool {
        let _ = n;
        false
    }
    /// Append `tokens`; return the logits after the last one.
    fn eval(&mut self, tokens: &[u32]) -> std::result::Result<&[f32], RunnerError>;
    /// Append `tokens`; return the logits after each (`tokens.len() * n_vocab`).
    fn eval_all(&mut self, tokens: &[u32]) -> std::result::Result<Vec<f32>, RunnerError>;
}

/// Loads models.
pub trait Runner {
    /// Name of the runtime, for the report.
    fn name(&self) -> String;
    /// Load `path` and run `f` with the loaded model.
    fn with_model(
        &self,
        path: &Path,
        opts: &LoadOptions,
        f: &mut dyn FnMut(&mut dyn ModelHandle) -> Result<()>,
    ) -> Result<()>;
}

/// A monotonic clock in seconds.
pub trait Clock {
    fn now(&self) -> f64;
}

/// The system's monotonic clock.
pub struct SystemClock {
    start: Instant,
}

impl Default for SystemClock {
    fn default() -> Self {
        SystemClock {
            start: Instant::now(),
        }
    }
}

impl Clock for SystemClock {
    fn now(&self) -> f64 {
        self.start.elapsed().as_secs_f64()
    }
}

/// A clock that only moves when told to (nanosecond steps); clones share the time.
#[derive(Debug, Clone, Default)]
pub struct ScriptedClock {
    ns: Arc<AtomicU64>,
}

impl ScriptedClock {
    pub fn advance_ns(&self, ns: u64) {
        self.ns.fetch_add(ns, Ordering::SeqCst);
    }
}

impl Clock for ScriptedClock {
    fn now(&self) -> f64 {
        self.ns.load(Ordering::SeqCst) as f64 * 1e-9
    }
}

/// Costs and shape of a scripted model.
#[derive(Debug, Clone, PartialEq)]
pub struct Script {
    pub load_ns: u64,
    /// Cost of each token of a batch of more than one token.
    pub prefill_ns_per_token: u64,
    /// Cost of a one-token evaluation.
    pub decode_ns: u64,
    /// Added to the logits: 0 for the reference behaviour; other values shift the
    /// distribution (a "worse tier").
    pub noise: f32,
    pub n_params: u64,
    pub weight_bytes: u64,
}

impl Default for Script {
    fn default() -> Self {
        Script {
            load_ns: 50_000_000,
            prefill_ns_per_token: 1_000_000,
            decode_ns: 10_000_000,
            noise: 0.0,
            n_params: 1_000_000,
            weight_bytes: 600_000,
        }
    }
}

/// Vocabulary of the scripted model: bytes 0..=255, then BOS (256) and EOS (257).
pub const SCRIPTED_VOCAB: usize = 258;
pub const SCRIPTED_BOS: u32 = 256;
pub const SCRIPTED_EOS: u32 = 257;

/// A deterministic fake runtime. Models are chosen by file name: the file stem is looked up in
/// `scripts` (the default script otherwise); the file must exist (its size is "mapped").
#[derive(Debug, Clone, Default)]
pub struct ScriptedRunner {
    pub clock: ScriptedClock,
    pub scripts: Vec<(String, Script)>,
    /// Behave like a runtime that cannot drop cached tokens (exercises the re-evaluation path).
    pub no_truncate: bool,
}

impl ScriptedRunner {
    fn script(&self, path: &Path) -> Script {
        let stem = path.file_stem().and_then(|s| s.to_str()).unwrap_or("");
        self.scripts
            .iter()
            .find(|(n, _)| n == stem)
            .map(|(_, s)| s.clone())
            .unwrap_or_default()
    }
}

struct ScriptedModel {
    no_truncate: bool,
    clock: ScriptedClock,
    script: Script,
    mapped: u64,
    n_ctx: usize,
    tokens: Vec<u32>,
    logits: Vec<f32>,
}

/// Logits after token `prev`: a fixed pseudo-random function, peaked on a few "likely" tokens
/// (lowercase letters and space) so perplexity is finite and text-dependent.
fn scripted_logits(prev: u32, noise: f32, out: &mut [f32]) {
    for (i, o) in out.iter_mut().enumerate() {
        let mut h = (prev as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ (i as u64 + 1);
        h ^= h >> 29;
        h = h.wrapping_mul(0xBF58_476D_1CE4_E5B9);
        h ^= h >> 32;
        let r = (h % 1000) as f32 / 1000.0;
        let likely = i < 256 && (i as u8).is_ascii_lowercase() || i == b' ' as usize;
        *o = r + if likely { 3.0 } else { 0.0 };
        if noise != 0.0 {
            *o += noise * ((i as f32 * 0.37 + prev as f32).sin());
        }
    }
    if prev == b'.' as u32 {
        out[SCRIPTED_EOS as usize] += 4.0;
    }
}

impl ModelHandle for ScriptedModel {
    fn info(&self) -> ModelInfo {
        ModelInfo {
            n_params: self.script.n_params,
            weight_bytes: self.script.weight_bytes,
            mapped_bytes: self.mapped,
            kv_bytes: self.n_ctx as u64 * 64,
            kv_bytes_per_token: 64,
            int8_matmul: true,
            isa: "scripted".into(),
        }
    }
    fn n_vocab(&self) -> usize {
        SCRIPTED_VOCAB
    }
    fn n_ctx(&self) -> usize {
        self.n_ctx
    }
    fn bos(&self) -> Option<u32> {
        Some(SCRIPTED_BOS)
    }
    fn is_eog(&self, id: u32) -> bool {
        id == SCRIPTED_EOS
    }
    fn tokenize(&self, text: &str, add_bos: bool) -> std::result::Result<Vec<u32>, RunnerError> {
        let mut v: Vec<u32> = if add_bos { vec![SCRIPTED_BOS] } else { vec![] };
        v.extend(text.bytes().map(u32::from));
        Ok(v)
    }
    fn detokenize(&self, ids: &[u32]) -> std::result::Result<String, RunnerError> {
        let bytes: Vec<u8> = ids.iter().filter(|&&t| t < 256).map(|&t| t as u8).collect();
        Ok(String::from_utf8_lossy(&bytes).into_owned())
    }
    fn chat_prompt(&self, user: &str) -> std::result::Result<String, RunnerError> {
        Ok(format!("user: {user}\nassistant:"))
    }
    fn reset(&mut self) {
        self.tokens.clear();
    }
    fn truncate(&mut self, n: usize) -> bool {
        if self.no_truncate || n > self.tokens.len() {
            return false;
        }
        self.tokens.truncate(n);
        true
    }
    fn eval(&mut self, tokens: &[u32]) -> std::result::Result<&[f32], RunnerError> {
        self.append(tokens)?;
        let last = *tokens.last().ok_or("no tokens to evaluate")?;
        scripted_logits(last, self.script.noise, &mut self.logits);
        Ok(&self.logits)
    }
    fn eval_all(&mut self, tokens: &[u32]) -> std::result::Result<Vec<f32>, RunnerError> {
        self.append(tokens)?;
        let mut out = vec![0f32; tokens.len() * SCRIPTED_VOCAB];
        for (t, row) in tokens.iter().zip(out.chunks_mut(SCRIPTED_VOCAB)) {
            scripted_logits(*t, self.script.noise, row);
        }
        Ok(out)
    }
}

impl ScriptedModel {
    fn append(&mut self, tokens: &[u32]) -> std::result::Result<(), RunnerError> {
        if tokens.is_empty() {
            return Err("no tokens to evaluate".into());
        }
        if let Some(t) = tokens.iter().find(|&&t| t as usize >= SCRIPTED_VOCAB) {
            return Err(format!("token {t} is outside the vocabulary").into());
        }
        if self.tokens.len() + tokens.len() > self.n_ctx {
            return Err(format!(
                "context full: {} tokens > n_ctx {}",
                self.tokens.len() + tokens.len(),
                self.n_ctx
            )
            .into());
        }
        self.tokens.extend_from_slice(tokens);
        let cost = if tokens.len() == 1 {
            self.script.decode_ns
        } else {
            self.script.prefill_ns_per_token * tokens.len() as u64
        };
        self.clock.advance_ns(cost);
        Ok(())
    }
}

impl Runner for ScriptedRunner {
    fn name(&self) -> String {
        "scripted".into()
    }
    fn with_model(
        &self,
        path: &Path,
        opts: &LoadOptions,
        f: &mut dyn FnMut(&mut dyn ModelHandle) -> Result<()>,
    ) -> Result<()> {
        let mapped = std::fs::metadata(path)
            .map_err(|e| BenchError::io(path, e))?
            .len();
        let script = self.script(path);
        self.clock.advance_ns(script.load_ns);
        let mut m = ScriptedModel {
            no_truncate: self.no_truncate,
            clock: self.clock.clone(),
            script,
            mapped,
            n_ctx: opts.n_ctx,
            tokens: Vec::new(),
            logits: vec![0.0; SCRIPTED_VOCAB],
        };
        f(&mut m)
    }
}
