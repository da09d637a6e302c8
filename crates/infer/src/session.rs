//! The forward pass with a KV cache: batched prefill and single-token decode.
//!
//! All buffers (KV cache sized to the context, activations sized to the largest batch) are
//! allocated when the session is created; decoding a token allocates nothing.

use std::cell::RefCell;

use rayon::prelude::*;

use crate::error::{InferError, Result};
use crate::matmul::matmul;
use crate::model::Model;
use crate::ops::{dot_f32, rms_norm, rope_cache, rope_norm, silu, softmax};

/// Default number of prompt tokens processed per batch.
pub const DEFAULT_BATCH: usize = 256;

thread_local! {
    static SCORES: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
}

/// Activation buffers for up to `cap` tokens.
struct Scratch {
    cap: usize,
    x: Vec<f32>,
    xn: Vec<f32>,
    q: Vec<f32>,
    k: Vec<f32>,
    v: Vec<f32>,
    att: Vec<f32>,
    o: Vec<f32>,
    gate: Vec<f32>,
    up: Vec<f32>,
    rope: Vec<f32>,
    /// Logits of the last token of the latest batch.
    logits: Vec<f32>,
}

/// Generation state of one sequence: KV cache, position and scratch buffers.
pub struct Session<'m, 'a> {
    model: &'m Model<'a>,
    n_ctx: usize,
    pos: usize,
    /// `[layer][position][kv_dim]`
    k_cache: Vec<f32>,
    v_cache: Vec<f32>,
    s: Scratch,
}

impl<'m, 'a> Session<'m, 'a> {
    /// A session holding up to `n_ctx` tokens, processing prompts `batch` tokens at a time.
    pub fn new(model: &'m Model<'a>, n_ctx: usize, batch: usize) -> Result<Self> {
        let c = &model.config;
        if n_ctx == 0 {
            return Err(InferError::Invalid(
                "the context size must be at least 1".into(),
            ));
        }
        let cap = batch.clamp(1, n_ctx);
        let kv = c.n_layer * n_ctx * c.kv_dim();
        Ok(Session {
            model,
            n_ctx,
            pos: 0,
            k_cache: vec![0.0; kv],
            v_cache: vec![0.0; kv],
            s: Scratch {
                cap,
                x: vec![0.0; cap * c.n_embd],
                xn: vec![0.0; cap * c.n_embd.max(c.q_dim())],
                q: vec![0.0; cap * c.q_dim()],
                k: vec![0.0; cap * c.kv_dim()],
                v: vec![0.0; cap * c.kv_dim()],
                att: vec![0.0; cap * c.q_dim()],
                o: vec![0.0; cap * c.n_embd],
                gate: vec![0.0; cap * c.n_ff],
                up: vec![0.0; cap * c.n_ff],
                rope: vec![0.0; cap * c.rope.n_dims],
                logits: vec![0.0; c.n_vocab],
            },
        })
    }

