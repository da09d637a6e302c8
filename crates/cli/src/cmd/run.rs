//! `slmpack run`: generate text with a llama-family GGUF, with optional escalation of
//! low-confidence answers to an OpenAI-compatible server.

use std::io::Write;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use serde_json::json;
use slmpack_gguf::GgufFile;
use slmpack_infer::chat::{self, Message};
use slmpack_infer::fallback::{FallbackClient, FallbackConfig};
use slmpack_infer::generate::{generate, Generation};
use slmpack_infer::{Model, Profile, Profiles, Sampler, SamplerConfig, Session, TextCodec};

#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Metric {
    /// Mean probability of the chosen tokens.
    Mean,
    /// Lowest probability of any chosen token.
    Min,
}

#[derive(clap::Args, Debug)]
pub struct Args {
    /// A llama-family .gguf model (slmpack's or llama.cpp's).
    pub model: PathBuf,
    /// The prompt (with `--chat`: the user message).
    #[arg(long, short = 'p')]
    pub prompt: String,
    /// Most tokens to generate.
    #[arg(long = "n-predict", short = 'n', default_value_t = 128)]
    pub n_predict: usize,
    /// Never sample an end-of-generation token (EOS, EOT...): generate exactly `-n` tokens
    /// unless the context fills, as llama.cpp's `--ignore-eos` (for benchmarks).
    #[arg(long)]
    pub ignore_eos: bool,
    /// Apply the model's chat template (`tokenizer.chat_template`) to the prompt.
    #[arg(long)]
    pub chat: bool,
    /// System message for `--chat`.
    #[arg(long, requires = "chat")]
    pub system: Option<String>,
    /// Sampling temperature; 0 picks the most likely token (greedy).
    #[arg(long, default_value_t = 0.0)]
    pub temp: f32,
    /// Sample from the K most likely tokens (0: all).
    #[arg(long, default_value_t = 40)]
    pub top_k: usize,
    /// Sample from the smallest set of tokens whose probability reaches P (1: all).
    #[arg(long, default_value_t = 0.95)]
    pub top_p: f32,
    /// Random seed for sampling.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Threads for the forward pass (default: all cores).
    #[arg(long, short = 't')]
    pub threads: Option<usize>,
    /// Context size in tokens (default: what the prompt and `-n` need, in whole 256s, at most
    /// the model's training context).
    #[arg(long = "ctx-size", short = 'c')]
    pub ctx_size: Option<usize>,
    /// Prompt tokens processed per batch.
    #[arg(long = "batch-size", short = 'b', default_value_t = slmpack_infer::session::DEFAULT_BATCH)]
    pub batch_size: usize,
    /// Answers whose confidence is below this (0..1) are low-confidence: escalated to
    /// `--fallback-url` when given, else marked.
    #[arg(long)]
    pub min_confidence: Option<f32>,
    /// Which confidence `--min-confidence` compares.
    #[arg(long, value_enum, default_value_t = Metric::Mean)]
    pub confidence_metric: Metric,
    /// OpenAI-compatible chat completions endpoint for low-confidence answers,
    /// e.g. http://127.0.0.1:8080/v1/chat/completions.
    #[arg(long, requires = "min_confidence")]
    pub fallback_url: Option<String>,
    /// `model` sent to the fallback endpoint.
    #[arg(long, default_value = "default")]
    pub fallback_model: String,
    /// Bearer token for the fallback endpoint.
    #[arg(long, env = "SLMPACK_FALLBACK_API_KEY", hide_env_values = true)]
    pub fallback_api_key: Option<String>,
    /// Seconds to wait for the fallback's connection.
    #[arg(long, default_value_t = 5.0)]
    pub fallback_connect_timeout: f64,
    /// Seconds to wait for the fallback's answer.
    #[arg(long, default_value_t = 60.0)]
    pub fallback_timeout: f64,
    /// Print one JSON object (path, text, tokens, confidence, timings) instead of streaming text.
    #[arg(long)]
    pub json: bool,
    /// Print the prompt's token ids (no BOS, no template) as JSON and exit.
    #[arg(long)]
    pub tokenize_only: bool,
    /// Print the kernel ISA, model information and timings to stderr.
    #[arg(long, short = 'v')]
    pub verbose: bool,
    /// Time each part of the forward pass (products, attention, norms...) and print where
    /// prefill's and decode's time went: a table on stderr, or `profile` in the `--json` object.
    #[arg(long)]
    pub profile: bool,
}

