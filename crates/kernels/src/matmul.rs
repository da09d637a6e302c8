//! Matrix-vector (decode) and matrix-matrix (prefill) products, parallel over chunks of rows
//! with [`crate::pool::for_each`] (the spinning pool inside a forward pass, rayon elsewhere).

use std::cell::RefCell;

use crate::pool::SharedMut;

use crate::{
    act_scales, act_scales_len, act_type, isa, kernel, row_bytes, tile_shape, GgmlType, Isa,
    TileFn, MAX_TILE,
};

/// A matrix problem the kernels cannot take.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum KernelError {
    /// No dot product for this weight type.
    #[error("no matmul kernel for `{0}` weights\n  hint: slmpack-kernels multiplies F32, F16, BF16, Q8_0, Q4_0, Q4_1, Q5_0, Q5_1, Q4_K, Q5_K and Q6_K")]
    UnsupportedType(GgmlType),
    /// The row length is not a whole number of blocks.
    #[error("`{ty}` weights need rows of a multiple of {block} elements, got {cols}")]
    RowLength {
        /// Weight type.
        ty: GgmlType,
        /// Its block size.
        block: usize,
        /// The row length asked for.
        cols: usize,
    },
    /// The byte count does not match the shape.
    #[error("`{ty}` weights of {rows}x{cols} take {expected} bytes, got {got}")]
    Size {
        /// Weight type.
        ty: GgmlType,
        /// Rows.
        rows: usize,
        /// Row length.
        cols: usize,
        /// Bytes the shape needs.
        expected: usize,
        /// Bytes given.
        got: usize,
    },
    /// The memory for repacked weights could not be had.
    #[error("cannot allocate {bytes} bytes for repacked weights: {reason}\n  hint: free memory, or set `SLMPACK_REPACK=0` to multiply the weights as they are in the file")]
    Alloc {
        /// Bytes asked for.
        bytes: usize,
        /// The system's error.
        reason: String,
    },
}

/// A weight matrix in its GGUF encoding: `rows` rows of `cols` elements (ggml's `ne[1]` and
/// `ne[0]`), row-major, `data` exactly `rows * row_bytes(ty, cols)` bytes.
#[derive(Clone, Copy, Debug)]
pub struct Weights<'a> {
    /// Element type.
    pub ty: GgmlType,
    /// Number of rows (outputs).
    pub rows: usize,
    /// Elements per row (inputs).
    pub cols: usize,
    /// The encoded rows.
    pub data: &'a [u8],
}

impl<'a> Weights<'a> {
    /// Checks the type and the shape against the byte count.
    pub fn new(
        ty: GgmlType,
        rows: usize,
        cols: usize,
        data: &'a [u8],
    ) -> Result<Self, KernelError> {
        let w = Weights {
            ty,
            rows,
            cols,
            data,
        };
        w.validate()?;
        Ok(w)
    }

    /// Checks the type and the shape against the byte count.
    pub fn validate(&self) -> Result<(), KernelError> {
        if act_type(self.ty).is_none() {
            return Err(KernelError::UnsupportedType(self.ty));
        }
        let block = self.ty.block_size();
        if !self.cols.is_multiple_of(block) {
            return Err(KernelError::RowLength {
                ty: self.ty,
                block,
                cols: self.cols,
            });
        }
        let expected = self.rows * row_bytes(self.ty, self.cols);
        if self.data.len() != expected {
            return Err(KernelError::Size {
                ty: self.ty,
                rows: self.rows,
                cols: self.cols,
                expected,
                got: self.data.len(),
            });
        }
        Ok(())
    }

    /// Bytes of one encoded row.
    pub fn row_bytes(&self) -> usize {
        row_bytes(self.ty, self.cols)
    }
}

thread_local! {
    /// Activation scratch, kept per calling thread and reused (grows, never shrinks).
    static SCRATCH: RefCell<Vec<u64>> = const { RefCell::new(Vec::new()) };
}

