//! Matrix-vector and matrix-matrix products of a GGUF weight with f32 activations.
//!
//! This is the one interface the model code calls. Two implementations sit behind it:
//! * [`slmpack_kernels`]: ggml-style dot products against activations quantized on the fly
//!   (Q8_0/Q8_1 for the 32-blocks, Q8_K for the K-quants, f16/bf16 for F16/BF16 weights) with a
//!   scalar reference and AVX2 / NEON / NEON+dotprod versions chosen once at run time
//!   (`SLMPACK_ISA` forces one), for every type it supports;
//! * the portable path for the rest (e.g. IQ4_NL, Q2_K/Q3_K): each weight row is dequantized into
//!   a small per-thread scratch buffer (`slmpack_quant::dequantize_row`) and dotted with the f32
//!   activations.
//!
//! Both run in parallel over output rows ([`slmpack_kernels::pool::for_each`]: the spinning
//! pool during a forward pass, rayon elsewhere); the batch (prefill) form reuses each weight row
//! (dequantized or not) for every token of the batch.

use std::cell::RefCell;

use crate::ops::dot_f32;
use crate::tensor::QTensor;
use slmpack_kernels::pool::SharedMut;

/// Output rows per parallel task.
const ROWS_PER_TASK: usize = 16;

thread_local! {
    static ROW: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
}

/// `y = W x` for one activation vector (`x.len() == w.cols`, `y.len() == w.rows`).
pub fn matvec(w: &QTensor, x: &[f32], y: &mut [f32]) {
    matmul(w, x, 1, y);
}

/// `ys[t] = W xs[t]` for `n_tokens` activation rows stored one after another
/// (`xs.len() == n_tokens * w.cols`, `ys.len() == n_tokens * w.rows`).
pub fn matmul(w: &QTensor, xs: &[f32], n_tokens: usize, ys: &mut [f32]) {
    assert_eq!(
        xs.len(),
        n_tokens * w.cols,
        "matmul `{}`: input size",
        w.name
    );
    assert_eq!(
        ys.len(),
        n_tokens * w.rows,
        "matmul `{}`: output size",
        w.name
    );
    if let Some(p) = &w.packed {
        slmpack_kernels::packed::gemm_packed(p, xs, n_tokens, ys);
        return;
    }
    if slmpack_kernels::supports(w.ty) {
        let kw = slmpack_kernels::Weights {
            ty: w.ty,
            rows: w.rows,
            cols: w.cols,
            data: w.data,
        };
        slmpack_kernels::gemm(&kw, xs, n_tokens, ys);
        return;
    }
    matmul_dequant(w, xs, n_tokens, ys);
}

/// `ys[i] = W_i x` for one token and several weights that multiply the same activations (Q, K
/// and V; gate and up): where they are all packed and take the same activations, one call
/// prepares the activations once and runs every product in one parallel section
/// ([`slmpack_kernels::packed::gemv_packed_many`]: the same bits as one product at a time);
/// otherwise one [`matvec`] each.
pub fn matvec_many(ws: &[&QTensor], x: &[f32], ys: &mut [&mut [f32]]) {
    use slmpack_kernels::packed::{can_share, gemv_packed_many, Packed, MANY_MAX};
    assert_eq!(ws.len(), ys.len(), "one output per weight");
    if let Some(first) = ws.first().and_then(|w| w.packed.as_deref()) {
        if ws.len() <= MANY_MAX {
            let mut ps: [&Packed; MANY_MAX] = [first; MANY_MAX];
            let mut all = true;
            for (p, w) in ps.iter_mut().zip(ws) {
                match w.packed.as_deref() {
                    Some(q) => *p = q,
                    None => all = false,
                }
            }
            let ps = &ps[..ws.len()];
            if all && can_share(ps) {
                gemv_packed_many(ps, x, ys);
                return;
            }
        }
    }
    for (w, y) in ws.iter().zip(ys.iter_mut()) {
        matvec(w, x, y);
    }
}

/// The portable path: dequantize each weight row, then f32 dot products.
pub fn matmul_dequant(w: &QTensor, xs: &[f32], n_tokens: usize, ys: &mut [f32]) {
    let out = SharedMut(ys.as_mut_ptr());
    let rows = w.rows;
    let cols = w.cols;
    let n_tasks = rows.div_ceil(ROWS_PER_TASK);
    slmpack_kernels::pool::for_each(n_tasks, |task| {
        let r0 = task * ROWS_PER_TASK;
        let r1 = (r0 + ROWS_PER_TASK).min(rows);
        let direct = w.ty == slmpack_gguf::GgmlType::F32;
        ROW.with(|buf| {
            let mut buf = buf.borrow_mut();
            if !direct && buf.len() != cols {
                buf.resize(cols, 0.0);
            }
            for r in r0..r1 {
                let bytes = w.row(r);
                let row: &[f32] = match direct.then(|| bytemuck::try_cast_slice::<u8, f32>(bytes)) {
                    Some(Ok(f)) => f,
                    _ => {
                        if buf.len() != cols {
                            buf.resize(cols, 0.0);
                        }
                        slmpack_quant::dequantize_row(w.ty, bytes, &mut buf[..])
                            .expect("weight types are checked when the model loads");
                        &buf[..]
                    }
                };
                for t in 0..n_tokens {
                    let v = dot_f32(row, &xs[t * cols..(t + 1) * cols]);
                    // SAFETY: (t, r) is written by this task only; index < n_tokens * rows.
                    unsafe { *out.at(t * rows + r) = v };
                }
            }
        });
    });
}