/// A rayon pool with `threads` workers (default: rayon's choice, all cores).
pub fn thread_pool(threads: Option<usize>) -> anyhow::Result<rayon::ThreadPool> {
    let mut b = rayon::ThreadPoolBuilder::new();
    if let Some(n) = threads {
        if n == 0 {
            bail!("`--threads` must be at least 1");
        }
        b = b.num_threads(n);
    }
    Ok(b.build()?)
}

fn secs(s: f64, flag: &str) -> anyhow::Result<Duration> {
    if !(s.is_finite() && s > 0.0) {
        bail!("`{flag}` must be a positive number of seconds, got {s}");
    }
    Ok(Duration::from_secs_f64(s))
}

pub fn run(a: Args) -> anyhow::Result<()> {
    if let Some(x) = a.min_confidence {
        if !(0.0..=1.0).contains(&x) {
            bail!("`--min-confidence` must be between 0 and 1, got {x}");
        }
    }
    let sampling_ok = a.temp.is_finite() && a.temp >= 0.0 && (0.0..=1.0).contains(&a.top_p);
    if !sampling_ok {
        bail!("`--temp` must be >= 0 and `--top-p` between 0 and 1");
    }
    let fallback = match &a.fallback_url {
        Some(url) => Some(FallbackClient::new(FallbackConfig {
            url: url.clone(),
            model: a.fallback_model.clone(),
            api_key: a.fallback_api_key.clone(),
            connect_timeout: secs(a.fallback_connect_timeout, "--fallback-connect-timeout")?,
            read_timeout: secs(a.fallback_timeout, "--fallback-timeout")?,
        })),
        None => None,
    };

    let t_load = Instant::now();
    let f = GgufFile::open_populated(&a.model)
        .with_context(|| format!("loading `{}`", a.model.display()))?;
    let pool = thread_pool(a.threads)?;
    // loading repacks some matrices in parallel: on the requested threads too
    let model = pool.install(|| Model::load(&f))?;
    let codec = TextCodec::from_gguf(&f)?;
    let load_ms = t_load.elapsed().as_secs_f64() * 1e3;

    if a.tokenize_only {
        let ids = codec.encode(&a.prompt, false)?;
        println!("{}", serde_json::to_string(&ids)?);
        return Ok(());
    }

    let mut messages = Vec::new();
    if let Some(s) = &a.system {
        messages.push(Message::new("system", s));
    }
    messages.push(Message::new("user", &a.prompt));
    let prompt_text = if a.chat {
        let tmpl = codec.chat_template.as_deref().with_context(|| {
            format!(
                "`{}` has no chat template (`tokenizer.chat_template`)\n  hint: run without `--chat` to send the prompt as is",
                a.model.display()
            )
        })?;
        let tok = |id: Option<u32>| id.and_then(|i| codec.token_text(i)).unwrap_or_default();
        chat::render(tmpl, &messages, true, &tok(codec.bos), &tok(codec.eos))?
    } else {
        a.prompt.clone()
    };
    let prompt = codec.encode(&prompt_text, codec.add_bos)?;
    if prompt.is_empty() {
        bail!("the prompt is empty\n  hint: pass some text with `-p`");
    }
    let c = &model.config;
    let n_ctx = match a.ctx_size {
        Some(0) => bail!("`--ctx-size` must be at least 1"),
        Some(n) => n,
        None => default_ctx(prompt.len() + a.n_predict.min(4096), c.n_ctx_train),
    };

    if a.verbose {
        let types: Vec<String> = model
            .weight_types()
            .iter()
            .map(|(t, n)| format!("{t} x{n}"))
            .collect();
        eprintln!("{}", slmpack_kernels::isa_report());
        let (n_packed, packed_bytes) = model.packed();
        let (n_copied, copied_bytes) = model.copied();
        let mib = |b: usize| b as f64 / (1 << 20) as f64;
        let huge = match model.packed_huge_bytes() {
            Some(h) => format!("; {:.1} MiB of the copy on huge pages", mib(h)),
            None => String::new(),
        };
        eprintln!(
            "repacked: {n_packed} matrices ({:.1} MiB) into the 8-row interleaved layout, {n_copied} copied as they are ({:.1} MiB){huge} (SLMPACK_REPACK=0 keeps the file's)",
            mib(packed_bytes),
            mib(copied_bytes)
        );
        eprintln!(
            "model: `{}` llama, {:.1}M params, {} layers, n_embd {}, heads {}/{} kv, head dim {}, ff {}, vocab {}, rope base {} dims {}, output {}",
            a.model.display(),
            model.n_params() as f64 / 1e6,
            c.n_layer,
            c.n_embd,
            c.n_head,
            c.n_head_kv,
            c.head_dim,
            c.n_ff,
            c.n_vocab,
            c.rope.freq_base,
            c.rope.n_dims,
            if model.tied_output { "tied" } else { "untied" },
        );
        eprintln!(
            "weights: {} ({:.1} MiB mapped); context {n_ctx} (trained {}), threads {}, prompt {} tokens",
            types.join(", "),
            f.file_size() as f64 / (1 << 20) as f64,
            c.n_ctx_train,
            pool.current_num_threads(),
            prompt.len()
        );
    }

    let stream = !a.json && a.min_confidence.is_none();
    let (gen, profile) = pool.install(|| -> anyhow::Result<(Generation, Option<Profiles>)> {
        let mut session = Session::new(&model, n_ctx, a.batch_size)?;
        if a.profile {
            session.enable_profile();
        }
        let mut sampler = Sampler::new(
            SamplerConfig {
                temp: a.temp,
                top_k: a.top_k,
                top_p: a.top_p,
                seed: a.seed,
            },
            c.n_vocab,
        );
        let mut out = std::io::stdout().lock();
        let gen = generate(
            &mut session,
            &codec,
            &mut sampler,
            &prompt,
            a.n_predict,
            a.ignore_eos,
            |piece| {
                if stream {
                    let _ = out.write_all(piece.as_bytes());
                    let _ = out.flush();
                }
            },
        )?;
        Ok((gen, session.profile().cloned()))
    })?;

    let confidence = match a.confidence_metric {
        Metric::Mean => gen.confidence.mean(),
        Metric::Min => gen.confidence.min(),
    };
    let low = a.min_confidence.is_some_and(|x| confidence < x);
    let mut path = if low { "local-low-confidence" } else { "local" };
    let mut text = gen.text.clone();
    let mut fb_json = serde_json::Value::Null;
    if let (true, Some(client)) = (low, &fallback) {
        eprintln!(
            "note: local answer confidence {confidence:.3} ({:?}) is below {}; asking `{}`",
            a.confidence_metric,
            a.min_confidence.unwrap_or(0.0),
            a.fallback_url.as_deref().unwrap_or("")
        );
        match client.ask(&messages, a.n_predict, a.temp) {
            Ok(ans) => {
                path = "fallback";
                text = ans.text.clone();
                fb_json = json!({"url": a.fallback_url, "model": ans.model, "ms": ans.elapsed_ms});
            }
            Err(e) => {
                eprintln!("warning: {e}\n  hint: keeping the local answer, marked low-confidence");
                fb_json = json!({"url": a.fallback_url, "error": e.to_string()});
            }
        }
    }

    if a.json {
        let mut v = json!({
            "path": path,
            "text": text,
            "local_text": gen.text,
            "tokens": gen.tokens,
            "n_tokens": gen.tokens.len(),
            "stop": gen.stop.as_str(),
            "confidence": {
                "mean": gen.confidence.mean(),
                "min": gen.confidence.min(),
                "metric": format!("{:?}", a.confidence_metric).to_lowercase(),
                "threshold": a.min_confidence,
                "low": low,
            },
            "fallback": fb_json,
            "timings": {
                "load_ms": load_ms,
                "prompt_tokens": gen.prompt_tokens,
                "prefill_ms": gen.prefill_ms,
                "prefill_tokens_per_s": gen.prefill_tokens_per_s(),
                "decode_tokens": gen.decode_steps,
                "decode_ms": gen.decode_ms,
                "decode_tokens_per_s": gen.decode_tokens_per_s(),
            },
            "isa": slmpack_kernels::isa().name(),
        });
        if let Some(p) = &profile {
            v["profile"] = json!({
                "prefill": profile_json(&p.prefill),
                "decode": profile_json(&p.decode),
            });
        }
        println!("{}", serde_json::to_string_pretty(&v)?);
    } else {
        let mut out = std::io::stdout().lock();
        if !stream {
            out.write_all(text.as_bytes())?;
        }
        writeln!(out)?;
        if path == "local-low-confidence" {
            eprintln!(
                "note: low confidence ({confidence:.3} < {}); this answer may be wrong",
                a.min_confidence.unwrap_or(0.0)
            );
        }
    }
    if let (Some(p), false) = (&profile, a.json) {
        eprint!("{}", profile_table(p));
    }
    if a.verbose {
        eprintln!(
            "load {:.0} ms; prefill {} tokens in {:.0} ms ({:.1} tok/s); decode {} tokens in {:.0} ms ({:.1} tok/s); confidence mean {:.3} min {:.3}; stop: {}; path: {path}",
            load_ms,
            gen.prompt_tokens,
            gen.prefill_ms,
            gen.prefill_tokens_per_s(),
            gen.decode_steps,
            gen.decode_ms,
            gen.decode_tokens_per_s(),
            gen.confidence.mean(),
            gen.confidence.min(),
            gen.stop.as_str(),
        );
    }
    Ok(())
}