/// Runs `f` with at least `bytes` of scratch. Takes the buffer out of the thread-local for the
/// duration, so a nested call (a rayon worker stealing another matmul while it waits) gets its own
/// buffer instead of a borrow conflict.
pub(crate) fn with_scratch<R>(bytes: usize, f: impl FnOnce(&mut [u8]) -> R) -> R {
    let mut buf = SCRATCH.with(|s| std::mem::take(&mut *s.borrow_mut()));
    let words = bytes.div_ceil(8);
    if buf.len() < words {
        buf.resize(words, 0);
    }
    let r = f(&mut bytemuck::cast_slice_mut::<u64, u8>(&mut buf)[..bytes]);
    SCRATCH.with(|s| {
        let mut s = s.borrow_mut();
        if s.capacity() < buf.capacity() {
            *s = buf;
        }
    });
    r
}

/// Rows per rayon task: enough tasks to balance, few enough to keep scheduling cheap.
pub(crate) fn rows_per_task(rows: usize, row_bytes: usize) -> usize {
    let threads = rayon::current_num_threads().max(1);
    let by_balance = rows.div_ceil(threads * 8).max(1);
    // at least ~16 KiB of weights per task
    let by_size = (16 * 1024usize).div_ceil(row_bytes.max(1));
    by_balance.max(by_size).min(rows.max(1))
}

/// Units (rows, row tiles, row groups of `unit_bytes` each) per piece of a one-token product
/// ([`crate::pool::for_each_share`]): about 8 KiB of weights. Each thread walks one contiguous
/// share of pieces (as ggml splits a matrix-vector product: one run of memory, which the hardware
/// prefetcher follows from its start; ~16 tasks handed out in turn restarted a stream every
/// ~20 KiB and were 13-24% slower in two-thread decode, docs/performance.md), and the pieces let
/// a thread that is done take over the end of a share that fell behind.
pub(crate) fn decode_piece(unit_bytes: usize) -> usize {
    (8 * 1024usize).div_ceil(unit_bytes.max(1))
}

/// `y = W x` for one token: `x.len() == w.cols`, `y.len() == w.rows`, with the kernels of
/// [`isa()`].
///
/// # Panics
/// If `w` is not valid ([`Weights::validate`]) or the lengths do not match.
pub fn gemv(w: &Weights, x: &[f32], y: &mut [f32]) {
    gemv_isa(isa(), w, x, y)
}

/// [`gemv`] with the kernels of a given instruction set (tests, benchmarks).
///
/// # Panics
/// As [`gemv`], and if `isa` cannot run here.
pub fn gemv_isa(isa: Isa, w: &Weights, x: &[f32], y: &mut [f32]) {
    gemm_isa(isa, w, x, 1, y)
}

/// `ys[t] = W xs[t]` for `n_tokens` tokens: `xs.len() == n_tokens * w.cols` (token-major),
/// `ys.len() == n_tokens * w.rows` with `ys[t * rows + r]`, with the kernels of [`isa()`].
///
/// # Panics
/// If `w` is not valid ([`Weights::validate`]) or the lengths do not match.
pub fn gemm(w: &Weights, xs: &[f32], n_tokens: usize, ys: &mut [f32]) {
    gemm_isa(isa(), w, xs, n_tokens, ys)
}