    pub fn model(&self) -> &Model<'a> {
        self.model
    }

    /// Tokens in the cache.
    pub fn pos(&self) -> usize {
        self.pos
    }

    pub fn n_ctx(&self) -> usize {
        self.n_ctx
    }

    /// Forget the cached sequence.
    pub fn reset(&mut self) {
        self.pos = 0;
    }

    fn check(&self, tokens: &[u32]) -> Result<()> {
        let n_vocab = self.model.config.n_vocab;
        if let Some(&id) = tokens.iter().find(|&&t| t as usize >= n_vocab) {
            return Err(InferError::TokenRange { id, n_vocab });
        }
        if self.pos + tokens.len() > self.n_ctx {
            return Err(InferError::ContextFull {
                need: self.pos + tokens.len(),
                n_ctx: self.n_ctx,
            });
        }
        Ok(())
    }

    /// Append `tokens` to the sequence and return the logits after the last one.
    pub fn eval(&mut self, tokens: &[u32]) -> Result<&[f32]> {
        if tokens.is_empty() {
            return Err(InferError::Invalid("no tokens to evaluate".into()));
        }
        self.check(tokens)?;
        for chunk in tokens.chunks(self.s.cap) {
            self.forward(chunk, None);
        }
        Ok(&self.s.logits)
    }

    /// Append `tokens` and return the logits after every one of them (`tokens.len() * n_vocab`).
    pub fn eval_all(&mut self, tokens: &[u32]) -> Result<Vec<f32>> {
        self.check(tokens)?;
        let n_vocab = self.model.config.n_vocab;
        let mut out = vec![0f32; tokens.len() * n_vocab];
        for (i, chunk) in tokens.chunks(self.s.cap).enumerate() {
            let start = i * self.s.cap * n_vocab;
            self.forward(chunk, Some(&mut out[start..start + chunk.len() * n_vocab]));
        }
        Ok(out)
    }

    /// One batch through the network. `all_logits`: where to put every token's logits; without
    /// it only the last token's logits are computed (into `self.s.logits`).
    fn forward(&mut self, tokens: &[u32], all_logits: Option<&mut [f32]>) {
        let m = self.model;
        let c = &m.config;
        let n = tokens.len();
        let (e, qd, kvd, hd, ff) = (c.n_embd, c.q_dim(), c.kv_dim(), c.head_dim, c.n_ff);
        let pos0 = self.pos;
        let s = &mut self.s;

        // embeddings
        for (t, &id) in tokens.iter().enumerate() {
            slmpack_quant::dequantize_row(
                m.tok_embd.ty,
                m.tok_embd.row(id as usize),
                &mut s.x[t * e..(t + 1) * e],
            )
            .expect("weight types are checked when the model loads");
        }
        // rotation angles, shared by every layer and head
        let nd = c.rope.n_dims;
        for t in 0..n {
            rope_cache(
                &c.rope,
                pos0 + t,
                m.rope_freqs.as_deref(),
                &mut s.rope[t * nd..(t + 1) * nd],
            );
        }

        let scale = 1.0 / (hd as f32).sqrt();
        let group = c.n_head / c.n_head_kv;
        let n_ctx = self.n_ctx;
        let layer_stride = n_ctx * kvd;
        for (li, l) in m.layers.iter().enumerate() {
            let x = &mut s.x[..n * e];
            let xn = &mut s.xn[..n * e];
            for t in 0..n {
                rms_norm(
                    &x[t * e..(t + 1) * e],
                    &l.attn_norm,
                    c.rms_eps,
                    &mut xn[t * e..(t + 1) * e],
                );
            }
            let q = &mut s.q[..n * qd];
            let k = &mut s.k[..n * kvd];
            let v = &mut s.v[..n * kvd];
            matmul(&l.wq, xn, n, q);
            matmul(&l.wk, xn, n, k);
            matmul(&l.wv, xn, n, v);
            add_bias(q, l.bq.as_deref());
            add_bias(k, l.bk.as_deref());
            add_bias(v, l.bv.as_deref());
            for t in 0..n {
                let rc = &s.rope[t * nd..(t + 1) * nd];
                for h in q[t * qd..(t + 1) * qd].chunks_exact_mut(hd) {
                    rope_norm(h, rc);
                }
                for h in k[t * kvd..(t + 1) * kvd].chunks_exact_mut(hd) {
                    rope_norm(h, rc);
                }
            }
            // store K and V
            let base = li * layer_stride;
            self.k_cache[base + pos0 * kvd..base + (pos0 + n) * kvd].copy_from_slice(k);
            self.v_cache[base + pos0 * kvd..base + (pos0 + n) * kvd].copy_from_slice(v);
            let kc = &self.k_cache[base..base + layer_stride];
            let vc = &self.v_cache[base..base + layer_stride];

            // causal attention, one task per (token, head)
            let q = &s.q[..n * qd];
            s.att[..n * qd]
                .par_chunks_mut(hd)
                .enumerate()
                .for_each(|(idx, out)| {
                    let t = idx / c.n_head;
                    let h = idx % c.n_head;
                    let kvh = h / group;
                    let qh = &q[t * qd + h * hd..t * qd + (h + 1) * hd];
                    let n_kv = pos0 + t + 1;
                    SCORES.with(|sc| {
                        let mut sc = sc.borrow_mut();
                        if sc.len() < n_kv {
                            // once per thread: room for the whole context
                            sc.resize(n_ctx.max(n_kv), 0.0);
                        }
                        let sc = &mut sc[..n_kv];
                        for (j, sj) in sc.iter_mut().enumerate() {
                            let kj = &kc[j * kvd + kvh * hd..j * kvd + (kvh + 1) * hd];
                            *sj = dot_f32(qh, kj) * scale;
                        }
                        softmax(sc);
                        out.fill(0.0);
                        for (j, &p) in sc.iter().enumerate() {
                            let vj = &vc[j * kvd + kvh * hd..j * kvd + (kvh + 1) * hd];
                            for (o, &vv) in out.iter_mut().zip(vj) {
                                *o += p * vv;
                            }
                        }
                    });
                });
            let o = &mut s.o[..n * e];
            matmul(&l.wo, &s.att[..n * qd], n, o);
            add_bias(o, l.bo.as_deref());
            let x = &mut s.x[..n * e];
            for (xi, oi) in x.iter_mut().zip(o.iter()) {
                *xi += oi;
            }

            // feed-forward (SwiGLU)
            let xn = &mut s.xn[..n * e];
            for t in 0..n {
                rms_norm(
                    &x[t * e..(t + 1) * e],
                    &l.ffn_norm,
                    c.rms_eps,
                    &mut xn[t * e..(t + 1) * e],
                );
            }
            let gate = &mut s.gate[..n * ff];
            let up = &mut s.up[..n * ff];
            matmul(&l.w_gate, xn, n, gate);
            matmul(&l.w_up, xn, n, up);
            for (g, u) in gate.iter_mut().zip(up.iter()) {
                *g = silu(*g) * u;
            }
            let o = &mut s.o[..n * e];
            matmul(&l.w_down, gate, n, o);
            for (xi, oi) in x.iter_mut().zip(o.iter()) {
                *xi += oi;
            }
        }

        // output
        let x = &s.x[..n * e];
        match all_logits {
            Some(out) => {
                let xn = &mut s.xn[..n * e];
                for t in 0..n {
                    rms_norm(
                        &x[t * e..(t + 1) * e],
                        &m.output_norm,
                        c.rms_eps,
                        &mut xn[t * e..(t + 1) * e],
                    );
                }
                matmul(&m.output, xn, n, out);
                s.logits.copy_from_slice(&out[(n - 1) * c.n_vocab..]);
            }
            None => {
                let xn = &mut s.xn[..e];
                rms_norm(&x[(n - 1) * e..n * e], &m.output_norm, c.rms_eps, xn);
                matmul(&m.output, xn, 1, &mut s.logits);
            }
        }
        self.pos += n;
    }
}

fn add_bias(y: &mut [f32], b: Option<&[f32]>) {
    if let Some(b) = b {
        for row in y.chunks_exact_mut(b.len()) {
            for (v, bb) in row.iter_mut().zip(b) {
                *v += bb;
            }
        }
    }
}
