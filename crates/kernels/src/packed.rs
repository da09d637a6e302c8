//! Weights repacked once at load time into 8-row interleaved groups, for AVX2.
//!
//! ggml-cpu repacks Q4_0 weights into 8-row groups on AVX2 (`block_q4_0x8`); this is the same
//! idea with a layout of our own, made for one instruction sequence: in a group, block `l` of
//! eight consecutive rows is stored as their eight f16 scales followed by their quants
//! interleaved four bytes per row, so one 32-byte load holds four quant bytes of each of the
//! eight rows and one `vpmaddubsw` against four broadcast activation bytes advances all eight
//! dot products. The eight lanes of the accumulator are the eight rows: no horizontal sums,
//! one scale multiply per block for all eight rows, and no sign instructions (the unsigned
//! nibbles are multiplied as they are and `8 * sum(y)` is subtracted once per block).
//!
//! Arithmetic, per row: the integer dot product of each 32-block is exact; it is converted to
//! f32 and added as `acc = fma(int as f32, d_w * d_y, acc)` block after block. That is a
//! different summation order from the one-row kernels (which keep eight partial sums per
//! block), so results differ from them by rounding; [`gemm_packed_reference`] computes the
//! packed order in plain Rust, and the AVX2 kernel is tested to give its bits exactly.
//!
//! Types: Q4_0, Q5_0 (against Q8_0 activations) and Q5_1 (against Q8_1 activations). A
//! group-block is the eight scales `d`, then for Q5_1 the eight minimums `m` (their term is summed
//! apart, `fma(m_w, s_y, summ)` per block, and added at the end), then for Q5_0/Q5_1 the high bits
//! rearranged to one 32-bit word per four-element step, then the nibbles: eight times the bytes of
//! one block. Rows must come in whole groups of eight.
//!
//! Which types, and what it costs in agreement with llama.cpp (which repacks only Q4_0 and Q4_K on
//! AVX2): Q4_0 packed gives llama.cpp's repacked sums bit for bit; Q5_0 and Q5_1 packed give up
//! llama.cpp's per-lane order for 2-3x faster products (SmolLM2 q4_k_m top-1 agreement 0.951 ->
//! 0.935). Q4_1 is not packed: it is the type of SmolLM2's reference file, whose logits stay
//! bit-identical to llama.cpp's that way (packed, agreement fell to 0.962).

use rayon::prelude::*;

use crate::{isa, row_bytes, GgmlType, Isa, KernelError, Weights};

/// Rows per group.
pub const GROUP: usize = 8;

/// A weight matrix in the packed layout (owned: the copy made at load time).
#[derive(Clone)]
pub struct Packed {
    /// The type the rows were packed from (Q4_0, Q5_0 or Q5_1).
    pub ty: GgmlType,
    /// Number of rows (outputs), a multiple of [`GROUP`].
    pub rows: usize,
    /// Elements per row.
    pub cols: usize,
    data: Vec<u8>,
}

impl std::fmt::Debug for Packed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Packed({} {}x{})", self.ty, self.rows, self.cols)
    }
}

/// Where the parts of one ggml block of a packable type are, and what it pairs with.
#[derive(Clone, Copy)]
struct Kind {
    /// Bytes of one block.
    bytes: usize,
    /// Offset of `m` (Q5_1).
    min: Option<usize>,
    /// Offset of the 32 high bits.
    high: Option<usize>,
    /// Offset of the 16 nibble bytes.
    qs: usize,
    /// Subtracted from every quant (8 for Q4_0, 16 for Q5_0, 0 for Q5_1, which has a minimum).
    off: i32,
}

fn kind(ty: GgmlType) -> Option<Kind> {
    let k = |bytes, min, high, qs, off| Kind {
        bytes,
        min,
        high,
        qs,
        off,
    };
    Some(match ty {
        GgmlType::Q4_0 => k(18, None, None, 2, 8),
        GgmlType::Q5_0 => k(22, None, Some(2), 6, 16),
        GgmlType::Q5_1 => k(24, Some(2), Some(4), 8, 0),
        _ => return None,
    })
}

impl Packed {
    /// Bytes of the packed weights (the same as the original encoding).
    pub fn bytes(&self) -> usize {
        self.data.len()
    }