/// [`gemm`] with the kernels of a given instruction set (tests, benchmarks).
///
/// # Panics
/// As [`gemm`], and if `isa` cannot run here.
pub fn gemm_isa(isa: Isa, w: &Weights, xs: &[f32], n_tokens: usize, ys: &mut [f32]) {
    if let Err(e) = w.validate() {
        panic!("{e}");
    }
    assert!(isa.usable(), "instruction set `{isa}` cannot run here");
    assert_eq!(xs.len(), n_tokens * w.cols, "activations: n_tokens * cols");
    assert_eq!(ys.len(), n_tokens * w.rows, "outputs: n_tokens * rows");
    if n_tokens == 0 || w.rows == 0 {
        return;
    }
    #[cfg(target_arch = "x86_64")]
    if (w.ty == GgmlType::F16 && isa.is_x86() && gemm_f16_as_llama(isa, w, xs, n_tokens, ys))
        || gemm_tiny_as_llama(isa, w, xs, n_tokens, ys)
    {
        return;
    }
    let at = act_type(w.ty).expect("validated");
    let f = kernel(isa, w.ty).expect("usable isa has every kernel");
    let (cols, rows) = (w.cols, w.rows);
    let wrb = w.row_bytes();
    let arb = row_bytes(at, cols);
    // decode (one token) keeps the one-row kernels: it streams the weights from memory, and one
    // row after another is the single sequential stream the hardware prefetcher follows best
    // (1-, 2- and 4-row tiles measured slower for Q8_0 and the K-quants, docs/performance.md)
    let tiles = if n_tokens > 1 {
        Tiles::new(isa, w.ty, crate::tiled_order(isa, w.ty, n_tokens), None)
    } else if matches!(w.ty, GgmlType::Q4_1 | GgmlType::Q5_0 | GgmlType::Q5_1) {
        // ... except where the one-row kernel is compute-bound: four rows at a time share the
        // activation loads (gemv on one core, criterion: Q5_1 576x49152 2.58 -> 1.66 ms, Q4_1
        // 1.96 -> 1.36 ms, Q5_0 1.56 -> 1.44 ms; the same bits, each row's sums unchanged)
        Tiles::new(isa, w.ty, false, Some(4))
    } else {
        None
    };
    // the tile kernels also take each activation block's scale as f32
    let ldsc = if tiles.is_some() {
        act_scales_len(at, cols)
    } else {
        0
    };
    let sc_bytes = 4 * ldsc * n_tokens;
    with_scratch(sc_bytes + arb * n_tokens, |buf| {
        let (sc, act) = buf.split_at_mut(sc_bytes);
        let sc: &mut [f32] = bytemuck::cast_slice_mut(sc);
        let prep = |(a, x): (&mut [u8], &[f32]), s: &mut [f32]| {
            crate::quantize_act_isa(isa, at, x, a);
            if ldsc > 0 {
                act_scales(at, cols, a, s);
            }
        };
        if n_tokens == 1 {
            prep((act, xs), sc);
        } else if ldsc == 0 {
            crate::pool::for_each_row(act, arb, 4, |t, a| {
                prep((a, &xs[t * cols..(t + 1) * cols]), &mut [])
            });
        } else {
            crate::pool::for_each_row2((act, arb), (sc, ldsc), 4, |t, a, s| {
                prep((a, &xs[t * cols..(t + 1) * cols]), s)
            });
        }
        let act: &[u8] = act;
        let sc: &[f32] = sc;
        if let Some(tiles) = tiles {
            tiles.run(w, act, arb, sc, ldsc, n_tokens, ys);
            return;
        }
        if n_tokens == 1 {
            let out = SharedMut(ys.as_mut_ptr());
            crate::pool::for_each_share(rows, decode_piece(wrb), |r0, r1| {
                for r in r0..r1 {
                    let wr = &w.data[r * wrb..(r + 1) * wrb];
                    // SAFETY: both rows have their full byte lengths; the CPU runs `isa`; output
                    // row r belongs to this piece only and is inside `ys`.
                    unsafe { *out.at(r) = f(cols, wr.as_ptr(), act.as_ptr()) };
                }
            });
        } else {
            let chunk = rows_per_task(rows, wrb);
            let out = SharedMut(ys.as_mut_ptr());
            let n_chunks = rows.div_ceil(chunk);
            crate::pool::for_each(n_chunks, |c| {
                let (r0, r1) = (c * chunk, ((c + 1) * chunk).min(rows));
                // weight rows of this chunk stay in cache while every token streams past
                for t in 0..n_tokens {
                    let a = &act[t * arb..(t + 1) * arb];
                    for r in r0..r1 {
                        let wr = &w.data[r * wrb..(r + 1) * wrb];
                        // SAFETY: full rows; CPU runs `isa`; index t*rows+r < ys.len() and
                        // belongs to this chunk only.
                        unsafe { *out.at(t * rows + r) = f(cols, wr.as_ptr(), a.as_ptr()) };
                    }
                }
            });
        }
    });
}

