//! The generation loop: prefill the prompt, then sample, stream and decode one token at a time.

use std::time::Instant;

use crate::error::Result;
use crate::sampler::{token_prob, Confidence, Sampler};
use crate::session::Session;
use crate::text::{StreamDecoder, TextCodec};

/// Why generation stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopReason {
    /// An end-of-generation token (EOS, EOT, `<|im_end|>`...).
    Eog,
    /// `max_tokens` reached.
    Length,
    /// The context is full.
    Context,
}

impl StopReason {
    pub fn as_str(self) -> &'static str {
        match self {
            StopReason::Eog => "eog",
            StopReason::Length => "length",
            StopReason::Context => "context",
        }
    }
}

/// The result of [`generate`].
#[derive(Debug, Clone)]
pub struct Generation {
    /// Generated tokens (without the end-of-generation token).
    pub tokens: Vec<u32>,
    pub text: String,
    pub stop: StopReason,
    /// Over every chosen token, the end-of-generation token included.
    pub confidence: Confidence,
    pub prompt_tokens: usize,
    pub prefill_ms: f64,
    /// Decode steps (forward passes of one token) and their time.
    pub decode_steps: usize,
    pub decode_ms: f64,
}

impl Generation {
    pub fn prefill_tokens_per_s(&self) -> f64 {
        rate(self.prompt_tokens, self.prefill_ms)
    }
    pub fn decode_tokens_per_s(&self) -> f64 {
        rate(self.decode_steps, self.decode_ms)
    }
}

fn rate(n: usize, ms: f64) -> f64 {
    if ms > 0.0 {
        n as f64 * 1e3 / ms
    } else {
        0.0
    }
}

/// Generate up to `max_tokens` after `prompt`, calling `on_text` with each piece of text as soon
/// as it is complete UTF-8. With `ignore_eog`, end-of-generation tokens are never sampled (their
/// logits are `-inf`, as llama.cpp's `--ignore-eos`), so generation runs to `max_tokens` or the
/// end of the context.
pub fn generate(
    session: &mut Session,
    codec: &TextCodec,
    sampler: &mut Sampler,
    prompt: &[u32],
    max_tokens: usize,
    ignore_eog: bool,
    mut on_text: impl FnMut(&str),
) -> Result<Generation> {
    let mask = |logits: &mut [f32]| {
        if ignore_eog {
            for &id in &codec.eog {
                if let Some(l) = logits.get_mut(id as usize) {
                    *l = f32::NEG_INFINITY;
                }
            }
        }
    };
    let t0 = Instant::now();
    let mut logits = session.eval_mut(prompt)?;
    mask(logits);
    let prefill_ms = t0.elapsed().as_secs_f64() * 1e3;

    let mut tokens = Vec::with_capacity(max_tokens);
    let mut text = String::new();
    let mut conf = Confidence::default();
    let mut dec = StreamDecoder::with_capacity(max_tokens);
    let mut decode_steps = 0;
    let t1 = Instant::now();
    let stop = loop {
        if tokens.len() >= max_tokens {
            break StopReason::Length;
        }
        let id = sampler.sample(logits);
        conf.push(token_prob(logits, id));
        if codec.is_eog(id) {
            break StopReason::Eog;
        }
        tokens.push(id);
        let piece = dec.push(codec, id)?;
        if !piece.is_empty() {
            on_text(&piece);
            text.push_str(&piece);
        }
        if tokens.len() >= max_tokens {
            break StopReason::Length;
        }
        if session.pos() >= session.n_ctx() {
            break StopReason::Context;
        }
        logits = session.eval_mut(&[id])?;
        mask(logits);
        decode_steps += 1;
    };
    let rest = dec.finish(codec)?;
    if !rest.is_empty() {
        on_text(&rest);
        text.push_str(&rest);
    }
    Ok(Generation {
        tokens,
        text,
        stop,
        confidence: conf,
        prompt_tokens: prompt.len(),
        prefill_ms,
        decode_steps,
        decode_ms: t1.elapsed().as_secs_f64() * 1e3,
    })
}
