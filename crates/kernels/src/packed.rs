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
//! Types: Q4_0 (`Q4_0x8`, 144 bytes per group-block) and Q5_0 (`Q5_0x8`, 176 bytes: scales,
//! then the high bits rearranged to one 32-bit word per four-element step, then the nibbles as
//! for Q4_0). Rows must come in whole groups of eight.

use rayon::prelude::*;

use crate::{isa, row_bytes, GgmlType, Isa, KernelError, Weights};

/// Rows per group.
pub const GROUP: usize = 8;

/// A weight matrix in the packed layout (owned: the copy made at load time).
#[derive(Clone)]
pub struct Packed {
    /// The type the rows were packed from (Q4_0 or Q5_0).
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

/// Bytes of one group-block (eight rows by 32 elements) for `ty`.
const fn group_block(ty: GgmlType) -> usize {
    match ty {
        GgmlType::Q4_0 => 8 * 18,
        GgmlType::Q5_0 => 8 * 22,
        _ => 0,
    }
}

impl Packed {
    /// Bytes of the packed weights (the same as the original encoding).
    pub fn bytes(&self) -> usize {
        self.data.len()
    }

    fn group_bytes(&self) -> usize {
        group_block(self.ty) * (self.cols / 32)
    }
}

/// True if [`pack`] repacks `ty` weights of `rows` rows for `isa`: AVX2 (on a CPU that has it),
/// Q4_0 or Q5_0, rows in whole groups of eight.
pub fn packs(isa: Isa, ty: GgmlType, rows: usize) -> bool {
    isa == Isa::Avx2
        && isa.usable()
        && matches!(ty, GgmlType::Q4_0 | GgmlType::Q5_0)
        && rows > 0
        && rows.is_multiple_of(GROUP)
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
    let gb = group_block(w.ty);
    let mut data = vec![0u8; w.data.len()];
    data.par_chunks_mut(gb * nb)
        .enumerate()
        .for_each(|(g, out)| {
            for l in 0..nb {
                let o = &mut out[l * gb..(l + 1) * gb];
                let block = |r: usize| {
                    let bs = w.ty.type_size();
                    let at = (g * GROUP + r) * rb + l * bs;
                    &w.data[at..at + bs]
                };
                for r in 0..GROUP {
                    o[2 * r..2 * r + 2].copy_from_slice(&block(r)[..2]);
                }
                let (qs_at, qs_off) = match w.ty {
                    GgmlType::Q4_0 => (16, 2),
                    _ => {
                        // high bits: word k = 2 s + h (s = step 0..3, h = 0 for elements
                        // 4s..4s+3, 1 for 16+4s..16+4s+3), bit 4 r + e = row r, element e
                        for s in 0..4 {
                            for h in 0..2 {
                                let mut word = 0u32;
                                for r in 0..GROUP {
                                    let b = block(r);
                                    let qh = u32::from_le_bytes([b[2], b[3], b[4], b[5]]);
                                    let nib = (qh >> (16 * h + 4 * s)) & 0xF;
                                    word |= nib << (4 * r);
                                }
                                let k = 2 * s + h;
                                o[16 + 4 * k..20 + 4 * k].copy_from_slice(&word.to_le_bytes());
                            }
                        }
                        (48, 6)
                    }
                };
                // quant bytes: load s holds bytes 4s..4s+3 of every row (low nibbles: elements
                // 4s.., high nibbles: 16+4s..)
                for s in 0..4 {
                    for r in 0..GROUP {
                        let at = qs_at + 32 * s + 4 * r;
                        o[at..at + 4]
                            .copy_from_slice(&block(r)[qs_off + 4 * s..qs_off + 4 * s + 4]);
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

/// Per-token activation data of the packed kernels: Q8_0 blocks, and per block the f32 scale
/// and the offset correction `o * sum(q)` (o = 8 for Q4_0, 16 for Q5_0).
struct Acts {
    q: Vec<u8>,
    d: Vec<f32>,
    corr: Vec<i32>,
    /// Bytes of one token's Q8_0 row.
    lda: usize,
    /// Blocks per row.
    nb: usize,
}

fn prepare(isa: Isa, ty: GgmlType, cols: usize, xs: &[f32], n_tokens: usize) -> Acts {
    let nb = cols / 32;
    let lda = row_bytes(GgmlType::Q8_0, cols);
    let off = if ty == GgmlType::Q4_0 { 8 } else { 16 };
    let mut a = Acts {
        q: vec![0u8; lda * n_tokens],
        d: vec![0f32; nb * n_tokens],
        corr: vec![0i32; nb * n_tokens],
        lda,
        nb,
    };
    type Token<'t> = ((&'t mut [u8], &'t [f32]), (&'t mut [f32], &'t mut [i32]));
    let prep = |((q, x), (d, c)): Token| {
        crate::quantize_act_isa(isa, GgmlType::Q8_0, x, q);
        for l in 0..nb {
            let b = &q[l * 34..(l + 1) * 34];
            d[l] = half::f16::from_bits(u16::from_le_bytes([b[0], b[1]])).to_f32();
            c[l] = off * b[2..].iter().map(|&v| v as i8 as i32).sum::<i32>();
        }
    };
    if n_tokens == 1 {
        prep(((&mut a.q, xs), (&mut a.d, &mut a.corr)));
    } else {
        a.q.par_chunks_mut(lda)
            .zip(xs.par_chunks(cols))
            .zip(a.d.par_chunks_mut(nb).zip(a.corr.par_chunks_mut(nb)))
            .for_each(prep);
    }
    a
}

/// A raw output pointer shared by tasks that write disjoint elements.
#[derive(Clone, Copy)]
struct Out(*mut f32);
// SAFETY: every task writes its own rows; the borrow of the output outlives the parallel loop.
unsafe impl Send for Out {}
unsafe impl Sync for Out {}
impl Out {
    fn at(self, i: usize) -> *mut f32 {
        self.0.wrapping_add(i)
    }
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
    let a = prepare(Isa::Avx2, p.ty, p.cols, xs, n_tokens);
    let groups = p.rows / GROUP;
    let gbytes = p.group_bytes();
    // enough tasks to balance, each at least ~16 KiB of weights
    let threads = rayon::current_num_threads().max(1);
    let per = groups
        .div_ceil(threads * 8)
        .max((16 * 1024usize).div_ceil(gbytes * n_tokens.min(8)))
        .min(groups);
    let out = Out(ys.as_mut_ptr());
    let rows = p.rows;
    let task = |c: usize| {
        for g in c * per..((c + 1) * per).min(groups) {
            let w = p.data[g * gbytes..(g + 1) * gbytes].as_ptr();
            let mut t = 0;
            while t < n_tokens {
                let n = (n_tokens - t).min(4);
                // SAFETY: group g has `gbytes` bytes; tokens t..t+n have their activation rows,
                // scales and corrections; outputs (t + j) * rows + 8 g .. + 8 belong to this
                // task only; the CPU runs AVX2 (asserted above).
                #[cfg(target_arch = "x86_64")]
                unsafe {
                    crate::x86::packed::gemm(
                        p.ty,
                        n,
                        a.nb,
                        w,
                        a.q.as_ptr().add(t * a.lda),
                        a.lda,
                        a.d.as_ptr().add(t * a.nb),
                        a.corr.as_ptr().add(t * a.nb),
                        a.nb,
                        out.at(t * rows + g * GROUP),
                        rows,
                    )
                };
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
/// `fma(int as f32, d_w * d_y, acc)`), for tests: Q8_0 activations quantized as on `isa`.
///
/// # Panics
/// As [`gemm_packed`].
pub fn gemm_packed_reference(w: &Weights, xs: &[f32], n_tokens: usize, ys: &mut [f32]) {
    assert!(matches!(w.ty, GgmlType::Q4_0 | GgmlType::Q5_0));
    assert_eq!(xs.len(), n_tokens * w.cols);
    assert_eq!(ys.len(), n_tokens * w.rows);
    let a = prepare(Isa::Scalar, w.ty, w.cols, xs, n_tokens);
    let (rb, bs) = (w.row_bytes(), w.ty.type_size());
    let mut vals = [0i32; 32];
    for t in 0..n_tokens {
        for r in 0..w.rows {
            let mut acc = 0f32;
            for l in 0..a.nb {
                let b = &w.data[r * rb + l * bs..r * rb + (l + 1) * bs];
                let dw = half::f16::from_bits(u16::from_le_bytes([b[0], b[1]])).to_f32();
                match w.ty {
                    GgmlType::Q4_0 => {
                        for j in 0..16 {
                            vals[j] = (b[2 + j] & 0xF) as i32 - 8;
                            vals[j + 16] = (b[2 + j] >> 4) as i32 - 8;
                        }
                    }
                    _ => {
                        let qh = u32::from_le_bytes([b[2], b[3], b[4], b[5]]);
                        for j in 0..16 {
                            let h0 = ((qh >> j) & 1) << 4;
                            let h1 = ((qh >> (j + 16)) & 1) << 4;
                            vals[j] = ((b[6 + j] & 0xF) as u32 | h0) as i32 - 16;
                            vals[j + 16] = ((b[6 + j] >> 4) as u32 | h1) as i32 - 16;
                        }
                    }
                }
                let y = &a.q[t * a.lda + l * 34 + 2..t * a.lda + (l + 1) * 34];
                let dot: i32 = vals.iter().zip(y).map(|(&v, &q)| v * q as i8 as i32).sum();
                acc = (dot as f32).mul_add(dw * a.d[t * a.nb + l], acc);
            }
            ys[t * w.rows + r] = acc;
        }
    }
}