/// F16 weights on AVX2, summed as llama.cpp sums them (false, and nothing written, if the weight
/// bytes are not 2-byte aligned): the activations rounded to f16, then for two tokens or more
/// with rows in fours and rows of whole 8-element steps tinyBLAS's order
/// ([`crate::vec::gemm_f16`]), else `ggml_vec_dot_f16`'s ([`crate::vec::dots_f16_ggml`]).
#[cfg(target_arch = "x86_64")]
fn gemm_f16_as_llama(isa: Isa, w: &Weights, xs: &[f32], n_tokens: usize, ys: &mut [f32]) -> bool {
    let Ok(wd) = bytemuck::try_cast_slice::<u8, u16>(w.data) else {
        return false;
    };
    let (rows, cols) = (w.rows, w.cols);
    let tiny = n_tokens >= 2 && rows.is_multiple_of(4) && cols.is_multiple_of(8);
    with_scratch(2 * n_tokens * cols, |buf| {
        let xh: &mut [u16] = bytemuck::cast_slice_mut(buf);
        if n_tokens == 1 {
            crate::vec::to_f16_isa(isa, xs, xh);
        } else {
            crate::pool::for_each_row(xh, cols, 4, |t, h| {
                crate::vec::to_f16_isa(isa, &xs[t * cols..(t + 1) * cols], h)
            });
        }
        let xh: &[u16] = xh;
        if tiny {
            // SAFETY: the CPU runs `isa` (asserted by the caller); every output row is in `ys`
            unsafe {
                tiny_tasks(
                    xh,
                    wd,
                    rows,
                    cols,
                    n_tokens,
                    ys,
                    crate::vec::gemm_tiles::<crate::vec::F16>,
                )
            };
            return;
        }
        let chunk = rows_per_task(rows, 2 * cols * n_tokens.min(8)).next_multiple_of(4);
        let out = SharedMut(ys.as_mut_ptr());
        let task = |c: usize| {
            let (r0, r1) = (c * chunk, ((c + 1) * chunk).min(rows));
            let wc = &wd[r0 * cols..r1 * cols];
            for t in 0..n_tokens {
                // SAFETY: outputs t * rows + r for r in r0..r1 belong to this task only, and
                // the slice is inside `ys`
                let o = unsafe { std::slice::from_raw_parts_mut(out.at(t * rows + r0), r1 - r0) };
                crate::vec::dots_f16_ggml_isa(
                    isa,
                    &xh[t * cols..(t + 1) * cols],
                    wc,
                    cols,
                    cols,
                    o,
                );
            }
        };
        let n_chunks = rows.div_ceil(chunk);
        crate::pool::for_each(n_chunks, task);
    });
    true
}

/// A tinyBLAS-order product on x86: `c[i * ldc + j]` = row `i` of `a` (`m` rows) times row `j`
/// of `b` (`n` rows), `k` elements each.
#[cfg(target_arch = "x86_64")]
type TinyFn<T> = unsafe fn(&[T], usize, usize, &[T], usize, usize, usize, *mut f32, usize);

/// `ys[t * rows + r]` = token `t` of `act` times weight row `r` of `wd` (`cols` elements each)
/// with `f`, parallel over chunks of four rows (tinyBLAS needs rows in fours).
///
/// # Safety
/// The CPU runs `f`'s instruction set; `act` holds `n_tokens` rows, `wd` `rows` rows, `ys`
/// `n_tokens * rows` outputs.
#[cfg(target_arch = "x86_64")]
unsafe fn tiny_tasks<T: Sync>(
    act: &[T],
    wd: &[T],
    rows: usize,
    cols: usize,
    n_tokens: usize,
    ys: &mut [f32],
    f: TinyFn<T>,
) {
    assert!(act.len() >= n_tokens * cols && wd.len() >= rows * cols);
    assert!(ys.len() >= n_tokens * rows);
    let bytes = std::mem::size_of::<T>();
    let chunk = rows_per_task(rows, bytes * cols * n_tokens.min(8)).next_multiple_of(4);
    let out = SharedMut(ys.as_mut_ptr());
    let task = |c: usize| {
        let (r0, r1) = (c * chunk, ((c + 1) * chunk).min(rows));
        // SAFETY: outputs t * rows + r for r in r0..r1 belong to this task only; the caller
        // guarantees the instruction set
        unsafe {
            f(
                act,
                cols,
                n_tokens,
                &wd[r0 * cols..r1 * cols],
                cols,
                r1 - r0,
                cols,
                out.at(r0),
                rows,
            )
        };
    };
    let n_chunks = rows.div_ceil(chunk);
    crate::pool::for_each(n_chunks, task);
}