    /// Bytes of one group of eight rows.
    #[cfg(target_arch = "x86_64")]
    fn group_bytes(&self) -> usize {
        kind(self.ty).map_or(0, |k| 8 * k.bytes) * (self.cols / 32)
    }
}

/// True if [`pack`] repacks `ty` weights of `rows` rows for `isa`: AVX2 (on a CPU that has it),
/// Q4_0, Q5_0 or Q5_1, rows in whole groups of eight.
pub fn packs(isa: Isa, ty: GgmlType, rows: usize) -> bool {
    isa == Isa::Avx2 && isa.usable() && kind(ty).is_some() && rows > 0 && rows.is_multiple_of(GROUP)
}

/// Repacks `w` for the kernels of [`isa()`] if [`packs`] says so (`None` otherwise).
///
/// # Errors
/// If `w` is not valid ([`Weights::validate`]).
pub fn pack(w: &Weights) -> Result<Option<Packed>, KernelError> {
    pack_for(isa(), w)
}

/// [`pack`] for a given instruction set (tests, benchmarks).
///
/// # Errors
/// If `w` is not valid ([`Weights::validate`]).
pub fn pack_for(isa: Isa, w: &Weights) -> Result<Option<Packed>, KernelError> {
    w.validate()?;
    if !packs(isa, w.ty, w.rows) {
        return Ok(None);
    }
    let (nb, rb) = (w.cols / 32, w.row_bytes());
    let k = kind(w.ty).expect("checked by packs");
    let gb = 8 * k.bytes;
    let mut data = vec![0u8; w.data.len()];
    data.par_chunks_mut(gb * nb)
        .enumerate()
        .for_each(|(g, out)| {
            for l in 0..nb {
                let o = &mut out[l * gb..(l + 1) * gb];
                let block = |r: usize| {
                    let at = (g * GROUP + r) * rb + l * k.bytes;
                    &w.data[at..at + k.bytes]
                };
                let mut at = 0;
                for r in 0..GROUP {
                    o[at + 2 * r..at + 2 * r + 2].copy_from_slice(&block(r)[..2]);
                }
                at += 16;
                if let Some(m) = k.min {
                    for r in 0..GROUP {
                        o[at + 2 * r..at + 2 * r + 2].copy_from_slice(&block(r)[m..m + 2]);
                    }
                    at += 16;
                }
                if let Some(hb) = k.high {
                    // word 2 s + h (s = step 0..3, h = 0 for elements 4s..4s+3, 1 for
                    // 16+4s..16+4s+3): bit 4 r + e is row r's element e of that step
                    for s in 0..4 {
                        for h in 0..2 {
                            let mut word = 0u32;
                            for r in 0..GROUP {
                                let b = block(r);
                                let qh =
                                    u32::from_le_bytes([b[hb], b[hb + 1], b[hb + 2], b[hb + 3]]);
                                word |= ((qh >> (16 * h + 4 * s)) & 0xF) << (4 * r);
                            }
                            let w4 = at + 4 * (2 * s + h);
                            o[w4..w4 + 4].copy_from_slice(&word.to_le_bytes());
                        }
                    }
                    at += 32;
                }
                // quant bytes: load s holds bytes 4s..4s+3 of every row (low nibbles: elements
                // 4s.., high nibbles: 16+4s..)
                for s in 0..4 {
                    for r in 0..GROUP {
                        let to = at + 32 * s + 4 * r;
                        let from = k.qs + 4 * s;
                        o[to..to + 4].copy_from_slice(&block(r)[from..from + 4]);
                    }
                }
            }
        });
    Ok(Some(Packed {
        ty: w.ty,
        rows: w.rows,
        cols: w.cols,
        data,
    }))
}

/// Per-token activation data of the packed kernels: Q8_0 blocks (Q8_1 for the types with a
/// minimum), and per block the f32 scale, the offset correction `off * sum(q)` and Q8_1's `s`.
/// Kept per calling thread and reused (grows, never shrinks), so a product allocates nothing
/// once the buffers have reached their size.
#[derive(Default)]
struct Acts {
    q: Vec<u8>,
    d: Vec<f32>,
    corr: Vec<i32>,
    s: Vec<f32>,
    /// Bytes of one token's activation row.
    lda: usize,
    /// Blocks per row.
    nb: usize,
}

