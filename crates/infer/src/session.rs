//! The forward pass with a KV cache: batched prefill and single-token decode.
//!
//! All buffers (KV cache sized to the context, activations sized to the largest batch) are
//! allocated when the session is created; decoding a token allocates nothing.

use std::cell::RefCell;

use crate::error::{InferError, Result};
use slmpack_kernels::vec::{
    dots_f16_ggml, dots_f16_ggml_group_ptr, gemm_f16_ptr, softmax_row, softmax_row_f16, swiglu,
    to_f16, Ahead,
};

use crate::matmul::{matmul, matvec_many};
use crate::model::Model;
use crate::ops::{rms_norm, rope_cache, rope_norm};
use crate::profile::{Laps, Profiles, Section};
use slmpack_kernels::hugebuf::HugeBuf;
use slmpack_kernels::pool::{for_each_row, for_each_row2, SharedMut};

/// Default number of prompt tokens processed per batch.
pub const DEFAULT_BATCH: usize = 256;

/// Query tokens per attention task in prefill.
const ATT_BLOCK: usize = 16;

/// Tokens per task of the per-token steps (norms, RoPE, residuals, SwiGLU) of a batch.
const TOKENS_PER_TASK: usize = 8;

/// Keys per K·Q task in decode.
const KEYS_PER_TASK: usize = 128;

/// V rows (head dimensions) per P·V task in decode.
const DIMS_PER_TASK: usize = 16;

/// Per-thread attention scratch: scores (f32) and probabilities (f16 bits), one row of the
/// context per query of a block of `ATT_BLOCK`, sized on first use, so decoding allocates
/// nothing.
#[derive(Default)]
struct AttScratch {
    scores: Vec<f32>,
    probs: Vec<u16>,
}

impl AttScratch {
    fn get(&mut self, n_ctx: usize) -> (&mut [f32], &mut [u16]) {
        if self.scores.len() < n_ctx {
            self.scores.resize(n_ctx, 0.0);
            self.probs.resize(n_ctx, 0);
        }
        (&mut self.scores, &mut self.probs)
    }
}

thread_local! {
    static ATT: RefCell<AttScratch> = RefCell::new(AttScratch::default());
}

/// Activation buffers for up to `cap` tokens.
struct Scratch {
    cap: usize,
    x: Vec<f32>,
    xn: Vec<f32>,
    q: Vec<f32>,
    /// `q` rounded to f16 for the attention products.
    qh: Vec<u16>,
    k: Vec<f32>,
    v: Vec<f32>,
    att: Vec<f32>,
    o: Vec<f32>,
    gate: Vec<f32>,
    up: Vec<f32>,
    rope: Vec<f32>,
    /// Decode's attention scores and probabilities (f16 bits), a row of `n_ctx` per head.
    scores: Vec<f32>,
    probs: Vec<u16>,
    /// Logits of the last token of the latest batch.
    logits: Vec<f32>,
}