/// F32 and BF16 weights on x86, two tokens or more, rows in fours and rows of whole 8-element
/// steps: the order of tinyBLAS, which llama.cpp's `llamafile_sgemm` runs for F32 x F32 and
/// BF16 x BF16 products there (activations rounded to bf16 for BF16 weights, as ggml's
/// `vec_dot_type`). False, and nothing written, elsewhere or if the weight bytes are not aligned
/// to their element; the one-row kernels (`ggml_vec_dot_f32`/`_bf16`'s order) run then.
#[cfg(target_arch = "x86_64")]
fn gemm_tiny_as_llama(isa: Isa, w: &Weights, xs: &[f32], n_tokens: usize, ys: &mut [f32]) -> bool {
    let (rows, cols) = (w.rows, w.cols);
    if !(isa.is_x86() && n_tokens >= 2 && rows.is_multiple_of(4) && cols.is_multiple_of(8)) {
        return false;
    }
    match w.ty {
        GgmlType::F32 => {
            let Ok(wd) = bytemuck::try_cast_slice::<u8, f32>(w.data) else {
                return false;
            };
            // SAFETY: the CPU runs `isa` (checked by `gemm_isa`); shapes checked there
            unsafe {
                tiny_tasks(
                    xs,
                    wd,
                    rows,
                    cols,
                    n_tokens,
                    ys,
                    crate::vec::gemm_tiles::<crate::vec::F32>,
                )
            };
            true
        }
        GgmlType::BF16 => {
            let Ok(wd) = bytemuck::try_cast_slice::<u8, u16>(w.data) else {
                return false;
            };
            with_scratch(2 * n_tokens * cols, |buf| {
                crate::pool::for_each_row(buf, 2 * cols, 4, |t, h| {
                    crate::quantize_act(GgmlType::BF16, &xs[t * cols..(t + 1) * cols], h)
                });
                let xh: &[u16] = bytemuck::cast_slice(buf);
                // SAFETY: as above
                unsafe {
                    tiny_tasks(
                        xh,
                        wd,
                        rows,
                        cols,
                        n_tokens,
                        ys,
                        crate::vec::gemm_tiles::<crate::vec::Bf16>,
                    )
                };
            });
            true
        }
        _ => false,
    }
}

/// The tile kernels of one product: `mr` weight rows x `nr` tokens per call, with the smaller
/// tiles for the edges (`fns[m - 1][n - 1]`).
pub(crate) struct Tiles {
    mr: usize,
    nr: usize,
    fns: [[Option<TileFn>; MAX_TILE.1]; MAX_TILE.0],
}

impl Tiles {
    /// The tiles for `ty` on `isa` ([`tile_shape`]; `rows` weight rows per tile instead, if given),
    /// summed in llama.cpp's tiled K-quant order if `tiled`, or `None` where that set has no tile
    /// kernels.
    pub(crate) fn new(isa: Isa, ty: GgmlType, tiled: bool, rows: Option<usize>) -> Option<Tiles> {
        let (mut mr, nr) = tile_shape(isa, ty)?;
        if let Some(m) = rows {
            mr = m.min(MAX_TILE.0);
        }
        Tiles::with((mr, nr), |m, n| {
            crate::tile_kernel_ordered(isa, ty, m, n, tiled)
        })
    }