#[cfg(target_arch = "x86_64")]
thread_local! {
    static SCRATCH: std::cell::RefCell<Acts> = std::cell::RefCell::new(Acts::default());
}

/// Runs `f` with the activations of `xs` prepared in this thread's scratch. The buffers are
/// taken out of the thread-local for the call, so a nested product (a rayon worker stealing
/// another one while it waits) gets its own.
#[cfg(target_arch = "x86_64")]
fn with_acts<R>(
    isa: Isa,
    ty: GgmlType,
    cols: usize,
    xs: &[f32],
    n_tokens: usize,
    f: impl FnOnce(&Acts) -> R,
) -> R {
    let a = SCRATCH.with(|s| std::mem::take(&mut *s.borrow_mut()));
    let a = prepare(isa, ty, cols, xs, n_tokens, a);
    let r = f(&a);
    SCRATCH.with(|s| {
        let mut s = s.borrow_mut();
        if s.q.capacity() < a.q.capacity() {
            *s = a;
        }
    });
    r
}

fn prepare(isa: Isa, ty: GgmlType, cols: usize, xs: &[f32], n_tokens: usize, mut a: Acts) -> Acts {
    let k = kind(ty).expect("a packable type");
    let at = if k.min.is_some() {
        GgmlType::Q8_1
    } else {
        GgmlType::Q8_0
    };
    let (bs, qs) = if at == GgmlType::Q8_1 {
        (36, 4)
    } else {
        (34, 2)
    };
    let nb = cols / 32;
    let lda = row_bytes(at, cols);
    a.q.resize(lda * n_tokens, 0);
    a.d.resize(nb * n_tokens, 0.0);
    a.corr.resize(nb * n_tokens, 0);
    a.s.resize(nb * n_tokens, 0.0);
    a.lda = lda;
    a.nb = nb;
    let h =
        |b: &[u8], i: usize| half::f16::from_bits(u16::from_le_bytes([b[i], b[i + 1]])).to_f32();
    type Token<'t> = (
        (&'t mut [u8], &'t [f32]),
        ((&'t mut [f32], &'t mut [i32]), &'t mut [f32]),
    );
    let prep = |((q, x), ((d, c), s)): Token| {
        crate::quantize_act_isa(isa, at, x, q);
        for l in 0..nb {
            let b = &q[l * bs..(l + 1) * bs];
            d[l] = h(b, 0);
            c[l] = k.off * b[qs..].iter().map(|&v| v as i8 as i32).sum::<i32>();
            if qs == 4 {
                s[l] = h(b, 2);
            }
        }
    };
    if n_tokens == 1 {
        prep(((&mut a.q, xs), ((&mut a.d, &mut a.corr), &mut a.s)));
    } else {
        a.q.par_chunks_mut(lda)
            .zip(xs.par_chunks(cols))
            .zip(
                a.d.par_chunks_mut(nb)
                    .zip(a.corr.par_chunks_mut(nb))
                    .zip(a.s.par_chunks_mut(nb)),
            )
            .for_each(prep);
    }
    a
}

/// `ys[t * rows + r] = W xs[t]` with packed weights, on the kernels of [`isa()`].
///
/// # Panics
/// If the lengths do not match, or the CPU cannot run the set `p` was packed for.
pub fn gemm_packed(p: &Packed, xs: &[f32], n_tokens: usize, ys: &mut [f32]) {
    assert_eq!(xs.len(), n_tokens * p.cols, "activations: n_tokens * cols");
    assert_eq!(ys.len(), n_tokens * p.rows, "outputs: n_tokens * rows");
    assert!(Isa::Avx2.usable(), "packed weights need AVX2");
    if n_tokens == 0 {
        return;
    }
    #[cfg(target_arch = "x86_64")]
    run(p, xs, n_tokens, ys);
}

/// The body of [`gemm_packed`]: activations prepared once, then parallel over row groups.
#[cfg(target_arch = "x86_64")]
fn run(p: &Packed, xs: &[f32], n_tokens: usize, ys: &mut [f32]) {
    with_acts(Isa::Avx2, p.ty, p.cols, xs, n_tokens, |a| {
        products(p, a, n_tokens, ys)
    });
}