/// Generation state of one sequence: KV cache, position and scratch buffers.
pub struct Session<'m, 'a> {
    model: &'m Model<'a>,
    n_ctx: usize,
    pos: usize,
    /// f16 bits, `[layer][kv head][position][head_dim]`: each head's keys one contiguous run
    k_cache: KvBuf,
    /// f16 bits, transposed: `[layer][kv_dim][position]` (so P·V is a dot product over positions,
    /// as in llama.cpp without flash attention)
    v_cache: KvBuf,
    s: Scratch,
    /// Time per section of the passes, when asked for ([`Session::enable_profile`]).
    profile: Option<Profiles>,
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
            k_cache: KvBuf::zeroed(kv)?,
            v_cache: KvBuf::zeroed(kv)?,
            s: Scratch {
                cap,
                x: vec![0.0; cap * c.n_embd],
                xn: vec![0.0; cap * c.n_embd.max(c.q_dim())],
                q: vec![0.0; cap * c.q_dim()],
                qh: vec![0; cap * c.q_dim()],
                k: vec![0.0; cap * c.kv_dim()],
                v: vec![0.0; cap * c.kv_dim()],
                att: vec![0.0; cap * c.q_dim()],
                o: vec![0.0; cap * c.n_embd],
                gate: vec![0.0; cap * c.n_ff],
                up: vec![0.0; cap * c.n_ff],
                rope: vec![0.0; cap * c.rope.n_dims],
                scores: vec![0.0; c.n_head * n_ctx],
                probs: vec![0; c.n_head * n_ctx],
                logits: vec![0.0; c.n_vocab],
            },
            profile: None,
        })
    }

    /// Times every later forward pass by section (see [`crate::profile`]); what was counted
    /// before is kept.
    pub fn enable_profile(&mut self) {
        self.profile.get_or_insert_with(Profiles::default);
    }

    /// The time per section of the passes since [`Session::enable_profile`], if it was called.
    pub fn profile(&self) -> Option<&Profiles> {
        self.profile.as_ref()
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

    /// Keep the first `n` cached tokens and drop the rest, so a shared prompt prefix is computed
    /// once: after `eval(prefix + a)`, `truncate(prefix.len())` then `eval(b)` gives the logits of
    /// `eval(prefix + b)`.
    pub fn truncate(&mut self, n: usize) -> Result<()> {
        if n > self.pos {
            return Err(InferError::Invalid(format!(
                "cannot keep {n} tokens: the cache holds {}",
                self.pos
            )));
        }
        self.pos = n;
        Ok(())
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
        self.eval_mut(tokens).map(|l| &*l)
    }

    /// [`Session::eval`], the logits writable (to mask tokens before sampling without a copy);
    /// the next evaluation overwrites them.
    pub fn eval_mut(&mut self, tokens: &[u32]) -> Result<&mut [f32]> {
        if tokens.is_empty() {
            return Err(InferError::Invalid("no tokens to evaluate".into()));
        }
        self.check(tokens)?;
        for chunk in tokens.chunks(self.s.cap) {
            slmpack_kernels::pool::hot(|| self.forward(chunk, None));
        }
        Ok(&mut self.s.logits)
    }

    /// Append `tokens` and return the logits after every one of them (`tokens.len() * n_vocab`).
    pub fn eval_all(&mut self, tokens: &[u32]) -> Result<Vec<f32>> {
        self.check(tokens)?;
        let n_vocab = self.model.config.n_vocab;
        let mut out = vec![0f32; tokens.len() * n_vocab];
        for (i, chunk) in tokens.chunks(self.s.cap).enumerate() {
            let start = i * self.s.cap * n_vocab;
            let logits = &mut out[start..start + chunk.len() * n_vocab];
            slmpack_kernels::pool::hot(|| self.forward(chunk, Some(logits)));
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
        let mut laps = Laps::start(self.profile.is_some());

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

        laps.lap(Section::Embed);
        let scale = 1.0 / (hd as f32).sqrt();
        let group = c.n_head / c.n_head_kv;
        let n_ctx = self.n_ctx;
        let layer_stride = n_ctx * kvd;
        for (li, l) in m.layers.iter().enumerate() {
            let x = &mut s.x[..n * e];
            let xn = &mut s.xn[..n * e];
            for_each_row(xn, e, TOKENS_PER_TASK, |t, xr| {
                rms_norm(&x[t * e..(t + 1) * e], &l.attn_norm, c.rms_eps, xr)
            });
            laps.lap(Section::Elementwise);
            let q = &mut s.q[..n * qd];
            let k = &mut s.k[..n * kvd];
            let v = &mut s.v[..n * kvd];
            if n == 1 {
                matvec_many(&[&l.wq, &l.wk, &l.wv], xn, &mut [&mut *q, &mut *k, &mut *v]);
            } else {
                matmul(&l.wq, xn, n, q);
                matmul(&l.wk, xn, n, k);
                matmul(&l.wv, xn, n, v);
            }
            laps.lap(Section::Qkv);
            add_bias(q, l.bq.as_deref());
            add_bias(k, l.bk.as_deref());
            add_bias(v, l.bv.as_deref());
            let rope = &s.rope;
            for_each_row2((q, qd), (k, kvd), TOKENS_PER_TASK, |t, qr, kr| {
                let rc = &rope[t * nd..(t + 1) * nd];
                for h in qr.chunks_exact_mut(hd) {
                    rope_norm(h, rc);
                }
                for h in kr.chunks_exact_mut(hd) {
                    rope_norm(h, rc);
                }
            });
            // store K (row per position) and V (transposed: row per dimension) as f16, and Q
            // rounded to f16 for the attention products
            let base = li * layer_stride;
            let (q, k, v) = (&*q, &*k, &*v);
            let qh = &mut s.qh[..n * qd];
            // K by KV head: head h's keys are rows of hd from base + h * n_ctx * hd, one per
            // position, so a decode task streams one contiguous run of keys (with the heads of
            // a position side by side it read 128 of every 384 bytes, which the hardware
            // prefetcher followed worse)
            for h in 0..c.n_head_kv {
                let at = base + (h * n_ctx + pos0) * hd;
                for_each_row(
                    &mut self.k_cache[at..at + n * hd],
                    hd,
                    TOKENS_PER_TASK,
                    |t, kr| to_f16(&k[t * kvd + h * hd..t * kvd + (h + 1) * hd], kr),
                );
            }
            for_each_row(qh, qd, TOKENS_PER_TASK, |t, qr| {
                to_f16(&q[t * qd..(t + 1) * qd], qr)
            });
            // (decode stores its one V column below, after K·Q)
            if n > 1 {
                let vt = &mut self.v_cache[base..base + layer_stride];
                for_each_row(vt, n_ctx, 16, |d, row| {
                    for (t, o) in row[pos0..pos0 + n].iter_mut().enumerate() {
                        *o = half::f16::from_f32(v[t * kvd + d]).to_bits();
                    }
                });
            }
            let kc = &self.k_cache[base..base + layer_stride];
            let vc = &self.v_cache[base..base + layer_stride];
            let qh = &s.qh[..n * qd];

            // causal attention as llama.cpp computes it with its default F16 KV cache: Q rounded
            // to f16, K·Q and P·V as f16 dot products, softmax in f32 with ggml's exp, P rounded
            // to f16. One task per (head, block of tokens).
            // llama.cpp's rows hold every cell of the cache after this batch (later ones masked),
            // and the shapes pick its kernels: `llamafile_sgemm` (tinyBLAS, `dot_f16`) for two
            // query tokens or more when the rows count is a multiple of 4 and the row length one
            // of 8, else `ggml_vec_dot_f16` (`dot_f16_ggml`); the softmax uses libm's `expf` past
            // the row's last group of 8
            let row_len = llama_kv_len(pos0 + n, n_ctx);
            let kq_tiny = n >= 2 && row_len.is_multiple_of(4) && hd.is_multiple_of(8);
            let pv_tiny = n >= 2 && hd.is_multiple_of(4) && row_len.is_multiple_of(8);
            let out = SharedMut(s.att.as_mut_ptr());
            let blocks = n.div_ceil(ATT_BLOCK);
            if n == 1 {
                // decode: the query heads that share a KV head go together, so each key and V
                // row is widened from f16 once for all of them (the same products as below), in
                // three balanced steps: K·Q over chunks of keys, the softmax of each head, P·V
                // over chunks of V rows. K·Q, mostly arithmetic, fetches the V columns of its keys
                // into cache as it goes, so P·V does not wait on memory (one thread, q4_0, ~600
                // positions: P·V 0.80 -> 0.42 ms a token, K·Q +0.02; docs/performance.md)
                laps.lap(Section::Rope);
                let n_kv = pos0 + 1;
                let isa = slmpack_kernels::isa();
                let kchunks = n_kv.div_ceil(KEYS_PER_TASK);
                let sc = SharedMut(s.scores.as_mut_ptr());
                slmpack_kernels::pool::for_each(c.n_head_kv * kchunks, |task| {
                    let (kvh, k0) = (task / kchunks, task % kchunks * KEYS_PER_TASK);
                    let k1 = (k0 + KEYS_PER_TASK).min(n_kv);
                    // SAFETY: scores (heads of kvh) x (keys k0..k1) belong to this task only;
                    // `scores` holds n_head rows of n_ctx >= n_kv
                    unsafe {
                        dots_f16_ggml_group_ptr(
                            isa,
                            &qh[kvh * group * hd..],
                            hd,
                            group,
                            hd,
                            &kc[(kvh * n_ctx + k0) * hd..],
                            hd,
                            hd,
                            sc.at(kvh * group * n_ctx + k0),
                            n_ctx,
                            k1 - k0,
                            // this task's columns of the V rows, for P·V below
                            Ahead::new(&vc[kvh * hd * n_ctx + k0..], k1 - k0, n_ctx, hd),
                        )
                    };
                });
                laps.lap(Section::Kq);
                // the new token's V column: K·Q fetched the lines it goes into (its V columns
                // end at this one), where storing it before K·Q missed the cache once for each
                // of its `kvd` elements, a V row apart
                let vt = &mut self.v_cache[base..base + layer_stride];
                let mut h = [0u16; 64];
                for (c0, x) in v.chunks(64).enumerate() {
                    to_f16(x, &mut h[..x.len()]);
                    for (j, &b) in h[..x.len()].iter().enumerate() {
                        vt[(c0 * 64 + j) * n_ctx + pos0] = b;
                    }
                }
                let vc = &self.v_cache[base..base + layer_stride];
                slmpack_kernels::pool::for_each_row2(
                    (&mut s.scores[..c.n_head * n_ctx], n_ctx),
                    (&mut s.probs[..c.n_head * n_ctx], n_ctx),
                    1,
                    |_, sc, p| {
                        softmax_row_f16(&mut sc[..n_kv], scale, row_len, &mut p[..n_kv]);
                    },
                );
                laps.lap(Section::Softmax);
                let probs = &s.probs[..];
                let dchunks = hd.div_ceil(DIMS_PER_TASK);
                slmpack_kernels::pool::for_each(c.n_head_kv * dchunks, |task| {
                    let (kvh, d0) = (task / dchunks, task % dchunks * DIMS_PER_TASK);
                    let d1 = (d0 + DIMS_PER_TASK).min(hd);
                    // SAFETY: outputs (heads of kvh) x (dims d0..d1) belong to this task only;
                    // `att` holds n_head * hd
                    unsafe {
                        dots_f16_ggml_group_ptr(
                            isa,
                            &probs[kvh * group * n_ctx..],
                            n_ctx,
                            group,
                            n_kv,
                            &vc[(kvh * hd + d0) * n_ctx..],
                            n_ctx,
                            row_len,
                            out.at(kvh * group * hd + d0),
                            hd,
                            d1 - d0,
                            Ahead::NONE,
                        )
                    };
                });
                laps.lap(Section::Pv);
            } else {
                laps.lap(Section::Rope);
                slmpack_kernels::pool::for_each(c.n_head * blocks, |task| {
                    let h = task % c.n_head;
                    let b = task / c.n_head;
                    let kvh = h / group;
                    ATT.with(|buf| {
                        let mut buf = buf.borrow_mut();
                        let (sc_all, p_all) = buf.get(ATT_BLOCK * n_ctx);
                        let (t0, t1) = (b * ATT_BLOCK, ((b + 1) * ATT_BLOCK).min(n));
                        // keys (and V columns) up to the last query of this block
                        let kmax = pos0 + t1;
                        // key j of head `kvh` starts at (kvh * n_ctx + j) * hd
                        let keys = &kc[kvh * n_ctx * hd..];
                        // dimension d of head `kvh` is the V row (kvh * hd + d), n_ctx long
                        let vs = &vc[kvh * hd * n_ctx..];
                        let isa = slmpack_kernels::isa();
                        if kq_tiny {
                            // every query of the block against keys 0..kmax (the later ones are
                            // masked below), in register tiles; score row t - t0 at (t - t0) * n_ctx
                            // SAFETY: sc_all holds ATT_BLOCK rows of n_ctx >= kmax.
                            unsafe {
                                gemm_f16_ptr(
                                    isa,
                                    &qh[t0 * qd + h * hd..],
                                    qd,
                                    t1 - t0,
                                    keys,
                                    hd,
                                    kmax,
                                    hd,
                                    sc_all.as_mut_ptr(),
                                    n_ctx,
                                )
                            };
                        }
                        for t in t0..t1 {
                            let q = &qh[t * qd + h * hd..t * qd + (h + 1) * hd];
                            let n_kv = pos0 + t + 1;
                            let row = (t - t0) * n_ctx;
                            let sc = &mut sc_all[row..row + n_kv];
                            if !kq_tiny {
                                dots_f16_ggml(q, keys, hd, hd, sc);
                            }
                            softmax_row(sc, scale, row_len);
                            let p = &mut p_all[row..row + n_ctx];
                            to_f16(sc, &mut p[..n_kv]);
                            if pv_tiny {
                                // masked probabilities are zero (as llama.cpp's); the tiled P·V
                                // below runs every row of the block to kmax
                                p[n_kv..kmax].fill(0);
                            } else {
                                let o0 = t * qd + h * hd;
                                // SAFETY: outputs (t, h, 0..hd) belong to this task only; in bounds
                                let o = unsafe { std::slice::from_raw_parts_mut(out.at(o0), hd) };
                                dots_f16_ggml(&p[..n_kv], vs, n_ctx, row_len, o);
                            }
                        }
                        if pv_tiny {
                            // SAFETY: outputs (t, h, 0..hd) for t in t0..t1 belong to this task
                            // only (other tasks write other heads or other tokens); in bounds.
                            unsafe {
                                gemm_f16_ptr(
                                    isa,
                                    p_all,
                                    n_ctx,
                                    t1 - t0,
                                    vs,
                                    n_ctx,
                                    hd,
                                    kmax,
                                    out.at(t0 * qd + h * hd),
                                    qd,
                                )
                            };
                        }
                    });
                });
                laps.lap(Section::Attention);
            }
            let o = &mut s.o[..n * e];
            matmul(&l.wo, &s.att[..n * qd], n, o);
            laps.lap(Section::Wo);
            add_bias(o, l.bo.as_deref());
            let x = &mut s.x[..n * e];
            let o = &*o;
            for_each_row(x, e, TOKENS_PER_TASK, |t, xr| {
                add(xr, &o[t * e..(t + 1) * e])
            });

            // feed-forward (SwiGLU)
            let xn = &mut s.xn[..n * e];
            let x = &*x;
            for_each_row(xn, e, TOKENS_PER_TASK, |t, xr| {
                rms_norm(&x[t * e..(t + 1) * e], &l.ffn_norm, c.rms_eps, xr)
            });
            laps.lap(Section::Elementwise);
            let gate = &mut s.gate[..n * ff];
            let up = &mut s.up[..n * ff];
            if n == 1 {
                matvec_many(&[&l.w_gate, &l.w_up], xn, &mut [&mut *gate, &mut *up]);
            } else {
                matmul(&l.w_gate, xn, n, gate);
                matmul(&l.w_up, xn, n, up);
            }
            laps.lap(Section::GateUp);
            let up = &*up;
            for_each_row(gate, ff, TOKENS_PER_TASK, |t, g| {
                swiglu(g, &up[t * ff..(t + 1) * ff])
            });
            laps.lap(Section::Elementwise);
            let o = &mut s.o[..n * e];
            matmul(&l.w_down, gate, n, o);
            laps.lap(Section::Down);
            let o = &*o;
            let x = &mut s.x[..n * e];
            for_each_row(x, e, TOKENS_PER_TASK, |t, xr| {
                add(xr, &o[t * e..(t + 1) * e])
            });
        }

        laps.lap(Section::Elementwise);
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
        laps.lap(Section::Output);
        if let Some(p) = self.profile.as_mut() {
            p.add(n, &laps);
        }
        self.pos += n;
    }
}

/// KV cache memory (f16 bits): anonymous pages with transparent huge pages asked for
/// ([`HugeBuf`]), all faulted in when the session is made (as llama.cpp clears its KV buffer
/// when it makes a context), so page faults count in the load time, not in prefill. Decode
/// attention reads every layer's cache each token, a few hundred bytes of each of thousands of
/// K rows and V rows `n_ctx` elements apart: with 4 KiB pages nearly every V row is on a page of
/// its own. With 2 MiB pages P·V ran 15-25% faster in a micro-benchmark of SmolLM2's decode
/// attention at 800 positions (128 MiB read between layers, as the weights stream in decode);
/// end to end (~5% of a token) the gain is inside this machine's run-to-run noise.
struct KvBuf {
    buf: HugeBuf,
    len: usize,
}

impl KvBuf {
    fn zeroed(len: usize) -> Result<KvBuf> {
        let bytes = 2 * len;
        let mut buf = HugeBuf::zeroed(bytes).map_err(|e| {
            InferError::Invalid(format!(
                "cannot allocate the KV cache ({} MiB): {e}\n  hint: lower `--ctx-size`",
                bytes >> 20
            ))
        })?;
        buf.prefault();
        Ok(KvBuf { buf, len })
    }
}

impl std::ops::Deref for KvBuf {
    type Target = [u16];
    fn deref(&self) -> &[u16] {
        // the buffer is page-aligned and holds 2 * len bytes
        &bytemuck::cast_slice(&self.buf[..])[..self.len]
    }
}

impl std::ops::DerefMut for KvBuf {
    fn deref_mut(&mut self) -> &mut [u16] {
        &mut bytemuck::cast_slice_mut(&mut self.buf[..])[..self.len]
    }
}

/// `x += y`, element by element.
fn add(x: &mut [f32], y: &[f32]) {
    for (xi, yi) in x.iter_mut().zip(y) {
        *xi += yi;
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

/// The number of cache cells llama.cpp's attention rows span after a batch that ends at `used`
/// cells, in a cache of `n_ctx`: at least 256, in steps of 256, at most the cache
/// (`llama_kv_cache::get_n_kv`). The cells past `used` are masked, so they add only zeros; what
/// the length changes is which kernels llama.cpp picks and where their vector loops end
/// (tinyBLAS or `ggml_vec_dot_f16`, the latter's f64 tail, the softmax's libm tail), and the
/// attention here follows the same choices.
fn llama_kv_len(used: usize, n_ctx: usize) -> usize {
    used.next_multiple_of(256).max(256).min(n_ctx).max(used)
}

#[cfg(test)]
mod tests {
    use super::*;
    use slmpack_gguf::{GgmlType, GgufFile, GgufWriter};

    /// A random F32 llama with 2 layers, GQA (4 query heads, 2 KV heads) and 40 tokens.
    fn tiny(path: &std::path::Path) {
        tiny_with_embd(path, GgmlType::F32)
    }

    /// [`tiny`], its (tied) token embedding stored as `embd`.
    fn tiny_with_embd(path: &std::path::Path, embd: GgmlType) {
        let (n_embd, n_head, n_kv, n_ff, n_vocab, n_layer) = (64u64, 4u64, 2u64, 96u64, 40u64, 2);
        let hd = n_embd / n_head;
        let mut w = GgufWriter::new();
        w.set("general.architecture", "llama");
        w.set("llama.block_count", n_layer as u32);
        w.set("llama.context_length", 128u32);
        w.set("llama.embedding_length", n_embd as u32);
        w.set("llama.feed_forward_length", n_ff as u32);
        w.set("llama.attention.head_count", n_head as u32);
        w.set("llama.attention.head_count_kv", n_kv as u32);
        w.set("llama.attention.layer_norm_rms_epsilon", 1e-5f32);
        w.set("llama.vocab_size", n_vocab as u32);
        w.add_tensor("token_embd.weight", vec![n_embd, n_vocab], embd)
            .unwrap();
        let mut add = |name: &str, dims: Vec<u64>| {
            w.add_tensor(name, dims, GgmlType::F32).unwrap();
        };
        add("output_norm.weight", vec![n_embd]);
        for l in 0..n_layer {
            let p = |s: &str| format!("blk.{l}.{s}");
            add(&p("attn_norm.weight"), vec![n_embd]);
            add(&p("attn_q.weight"), vec![n_embd, n_head * hd]);
            add(&p("attn_k.weight"), vec![n_embd, n_kv * hd]);
            add(&p("attn_v.weight"), vec![n_embd, n_kv * hd]);
            add(&p("attn_output.weight"), vec![n_head * hd, n_embd]);
            add(&p("ffn_norm.weight"), vec![n_embd]);
            add(&p("ffn_gate.weight"), vec![n_embd, n_ff]);
            add(&p("ffn_up.weight"), vec![n_embd, n_ff]);
            add(&p("ffn_down.weight"), vec![n_ff, n_embd]);
        }
        let mut seed = 0x9e37_79b9_7f4a_7c15u64;
        w.write(path, |_, spec, out| {
            let n: u64 = spec.dims.iter().product();
            let norm = spec.dims.len() == 1;
            let mut vals = Vec::with_capacity(n as usize);
            for _ in 0..n {
                seed = seed
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                let r = ((seed >> 40) as f32 / (1u64 << 24) as f32 - 0.5) * 0.8;
                vals.push(if norm { 1.0 + r * 0.2 } else { r });
            }
            let mut buf = vec![0u8; spec.ty.row_bytes(n).unwrap() as usize];
            slmpack_quant::quantize(spec.ty, &vals, spec.dims[0] as usize, &mut buf).unwrap();
            out.write_all(&buf)
        })
        .unwrap();
    }

    #[test]
    fn truncate_reuses_a_prefix() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tiny.gguf");
        tiny(&path);
        let f = GgufFile::open(&path).unwrap();
        let m = Model::load(&f).unwrap();
        let prefix = [
            3u32, 14, 15, 9, 26, 5, 35, 8, 9, 7, 9, 3, 2, 38, 4, 6, 2, 6, 4, 3,
        ];
        let (a, b) = ([1u32, 2, 3, 4, 5], [7u32, 11, 13]);
        for batch in [1, 4, 256] {
            let mut s = Session::new(&m, 64, batch).unwrap();
            s.eval(&[&prefix[..], &a[..]].concat()).unwrap();
            s.truncate(prefix.len()).unwrap();
            assert_eq!(s.pos(), prefix.len());
            let got = s.eval(&b).unwrap().to_vec();
            assert_eq!(s.pos(), prefix.len() + b.len());

            let mut fresh = Session::new(&m, 64, batch).unwrap();
            let want = fresh
                .eval(&[&prefix[..], &b[..]].concat())
                .unwrap()
                .to_vec();
            assert_eq!(got, want, "batch {batch}");
            assert!(want.iter().all(|v| v.is_finite()));
            // a different suffix gives different logits (the test can fail)
            fresh.truncate(prefix.len()).unwrap();
            assert_ne!(fresh.eval(&a).unwrap(), &want[..]);
            assert!(s.truncate(s.pos() + 1).is_err());
        }
    }

    #[test]
    fn a_packed_tied_output_gives_the_logits_of_the_files_matrix() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tiny.q8_0.gguf");
        tiny_with_embd(&path, GgmlType::Q8_0);
        let f = GgufFile::open(&path).unwrap();
        let packed = Model::load(&f).unwrap();
        assert!(packed.tied_output);
        let isa = slmpack_kernels::isa();
        // 40 rows: five whole groups of 8, so the tied output is packed where the ISA packs
        let packs = slmpack_kernels::packed::packs(isa, GgmlType::Q8_0, 40);
        assert_eq!(packed.output.packed.is_some(), packs, "{isa:?}");
        let mut plain = Model::load(&f).unwrap();
        plain.output.packed = None;
        let toks: Vec<u32> = (0..21).map(|i| (i * 11 + 5) % 40).collect();
        for batch in [1, 8] {
            let mut a = Session::new(&packed, 64, batch).unwrap();
            let mut b = Session::new(&plain, 64, batch).unwrap();
            // every token's logits: the one-token and the batched products
            let (la, lb) = (a.eval_all(&toks).unwrap(), b.eval_all(&toks).unwrap());
            assert_eq!(la.len(), toks.len() * 40);
            assert!(la.iter().all(|v| v.is_finite()));
            let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
            assert_eq!(bits(&la), bits(&lb), "batch {batch}");
        }
    }

    #[test]
    fn the_profile_tiles_each_pass_and_changes_no_logit() {
        use crate::profile::Section;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tiny.gguf");
        tiny(&path);
        let f = GgufFile::open(&path).unwrap();
        let m = Model::load(&f).unwrap();
        let toks: Vec<u32> = (0..9).map(|i| (i * 5 + 1) % 40).collect();
        let mut plain = Session::new(&m, 32, 8).unwrap();
        let mut timed = Session::new(&m, 32, 8).unwrap();
        assert!(timed.profile().is_none());
        timed.enable_profile();
        let t0 = std::time::Instant::now();
        // a prompt of 9 in batches of 8 and 1, then 3 decode steps
        let want: Vec<f32> = plain.eval(&toks).unwrap().to_vec();
        assert_eq!(timed.eval(&toks).unwrap(), &want[..]);
        for t in [3u32, 17, 30] {
            let want = plain.eval(&[t]).unwrap().to_vec();
            assert_eq!(timed.eval(&[t]).unwrap(), &want[..]);
        }
        let wall = t0.elapsed().as_secs_f64() * 1e3;
        let p = timed.profile().unwrap();
        assert_eq!((p.prefill.passes, p.prefill.tokens), (1, 8));
        // the ninth prompt token went alone, as decode steps do
        assert_eq!((p.decode.passes, p.decode.tokens), (4, 4));
        let names = |q: &crate::profile::Profile| q.sections().map(|(s, _)| s).collect::<Vec<_>>();
        for s in [
            Section::Qkv,
            Section::Attention,
            Section::Wo,
            Section::GateUp,
            Section::Down,
        ] {
            assert!(names(&p.prefill).contains(&s), "prefill lacks {s:?}");
        }
        for s in [Section::Kq, Section::Softmax, Section::Pv, Section::Output] {
            assert!(names(&p.decode).contains(&s), "decode lacks {s:?}");
        }
        for s in [Section::Kq, Section::Softmax, Section::Pv] {
            assert!(!names(&p.prefill).contains(&s), "prefill has {s:?}");
        }
        assert!(!names(&p.decode).contains(&Section::Attention));
        let timed_ms = p.prefill.total_ms() + p.decode.total_ms();
        assert!(
            timed_ms > 0.0 && timed_ms <= wall,
            "{timed_ms} ms of sections in {wall} ms"
        );
    }

    #[test]
    fn batched_and_token_by_token_evaluation_agree() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tiny.gguf");
        tiny(&path);
        let f = GgufFile::open(&path).unwrap();
        let m = Model::load(&f).unwrap();
        let toks: Vec<u32> = (0..37).map(|i| (i * 7 + 3) % 40).collect();
        let mut batched = Session::new(&m, 64, 16).unwrap();
        let all = batched.eval_all(&toks).unwrap();
        let mut single = Session::new(&m, 64, 1).unwrap();
        for (i, &t) in toks.iter().enumerate() {
            let l = single.eval(&[t]).unwrap();
            // as in llama.cpp, one-token steps sum the attention products in another order than
            // batches (`ggml_vec_dot_f16` instead of tinyBLAS): close, not always identical bits
            let want = &all[i * 40..(i + 1) * 40];
            let scale = want.iter().fold(0f32, |m, v| m.max(v.abs()));
            for (a, b) in l.iter().zip(want) {
                assert!((a - b).abs() <= 1e-3 * scale, "position {i}: {a} vs {b}");
            }
        }
    }
}