/// `{"passes", "tokens", "total_ms", "ms": {section: ms}}` (sections that took no time left out).
fn profile_json(p: &Profile) -> serde_json::Value {
    let ms: serde_json::Map<String, serde_json::Value> = p
        .sections()
        .map(|(s, ms)| (s.name().to_string(), json!(ms)))
        .collect();
    json!({"passes": p.passes, "tokens": p.tokens, "total_ms": p.total_ms(), "ms": ms})
}

/// Prefill's and decode's time per section: ms in all, ms per token, share.
fn profile_table(p: &Profiles) -> String {
    let mut s = String::new();
    for (what, q) in [("prefill", &p.prefill), ("decode", &p.decode)] {
        if q.tokens == 0 {
            continue;
        }
        let total = q.total_ms();
        s += &format!(
            "profile: {what}, {} tokens in {} passes, {total:.1} ms\n  {:<12} {:>10} {:>12} {:>6}\n",
            q.tokens, q.passes, "section", "ms", "ms/token", "share"
        );
        for (sec, ms) in q.sections() {
            s += &format!(
                "  {:<12} {:>10.2} {:>12.4} {:>5.1}%\n",
                sec.name(),
                ms,
                ms / q.tokens as f64,
                100.0 * ms / total.max(f64::MIN_POSITIVE)
            );
        }
    }
    s
}

/// The cache a run needs for `need` tokens (the prompt and `-n`): `need` in llama.cpp's steps of
/// 256 cells (so attention rows have the lengths llama.cpp gives them), at most the training
/// context unless `need` is more. Each V row of the cache is `n_ctx` cells long and decode reads
/// the first few hundred of each, so a larger cache only spreads those reads and costs memory.
fn default_ctx(need: usize, n_ctx_train: usize) -> usize {
    need.next_multiple_of(256).min(n_ctx_train).max(need)
}

#[cfg(test)]
mod tests {
    use super::default_ctx;

    #[test]
    fn the_default_cache_holds_the_run_in_steps_of_256() {
        assert_eq!(default_ctx(640, 8192), 768);
        assert_eq!(default_ctx(1, 8192), 256);
        assert_eq!(default_ctx(768, 8192), 768);
        // never past the training context, unless the run needs more
        assert_eq!(default_ctx(300, 512), 512);
        assert_eq!(default_ctx(300, 400), 400);
        assert_eq!(default_ctx(600, 512), 600);
    }
}