/// The products of [`gemm_packed`], activations prepared.
#[cfg(target_arch = "x86_64")]
fn products(p: &Packed, a: &Acts, n_tokens: usize, ys: &mut [f32]) {
    use crate::matmul::{rows_per_task, Out};
    use crate::x86::packed::Panel;
    let groups = p.rows / GROUP;
    let gbytes = p.group_bytes();
    let per = rows_per_task(groups, gbytes * n_tokens.min(8));
    let out = Out(ys.as_mut_ptr());
    let rows = p.rows;
    let task = |c: usize| {
        for g in c * per..((c + 1) * per).min(groups) {
            let mut t = 0;
            while t < n_tokens {
                let n = (n_tokens - t).min(4);
                let panel = Panel {
                    nb: a.nb,
                    w: p.data[g * gbytes..(g + 1) * gbytes].as_ptr(),
                    a: a.q[t * a.lda..].as_ptr(),
                    lda: a.lda,
                    d: a.d[t * a.nb..].as_ptr(),
                    corr: a.corr[t * a.nb..].as_ptr(),
                    sy: a.s[t * a.nb..].as_ptr(),
                    ldd: a.nb,
                    out: out.at(t * rows + g * GROUP),
                    ldo: rows,
                };
                // SAFETY: group g has `gbytes` bytes; tokens t..t+n have their activation rows,
                // scales and corrections; outputs (t + j) * rows + 8 g .. + 8 belong to this
                // task only; the CPU runs AVX2 (asserted by `gemm_packed`).
                unsafe { crate::x86::packed::gemm(p.ty, n, panel) };
                t += n;
            }
        }
    };
    let n_tasks = groups.div_ceil(per);
    if n_tasks == 1 {
        task(0);
    } else {
        (0..n_tasks).into_par_iter().for_each(task);
    }
}

/// What [`gemm_packed`] computes, in plain Rust and the same order (each row's blocks summed as
/// `acc = fma(int as f32, d_w * d_y, acc)`, and for Q5_1 `summ = fma(m_w, s_y, summ)`, then
/// `acc + summ`), for tests.
///
/// # Panics
/// As [`gemm_packed`], or if `w.ty` has no packed layout.
pub fn gemm_packed_reference(w: &Weights, xs: &[f32], n_tokens: usize, ys: &mut [f32]) {
    let k = kind(w.ty).expect("a packable type");
    assert_eq!(xs.len(), n_tokens * w.cols);
    assert_eq!(ys.len(), n_tokens * w.rows);
    let a = prepare(Isa::Scalar, w.ty, w.cols, xs, n_tokens, Acts::default());
    let (abs, aqs) = if k.min.is_some() { (36, 4) } else { (34, 2) };
    let rb = w.row_bytes();
    let h =
        |b: &[u8], i: usize| half::f16::from_bits(u16::from_le_bytes([b[i], b[i + 1]])).to_f32();
    let mut vals = [0i32; 32];
    for t in 0..n_tokens {
        for r in 0..w.rows {
            let (mut acc, mut summ) = (0f32, 0f32);
            for l in 0..a.nb {
                let b = &w.data[r * rb + l * k.bytes..r * rb + (l + 1) * k.bytes];
                let qh = k.high.map_or(0, |o| {
                    u32::from_le_bytes([b[o], b[o + 1], b[o + 2], b[o + 3]])
                });
                for j in 0..16 {
                    let h0 = ((qh >> j) & 1) << 4;
                    let h1 = ((qh >> (j + 16)) & 1) << 4;
                    vals[j] = ((b[k.qs + j] & 0xF) as u32 | h0) as i32 - k.off;
                    vals[j + 16] = ((b[k.qs + j] >> 4) as u32 | h1) as i32 - k.off;
                }
                let blk = &a.q[t * a.lda + l * abs..t * a.lda + (l + 1) * abs];
                let dot: i32 = vals
                    .iter()
                    .zip(&blk[aqs..])
                    .map(|(&v, &q)| v * q as i8 as i32)
                    .sum();
                let i = t * a.nb + l;
                acc = (dot as f32).mul_add(h(b, 0) * a.d[i], acc);
                if let Some(m) = k.min {
                    summ = h(b, m).mul_add(a.s[i], summ);
                }
            }
            ys[t * w.rows + r] = if k.min.is_some() { acc + summ } else { acc };
        }
    }
}