    /// `shape` tiles from `pick(m, n)` (`None` if it has no kernel for one of them).
    pub(crate) fn with(
        (mr, nr): (usize, usize),
        pick: impl Fn(usize, usize) -> Option<TileFn>,
    ) -> Option<Tiles> {
        let mut fns = [[None; MAX_TILE.1]; MAX_TILE.0];
        for (m, row) in fns.iter_mut().enumerate().take(mr) {
            for (n, f) in row.iter_mut().enumerate().take(nr) {
                *f = Some(pick(m + 1, n + 1)?);
            }
        }
        Some(Tiles { mr, nr, fns })
    }

    /// `out[t * ldo + i]` = weight row `i` (of `m_rows` at `w`, `wrb` bytes apart) times token
    /// `t` (activation row `t` of `act`, `arb` bytes apart, its scales at `sc + t * ldsc`), one
    /// row tile after another; each row tile's weights stay in L1 while the tokens stream past.
    ///
    /// # Safety
    /// The weight rows hold `row_bytes(ty, cols)` bytes each and every token its activation row
    /// and scales; every `out + t * ldo + i` is writable and no other thread writes it; the CPU
    /// runs the kernels' instruction set.
    #[allow(clippy::too_many_arguments)]
    pub(crate) unsafe fn rows(
        &self,
        cols: usize,
        w: *const u8,
        wrb: usize,
        m_rows: usize,
        (act, arb, sc, ldsc): (&[u8], usize, &[f32], usize),
        n_tokens: usize,
        out: *mut f32,
        ldo: usize,
    ) {
        let mut r = 0;
        while r < m_rows {
            let m = self.mr.min(m_rows - r);
            let mut t = 0;
            while t < n_tokens {
                let n = self.nr.min(n_tokens - t);
                let f = self.fns[m - 1][n - 1].expect("every tile up to mr x nr");
                // SAFETY: as the caller guarantees, for rows r..r+m and tokens t..t+n
                unsafe {
                    f(
                        cols,
                        w.add(r * wrb),
                        wrb,
                        act.as_ptr().add(t * arb),
                        arb,
                        sc.as_ptr().add(t * ldsc),
                        ldsc,
                        out.add(t * ldo + r),
                        ldo,
                    )
                };
                t += n;
            }
            r += m;
        }
    }

    /// `ys[t * rows + r]` for every row and token: parallel over chunks of whole row tiles; in a
    /// chunk each row tile's weights stay in L1 while the tokens stream past.
    #[allow(clippy::too_many_arguments)]
    fn run(
        &self,
        w: &Weights,
        act: &[u8],
        arb: usize,
        sc: &[f32],
        ldsc: usize,
        n_tokens: usize,
        ys: &mut [f32],
    ) {
        let (rows, cols, wrb) = (w.rows, w.cols, w.row_bytes());
        let out = SharedMut(ys.as_mut_ptr());
        // rows r0..r1 of every token
        let part = |r0: usize, r1: usize| {
            // SAFETY: rows r0..r1 have their full byte lengths and every token its activation
            // row and scales; the outputs t * rows + r for r in r0..r1 belong to this part
            // only; the CPU runs the kernels' instruction set (checked by the caller).
            unsafe {
                self.rows(
                    cols,
                    w.data.as_ptr().add(r0 * wrb),
                    wrb,
                    r1 - r0,
                    (act, arb, sc, ldsc),
                    n_tokens,
                    out.at(r0),
                    rows,
                )
            };
        };
        let mr = self.mr;
        if n_tokens == 1 {
            // in whole row tiles
            let piece = decode_piece(wrb * mr);
            crate::pool::for_each_share(rows.div_ceil(mr), piece, |t0, t1| {
                part(t0 * mr, (t1 * mr).min(rows))
            });
        } else {
            let chunk = rows_per_task(rows, wrb * n_tokens.min(8)).next_multiple_of(mr);
            crate::pool::for_each(rows.div_ceil(chunk), |c| {
                part(c * chunk, ((c + 1) * chunk).min(rows))
            });
        }
    }
}
