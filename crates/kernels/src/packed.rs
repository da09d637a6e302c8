//! Weights repacked once at load time into 8-row interleaved groups, for the x86 sets (AVX2 and
//! AVX-512; on VNNI the Q4_0, Q4_1, Q5_0, Q5_1 and Q8_0 kernels take `vpdpbusd`, the same
//! sums).
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
//! Arithmetic of Q4_0, per row: the integer dot product of each 32-block is exact; it is
//! converted to f32 and added as `acc = fma(int as f32, d_w * d_y, acc)` block after block.
//! That is a different summation order from the one-row kernels (which keep eight partial sums
//! per block), so results differ from them by rounding; [`gemm_packed_reference`] computes the
//! packed order in plain Rust, and the AVX2 kernel is tested to give its bits exactly.
//!
//! Types: Q4_0 (against Q8_0 activations) and Q4_K (against Q8_K), the two llama.cpp repacks
//! on AVX2, and Q4_1, Q5_0, Q5_1, Q8_0 (against Q8_1, Q8_0, Q8_1, Q8_0; below). A Q4_0
//! group-block is the eight scales `d`, then the nibbles: eight times the bytes of one block.
//! Rows must come in whole groups of eight.
//!
//! Q4_K follows llama.cpp's `q4_K_8x8` kernels (`ggml-cpu/arch/x86/repack.cpp`) sum for sum. A
//! group-block holds one 256-element super-block of the eight rows: the eight `d`, the eight
//! `dmin`, the 6-bit sub-block scales unpacked (sub-block by sub-block, one byte per row), the
//! mins unpacked in pairs of sub-blocks, then the nibbles of each pair of sub-blocks in four-byte
//! steps as above (low nibbles: the even sub-block, high: the odd one). Per row the integer dot of
//! each sub-block times its scale is exact; llama.cpp then adds `fma(int as f32, d_w * d_y, acc)`
//! once per pair of sub-blocks when it multiplies four tokens at a time (`gemm`, with the four
//! tokens' activations quantized by `ggml_quantize_mat_q8_K_4x8`), and once per super-block for
//! the tokens left over (`gemv`, activations from `quantize_row_q8_K`); the mins' term is summed
//! the same way apart and subtracted at the end. This layout does the same.
//!
//! Q4_1, Q5_0 and Q5_1 are packed for speed only, and keep llama.cpp's sums: llama.cpp does not
//! repack them and sums them per lane (ggml's one-row `vec_dot`; tinyBLAS for Q5_0 batches, the
//! same order), so their "lane-order" layout is built to give those bits, not the Q4_0 layout's
//! per-row sums. A group-block holds one 32-element block of the eight rows: the eight `d`, for
//! Q4_1/Q5_1 the eight `m`, for Q5_0/Q5_1 32 bytes of fifth bits (byte `j`, bit `r`: row `r`'s
//! element `j`), then four pairs of rows, each 32 bytes with the first row's element `j` in the
//! low nibble of byte `j` and the second's in the high nibble ([`lane_layout`]; the bytes of the
//! eight ggml blocks). For one token each row's quants come back with a mask (for the fifth bit a
//! shift and a mask more) instead of ggml's nibble spread and, for the fifth bit, byte shuffle,
//! compare and blend; the eight rows' `d_w * d_y` (and `m_w * s_y`) are one multiply; each row
//! keeps ggml's eight lanes and `hsum_float_8`. A batch unpacks each group into eight rows the tile
//! kernels multiply as they multiply the original blocks (Q8_0 blocks of the same signed quants
//! for Q5_0; `d`, `m` and the unsigned quants for Q4_1/Q5_1). One-token products streamed from
//! memory, one core: the 52 MB of Q5_0 of SmolLM2's q4_k_m 5.8-8.6 ms unpacked (4-row tiles),
//! 3.6-3.9 ms packed; SmolLM2 Q4_1 decode 69 -> 90 tokens/s.
//!
//! Q8_0 is packed in lane order too: a group-block is the eight `d`, then each row's 32 quants;
//! one token runs ggml's `ggml_vec_dot_q8_0_q8_0` per row with the eight `d_w * d_y` in one
//! multiply, and a batch copies the group back to ggml's blocks for the Q8_0 tiles (SmolLM2 Q8_0
//! decode on one thread 69 -> 80 tokens/s, A/B; at two threads, where it is bound by memory, no
//! change).
//!
//! A layout like Q4_0's (per-row sums) gained 2-3x for Q4_1/Q5_1/Q5_0 but cost
//! bit-identical logits (SmolLM2 q4_k_m with Q5_0 packed that way: top-1 agreement with llama.cpp
//! 0.935; a packed Q4_1 reference file fell to 0.962). A tied output matrix is not packed either
//! (llama.cpp keeps `token_embd` as it is).

use rayon::prelude::*;

use std::sync::Arc;

use crate::hugebuf::HugeBuf;
use crate::{isa, row_bytes, GgmlType, Isa, KernelError, Weights};

/// Rows per group.
pub const GROUP: usize = 8;

/// A weight matrix in the packed layout (owned: the copy made at load time).
#[derive(Clone)]
pub struct Packed {
    /// The type the rows were packed from (Q4_0, Q4_K, Q4_1, Q5_0, Q5_1 or Q8_0).
    pub ty: GgmlType,
    /// Number of rows (outputs), a multiple of [`GROUP`].
    pub rows: usize,
    /// Elements per row.
    pub cols: usize,
    /// The instruction set whose kernels multiply it.
    pub isa: Isa,
    /// `true`: in the 8-row interleaved layout of this module; `false`: the matrix's own bytes
    /// in the file's layout, copied by [`pack_or_copy_many`] only to sit on huge pages with
    /// the others (a type or row count [`packs`] does not take), multiplied by [`crate::gemm`].
    pub interleaved: bool,
    /// The buffer the packed bytes are in (shared by the matrices packed together), and where.
    buf: Arc<HugeBuf>,
    at: usize,
    len: usize,
}

impl std::fmt::Debug for Packed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "Packed({} {}x{} for {}{})",
            self.ty,
            self.rows,
            self.cols,
            self.isa,
            if self.interleaved { "" } else { ", as is" }
        )
    }
}

impl Packed {
    /// Bytes of the packed weights (the original encoding's, except for Q4_K: 32 more per
    /// super-block of eight rows, the unpacked scales and mins).
    pub fn bytes(&self) -> usize {
        self.len
    }

    /// Bytes of the buffer holding this matrix (shared by the matrices packed with it) that
    /// are on huge pages now ([`HugeBuf::huge_bytes`]).
    pub fn huge_bytes(&self) -> Option<usize> {
        self.buf.huge_bytes()
    }

    /// The packed bytes.
    fn data(&self) -> &[u8] {
        &self.buf[self.at..self.at + self.len]
    }

    /// Bytes of one group of eight rows.
    #[cfg(target_arch = "x86_64")]
    fn group_bytes(&self) -> usize {
        group_bytes(self.ty, self.cols)
    }
}

/// Bytes of one group of eight rows of `cols` elements of `ty` in the packed layout.
#[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
fn group_bytes(ty: GgmlType, cols: usize) -> usize {
    match ty {
        GgmlType::Q4_K => K_GB * (cols / 256),
        GgmlType::Q4_0 => 8 * 18 * (cols / 32),
        GgmlType::Q8_0 => Q8_GB * (cols / 32),
        _ => match lane_flags(ty) {
            Some((min, high)) => lane_layout(min, high).2 * (cols / 32),
            None => 0,
        },
    }
}

/// Offsets in a Q4_K group-block: eight `d`, eight `dmin` (f16), the scales (sub-block `j`, row
/// `r` at `K_SC + 8 j + r`), the mins (pair `p`, row `r`: `K_MIN + 16 p + 2 r` and `+ 1`), the
/// nibbles (pair `p`, step `s`, row `r`: four bytes at `K_QS + 256 p + 32 s + 4 r`).
const K_SC: usize = 32;
const K_MIN: usize = K_SC + 64;
const K_QS: usize = K_MIN + 64;
/// Bytes of a Q4_K group-block (eight ggml blocks are 1152).
pub(crate) const K_GB: usize = K_QS + 1024;

/// True if [`pack`] repacks `ty` weights of `rows` rows for `isa`: an x86 set (on a CPU that has
/// it), Q4_0, Q4_K, Q4_1, Q5_0, Q5_1 or Q8_0, rows in whole groups of eight.
pub fn packs(isa: Isa, ty: GgmlType, rows: usize) -> bool {
    isa.is_x86()
        && isa.usable()
        && (matches!(ty, GgmlType::Q4_0 | GgmlType::Q4_K) || lane_order(ty))
        && rows > 0
        && rows.is_multiple_of(GROUP)
}

/// Bytes of a lane-order Q8_0 group-block: the eight `d` (f16), then each row's 32 quants.
pub(crate) const Q8_GB: usize = 16 + 8 * 32;

/// True for the types packed in lane order (ggml's per-lane sums kept): Q4_1, Q5_0, Q5_1, Q8_0.
pub(crate) fn lane_order(ty: GgmlType) -> bool {
    ty == GgmlType::Q8_0 || lane_flags(ty).is_some()
}

/// For the lane-order layout of the 4- and 5-bit types (Q4_1, Q5_0, Q5_1): whether the type has
/// a per-block minimum `m` and whether it has a fifth bit per element; `None` for the others.
pub(crate) fn lane_flags(ty: GgmlType) -> Option<(bool, bool)> {
    match ty {
        GgmlType::Q5_0 => Some((false, true)),
        GgmlType::Q4_1 => Some((true, false)),
        GgmlType::Q5_1 => Some((true, true)),
        _ => None,
    }
}

/// Offsets in a lane-order group-block (one 32-element block of eight rows): the eight `d`
/// (f16), with `min` the eight `m` (f16) at 16, with `high` 32 bytes of fifth bits (byte `j`,
/// bit `r`: row `r`'s element `j`), then four pairs of rows (pair `p`, byte `j`: row `2p`'s
/// element `j` in the low nibble, row `2p + 1`'s in the high). Returns the offsets of the fifth
/// bits and of the nibbles, and the group-block's bytes (eight ggml blocks': 160, 176, 192).
pub(crate) const fn lane_layout(min: bool, high: bool) -> (usize, usize, usize) {
    let qh = 16 + if min { 16 } else { 0 };
    let qs = qh + if high { 32 } else { 0 };
    (qh, qs, qs + 128)
}

/// Packs one block of eight Q4_1/Q5_0/Q5_1 rows (`block(r)`: row `r`'s ggml block: `d`, for
/// Q4_1/Q5_1 `m`, for Q5_0/Q5_1 `qh`, then `qs`) into one lane-order group-block `o`. In ggml's
/// blocks element `j` has its low four bits in `qs[j]`'s low nibble (`j < 16`) or `qs[j - 16]`'s
/// high nibble, and its fifth bit in bit `j` of `qh`.
fn pack_lanes<'w>(o: &mut [u8], (min, high): (bool, bool), block: impl Fn(usize) -> &'w [u8]) {
    let (qh_at, qs_at, _) = lane_layout(min, high);
    o.fill(0);
    for r in 0..GROUP {
        let x = block(r);
        o[2 * r..2 * r + 2].copy_from_slice(&x[0..2]);
        let mut at = 2;
        if min {
            o[16 + 2 * r..16 + 2 * r + 2].copy_from_slice(&x[2..4]);
            at = 4;
        }
        let qh = if high {
            at += 4;
            u32::from_le_bytes(x[at - 4..at].try_into().expect("4 bytes"))
        } else {
            0
        };
        let qs = &x[at..at + 16];
        for j in 0..32 {
            if high {
                o[qh_at + j] |= (((qh >> j) & 1) as u8) << r;
            }
            let nib = if j < 16 { qs[j] & 0xF } else { qs[j - 16] >> 4 };
            o[qs_at + 32 * (r / 2) + j] |= nib << (4 * (r % 2));
        }
    }
}

/// Packs one super-block of eight Q4_K rows (`block(r)`: row `r`'s 144 bytes) into one
/// group-block `o`.
fn pack_q4_k<'w>(o: &mut [u8], block: impl Fn(usize) -> &'w [u8]) {
    for r in 0..GROUP {
        let x = block(r);
        o[2 * r..2 * r + 2].copy_from_slice(&x[0..2]);
        o[16 + 2 * r..16 + 2 * r + 2].copy_from_slice(&x[2..4]);
        let (sc, mn) = crate::k4_scales_mins(x[4..16].try_into().expect("12 bytes"));
        for j in 0..8 {
            o[K_SC + 8 * j + r] = sc[j];
        }
        for p in 0..4 {
            o[K_MIN + 16 * p + 2 * r] = mn[2 * p];
            o[K_MIN + 16 * p + 2 * r + 1] = mn[2 * p + 1];
            for s in 0..8 {
                let to = K_QS + 256 * p + 32 * s + 4 * r;
                let from = 16 + 32 * p + 4 * s;
                o[to..to + 4].copy_from_slice(&x[from..from + 4]);
            }
        }
    }
}

/// Packs one block of eight Q4_0 rows (`block(r)`: row `r`'s 18 bytes) into one group-block `o`:
/// the eight scales, then load `s` (0..3) holds bytes `4s..4s+3` of every row (low nibbles:
/// elements `4s..`, high nibbles: `16+4s..`).
fn pack_q4_0<'w>(o: &mut [u8], block: impl Fn(usize) -> &'w [u8]) {
    for r in 0..GROUP {
        let x = block(r);
        o[2 * r..2 * r + 2].copy_from_slice(&x[..2]);
        for s in 0..4 {
            let to = 16 + 32 * s + 4 * r;
            o[to..to + 4].copy_from_slice(&x[2 + 4 * s..6 + 4 * s]);
        }
    }
}

/// Packs one block of eight Q8_0 rows (`block(r)`: row `r`'s 34 bytes) into one lane-order
/// group-block `o`: the eight scales, then each row's 32 quants.
fn pack_q8_0<'w>(o: &mut [u8], block: impl Fn(usize) -> &'w [u8]) {
    for r in 0..GROUP {
        let x = block(r);
        o[2 * r..2 * r + 2].copy_from_slice(&x[..2]);
        o[16 + 32 * r..16 + 32 * (r + 1)].copy_from_slice(&x[2..34]);
    }
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
/// If `w` is not valid ([`Weights::validate`]), or its copy cannot be allocated.
pub fn pack_for(isa: Isa, w: &Weights) -> Result<Option<Packed>, KernelError> {
    Ok(pack_many(isa, std::slice::from_ref(w), |_| ())?
        .pop()
        .flatten())
}

/// Repacks every matrix of `ws` that [`packs`] takes for `isa` into one buffer on transparent
/// huge pages ([`crate::hugebuf`]), in the order given (give them in the order a forward pass
/// reads them, so one matrix's end runs into the next one's start), each at a 64-byte
/// boundary; the matrices are packed in parallel. `done(i)` is called, from the thread that
/// packed it, once `ws[i]` has been copied (so a caller can let go of the original's pages).
/// Returns one entry per matrix, `None` for those not packed.
///
/// Why one buffer: a decode step streams every weight once, and one core reads faster from
/// 2 MiB pages than from 4 KiB ones (see [`crate::hugebuf`]); the matrices of a small model
/// (0.06-0.6 MB each for SmolLM2-135M) are too small to fill huge pages apart.
///
/// # Errors
/// If a matrix is not valid ([`Weights::validate`]) or the buffer cannot be allocated.
pub fn pack_many(
    isa: Isa,
    ws: &[Weights],
    done: impl Fn(usize) + Sync,
) -> Result<Vec<Option<Packed>>, KernelError> {
    place_many(isa, ws, false, done)
}

/// [`pack_many`], and on the x86 sets every other quantized matrix copied as it is into the
/// same buffer (`Packed::interleaved == false`): the types without a packed layout (Q6_K, Q5_K)
/// and matrices whose rows are not whole groups then stream from huge pages too. Their kernels
/// are the unpacked ones, on the copy: the same bits. (One thread, low tier, whose 14 Q6_K
/// `ffn_down` stream at ~14 GB/s from the file: 190 -> 205 t/s with the faster Q6_K kernel.)
/// F16, BF16 and F32 stay in the file: their kernels are bound by arithmetic, and copying an
/// F16 model tripled its load time for no gain. Elsewhere (aarch64) the same as [`pack_many`]:
/// nothing is packed there, and a copy would turn the model's file-backed pages, which the
/// system can drop and read back, into anonymous memory for no measured gain.
///
/// # Errors
/// As [`pack_many`].
pub fn pack_or_copy_many(
    isa: Isa,
    ws: &[Weights],
    done: impl Fn(usize) + Sync,
) -> Result<Vec<Option<Packed>>, KernelError> {
    place_many(isa, ws, isa.is_x86() && isa.usable(), done)
}

fn place_many(
    isa: Isa,
    ws: &[Weights],
    copy_rest: bool,
    done: impl Fn(usize) + Sync,
) -> Result<Vec<Option<Packed>>, KernelError> {
    const ALIGN: usize = 64;
    // each placed matrix's (offset, length, interleaved) in the buffer
    let mut at: Vec<Option<(usize, usize, bool)>> = Vec::with_capacity(ws.len());
    let mut total = 0usize;
    for w in ws {
        w.validate()?;
        let place = if packs(isa, w.ty, w.rows) {
            Some((w.rows / GROUP * group_bytes(w.ty, w.cols), true))
        } else if copy_rest && w.ty.is_quantized() && w.rows > 0 {
            Some((w.rows * w.row_bytes(), false))
        } else {
            None
        };
        at.push(place.map(|(len, il)| (total, len, il)));
        if let Some((len, _)) = place {
            total += len.next_multiple_of(ALIGN);
        }
    }
    if total == 0 {
        return Ok(vec![None; ws.len()]);
    }
    let mut buf = HugeBuf::zeroed(total).map_err(|e| KernelError::Alloc {
        bytes: total,
        reason: e.to_string(),
    })?;
    // cut the buffer into each matrix's part, then fill the parts in parallel
    let mut parts: Vec<(usize, &mut [u8], bool)> = Vec::with_capacity(ws.len());
    let mut rest: &mut [u8] = &mut buf;
    for (i, a) in at.iter().enumerate() {
        if let Some((_, len, interleaved)) = *a {
            let (part, tail) = std::mem::take(&mut rest).split_at_mut(len.next_multiple_of(ALIGN));
            parts.push((i, &mut part[..len], interleaved));
            rest = tail;
        }
    }
    parts.into_par_iter().for_each(|(i, part, interleaved)| {
        if interleaved {
            pack_into(&ws[i], part);
        } else {
            part.copy_from_slice(&ws[i].data[..part.len()]);
        }
        done(i);
    });
    let buf = Arc::new(buf);
    Ok(ws
        .iter()
        .zip(at)
        .map(|(w, a)| {
            a.map(|(at, len, interleaved)| Packed {
                ty: w.ty,
                rows: w.rows,
                cols: w.cols,
                isa,
                interleaved,
                buf: buf.clone(),
                at,
                len,
            })
        })
        .collect())
}

/// Writes `w` (a valid matrix [`packs`] takes) in the packed layout into `data`, its size.
fn pack_into(w: &Weights, data: &mut [u8]) {
    let (rb, bs) = (w.row_bytes(), w.ty.type_size());
    let nb = w.cols / w.ty.block_size();
    // bytes of one group-block: eight blocks, one of each row of the group
    let gb = group_bytes(w.ty, w.cols) / nb;
    debug_assert_eq!(data.len(), w.rows / GROUP * gb * nb);
    data.par_chunks_mut(gb * nb)
        .enumerate()
        .for_each(|(g, out)| {
            for (l, o) in out.chunks_exact_mut(gb).enumerate() {
                let block = |r: usize| {
                    let at = (g * GROUP + r) * rb + l * bs;
                    &w.data[at..at + bs]
                };
                match w.ty {
                    GgmlType::Q4_K => pack_q4_k(o, block),
                    GgmlType::Q4_0 => pack_q4_0(o, block),
                    GgmlType::Q8_0 => pack_q8_0(o, block),
                    ty => pack_lanes(o, lane_flags(ty).expect("a packed type"), block),
                }
            }
        });
}

/// Per-token activation data of the packed kernels: for Q4_0, Q8_0 blocks, and per block the f32
/// scale and the offset correction `8 * sum(q)`; for Q4_K, Q8_K blocks, their scales, and per
/// pair of sub-blocks the two 32-element sums as two i16 in one i32 (`corr`, four per block).
/// Kept per calling thread and reused (grows, never shrinks), so a product allocates nothing
/// once the buffers have reached their size.
#[derive(Default)]
struct Acts {
    q: Vec<u8>,
    d: Vec<f32>,
    corr: Vec<i32>,
    /// Bytes of one token's activation row.
    lda: usize,
    /// Blocks per row.
    nb: usize,
    /// Elements of `corr` per token.
    ldc: usize,
    /// Elements of `d` per token (`nb`; `2 nb` for Q8_1: the scales, then the sums `s`).
    ldd: usize,
}

/// Tokens of an `n_tokens` product that llama.cpp's repacked Q4_K multiplies four at a time
/// (`gemm`); the rest go one by one (`gemv`).
fn in_fours(n_tokens: usize) -> usize {
    n_tokens - n_tokens % 4
}

/// Q8_K quantization as `ggml_quantize_mat_q8_K_4x8` (AVX2) does it for the tokens llama.cpp's
/// repacked Q4_K multiplies four at a time: the values of `quantize_row_q8_K_ref`, but the sign
/// of the scale is taken from whether `+max|x|` occurs anywhere in the block, not from the first
/// element of largest magnitude (the two differ only when `+m` and `-m` are both there).
pub fn quantize_q8_k_4x8(x: &[f32], dst: &mut [u8]) {
    assert!(x.len().is_multiple_of(256) && dst.len() >= x.len() / 256 * 292);
    for (x, y) in x.chunks_exact(256).zip(dst.chunks_exact_mut(292)) {
        let amax = x.iter().fold(0f32, |m, v| m.max(v.abs()));
        let iscale = if amax == 0.0 {
            0.0
        } else if x.contains(&amax) {
            -127.0 / amax
        } else {
            127.0 / amax
        };
        let d = if amax == 0.0 { 0.0 } else { 1.0 / iscale };
        y[..4].copy_from_slice(&d.to_le_bytes());
        for (q, v) in y[4..260].iter_mut().zip(x) {
            // round half to even by the 1.5 * 2^23 trick (|v * iscale| <= 127): what
            // `_mm256_round_ps` gives, without a libm call per element
            let r = ((v * iscale + 12582912.0).to_bits() as i32 & 0x007f_ffff) - 0x0040_0000;
            *q = r.clamp(-128, 127) as i8 as u8;
        }
        for j in 0..16 {
            let sum: i32 = y[4 + 16 * j..4 + 16 * (j + 1)]
                .iter()
                .map(|&q| q as i8 as i32)
                .sum();
            y[260 + 2 * j..262 + 2 * j].copy_from_slice(&(sum as i16).to_le_bytes());
        }
    }
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

/// [`prepare`] for Q4_K: Q8_K rows (the first [`in_fours`] tokens as llama.cpp's four-token
/// quantizer makes them), their scales and the sums of each pair of sub-blocks.
fn prepare_k(isa: Isa, cols: usize, xs: &[f32], n_tokens: usize, mut a: Acts) -> Acts {
    let nb = cols / 256;
    let lda = row_bytes(GgmlType::Q8_K, cols);
    a.q.resize(lda * n_tokens, 0);
    a.d.resize(nb * n_tokens, 0.0);
    a.corr.resize(4 * nb * n_tokens, 0);
    a.lda = lda;
    a.nb = nb;
    a.ldc = 4 * nb;
    a.ldd = nb;
    let fours = in_fours(n_tokens);
    type Token<'t> = (
        usize,
        ((&'t mut [u8], &'t [f32]), (&'t mut [f32], &'t mut [i32])),
    );
    let prep = |(t, ((q, x), (d, c))): Token| {
        if t < fours {
            quantize_q8_k_4x8(x, q);
        } else {
            crate::quantize_act_isa(isa, GgmlType::Q8_K, x, q);
        }
        for b in 0..nb {
            let blk = &q[b * 292..(b + 1) * 292];
            d[b] = f32::from_le_bytes(blk[..4].try_into().expect("4 bytes"));
            let bs = |j: usize| i16::from_le_bytes([blk[260 + 2 * j], blk[261 + 2 * j]]) as i32;
            for p in 0..4 {
                let lo = bs(4 * p) + bs(4 * p + 1);
                let hi = bs(4 * p + 2) + bs(4 * p + 3);
                c[4 * b + p] = (lo as u16 as u32 | (hi as u16 as u32) << 16) as i32;
            }
        }
    };
    crate::pool::for_each_row3(
        (&mut a.q, lda),
        (&mut a.d, nb),
        (&mut a.corr, 4 * nb),
        4,
        |t, q, d, c| prep((t, ((q, &xs[t * cols..(t + 1) * cols]), (d, c)))),
    );
    a
}

fn prepare(isa: Isa, ty: GgmlType, cols: usize, xs: &[f32], n_tokens: usize, mut a: Acts) -> Acts {
    if ty == GgmlType::Q4_K {
        return prepare_k(isa, cols, xs, n_tokens, a);
    }
    let nb = cols / 32;
    // Q8_1 (scale and sum per block) for the types with a minimum, else Q8_0
    let at = crate::act_type(ty).expect("a packed type");
    let lda = row_bytes(at, cols);
    let ldd = crate::act_scales_len(at, cols);
    a.q.resize(lda * n_tokens, 0);
    a.d.resize(ldd * n_tokens, 0.0);
    a.corr.resize(nb * n_tokens, 0);
    a.lda = lda;
    a.nb = nb;
    a.ldc = nb;
    a.ldd = ldd;
    type Token<'t> = ((&'t mut [u8], &'t [f32]), (&'t mut [f32], &'t mut [i32]));
    let prep = |((q, x), (d, c)): Token| {
        crate::quantize_act_isa(isa, at, x, q);
        crate::act_scales(at, cols, q, d);
        if ty == GgmlType::Q4_0 {
            for l in 0..nb {
                c[l] = 8 * q[l * 34 + 2..(l + 1) * 34]
                    .iter()
                    .map(|&v| v as i8 as i32)
                    .sum::<i32>();
            }
        }
    };
    if n_tokens == 1 {
        prep(((&mut a.q, xs), (&mut a.d, &mut a.corr)));
    } else {
        crate::pool::for_each_row3(
            (&mut a.q, lda),
            (&mut a.d, ldd),
            (&mut a.corr, nb),
            4,
            |t, q, d, c| prep(((q, &xs[t * cols..(t + 1) * cols]), (d, c))),
        );
    }
    a
}

/// `ys[t * rows + r] = W xs[t]` with packed weights, on the kernels of the set they were packed
/// for (`p.isa`).
///
/// # Panics
/// If the lengths do not match, or the CPU cannot run the set `p` was packed for.
pub fn gemm_packed(p: &Packed, xs: &[f32], n_tokens: usize, ys: &mut [f32]) {
    assert_eq!(xs.len(), n_tokens * p.cols, "activations: n_tokens * cols");
    assert_eq!(ys.len(), n_tokens * p.rows, "outputs: n_tokens * rows");
    if !p.interleaved {
        let w = Weights {
            ty: p.ty,
            rows: p.rows,
            cols: p.cols,
            data: p.data(),
        };
        crate::gemm_isa(p.isa, &w, xs, n_tokens, ys);
        return;
    }
    assert!(
        p.isa.is_x86() && p.isa.usable(),
        "packed weights need the x86 set they were packed for (`{}`)",
        p.isa
    );
    #[cfg(target_arch = "x86_64")]
    if n_tokens > 0 {
        run(p, xs, n_tokens, ys);
    }
}

/// The activations type `ty`'s kernels take, and the type to prepare them as for a set of
/// packed matrices multiplied together ([`gemv_packed_many`]): Q4_0 if one of them is Q4_0 (it
/// needs the offset corrections), else the first one's type.
fn shared_prep(ps: &[&Packed]) -> Option<GgmlType> {
    let first = ps.first()?;
    let at = crate::act_type(first.ty);
    let same = ps.iter().all(|p| {
        p.interleaved && crate::act_type(p.ty) == at && p.cols == first.cols && p.isa == first.isa
    });
    let q4_0 = ps.iter().any(|p| p.ty == GgmlType::Q4_0);
    same.then_some(if q4_0 { GgmlType::Q4_0 } else { first.ty })
}

/// At most this many matrices go through one [`gemv_packed_many`].
pub const MANY_MAX: usize = 4;

/// True if [`gemv_packed_many`] takes these matrices together: at most [`MANY_MAX`] of them, with
/// the same row length, activation type and instruction set.
pub fn can_share(ps: &[&Packed]) -> bool {
    ps.len() <= MANY_MAX && shared_prep(ps).is_some()
}

/// `ys[i] = W_i x` for one token and several packed matrices that take the same activations (as
/// attention's Q, K and V, or the feed-forward's gate and up): the activations are prepared once,
/// and every product runs in one parallel section, each thread taking one contiguous share of
/// the matrices' bytes. Each output is the one [`gemm_packed`] gives (the same kernels and
/// sums); what is saved is quantizing the same activations again and waiting for the threads
/// between the products.
///
/// # Panics
/// If the matrices cannot go together ([`can_share`]), a length does not match, or the CPU
/// cannot run the set they were packed for.
pub fn gemv_packed_many(ps: &[&Packed], x: &[f32], ys: &mut [&mut [f32]]) {
    assert!(can_share(ps), "matrices that take the same activations");
    assert_eq!(ps.len(), ys.len(), "one output per matrix");
    for (p, y) in ps.iter().zip(ys.iter()) {
        assert_eq!(x.len(), p.cols, "activations: cols");
        assert_eq!(y.len(), p.rows, "outputs: rows");
        assert!(
            p.isa.is_x86() && p.isa.usable(),
            "packed weights need the x86 set they were packed for (`{}`)",
            p.isa
        );
    }
    #[cfg(target_arch = "x86_64")]
    {
        let prep = shared_prep(ps).expect("checked");
        with_acts(ps[0].isa, prep, ps[0].cols, x, 1, |a| many(ps, a, ys));
    }
}

/// The products of [`gemv_packed_many`], activations prepared: the groups of all the matrices
/// in one list, walked in one share per thread ([`crate::pool::for_each_share`]).
#[cfg(target_arch = "x86_64")]
fn many(ps: &[&Packed], a: &Acts, ys: &mut [&mut [f32]]) {
    use crate::pool::SharedMut;
    use crate::x86::packed::Panel;
    let mut outs = [SharedMut(std::ptr::null_mut::<f32>()); MANY_MAX];
    for (o, y) in outs.iter_mut().zip(ys.iter_mut()) {
        *o = SharedMut(y.as_mut_ptr());
    }
    let total: usize = ps.iter().map(|p| p.rows / GROUP).sum();
    let widest = ps.iter().map(|p| p.group_bytes()).max().unwrap_or(1);
    // groups lo..hi of the list
    let part = |lo: usize, hi: usize| {
        let mut first = 0;
        for (i, p) in ps.iter().enumerate() {
            let groups = p.rows / GROUP;
            let (g0, g1) = (
                lo.max(first) - first,
                hi.min(first + groups).saturating_sub(first),
            );
            first += groups;
            let gbytes = p.group_bytes();
            for g in g0..g1 {
                let panel = Panel {
                    nb: a.nb,
                    w: p.data()[g * gbytes..(g + 1) * gbytes].as_ptr(),
                    a: a.q.as_ptr(),
                    lda: a.lda,
                    d: a.d.as_ptr(),
                    corr: a.corr.as_ptr(),
                    ldc: a.ldc,
                    ldd: a.ldd,
                    out: outs[i].at(g * GROUP),
                    ldo: p.rows,
                };
                // SAFETY: group g of matrix i has `gbytes` bytes; the token has its activation
                // row, scales and corrections (prepared for every matrix's type); outputs
                // 8 g .. 8 g + 8 of matrix i belong to this part only; the CPU runs the set
                // (asserted by `gemv_packed_many`).
                unsafe { crate::x86::packed::gemm(p.isa, p.ty, 1, true, panel) };
            }
        }
    };
    crate::pool::for_each_share(total, crate::matmul::decode_piece(widest), part);
}

/// The body of [`gemm_packed`]: activations prepared once, then parallel over row groups.
#[cfg(target_arch = "x86_64")]
fn run(p: &Packed, xs: &[f32], n_tokens: usize, ys: &mut [f32]) {
    with_acts(p.isa, p.ty, p.cols, xs, n_tokens, |a| {
        products(p, a, n_tokens, ys)
    });
}

/// The products of [`gemm_packed`], activations prepared.
#[cfg(target_arch = "x86_64")]
fn products(p: &Packed, a: &Acts, n_tokens: usize, ys: &mut [f32]) {
    use crate::matmul::rows_per_task;
    use crate::pool::SharedMut;
    use crate::x86::packed::Panel;
    let groups = p.rows / GROUP;
    let gbytes = p.group_bytes();
    let per = rows_per_task(groups, gbytes * n_tokens.min(8));
    let out = SharedMut(ys.as_mut_ptr());
    let rows = p.rows;
    if n_tokens > 1 && lane_order(p.ty) {
        return lanes_batch(p, a, n_tokens, per, out);
    }
    // groups g0..g1, every token
    let part = |g0: usize, g1: usize| {
        for g in g0..g1 {
            let mut t = 0;
            while t < n_tokens {
                let n = (n_tokens - t).min(4);
                let panel = Panel {
                    nb: a.nb,
                    w: p.data()[g * gbytes..(g + 1) * gbytes].as_ptr(),
                    a: a.q[t * a.lda..].as_ptr(),
                    lda: a.lda,
                    d: a.d[t * a.ldd..].as_ptr(),
                    corr: a.corr[t * a.ldc..].as_ptr(),
                    ldc: a.ldc,
                    ldd: a.ldd,
                    out: out.at(t * rows + g * GROUP),
                    ldo: rows,
                };
                // four at a time as llama.cpp's repacked Q4_K `gemm`, the rest as its `gemv`
                let once = t >= in_fours(n_tokens);
                // SAFETY: group g has `gbytes` bytes; tokens t..t+n have their activation rows,
                // scales and corrections; outputs (t + j) * rows + 8 g .. + 8 belong to this
                // task only; the CPU runs `p.isa` (asserted by `gemm_packed`).
                unsafe { crate::x86::packed::gemm(p.isa, p.ty, n, once, panel) };
                t += n;
            }
        }
    };
    if n_tokens == 1 {
        let piece = crate::matmul::decode_piece(gbytes);
        crate::pool::for_each_share(groups, piece, part);
    } else {
        crate::pool::for_each(groups.div_ceil(per), |c| {
            part(c * per, ((c + 1) * per).min(groups))
        });
    }
}

/// A batch against lane-order packed weights (Q4_1, Q5_0, Q5_1, Q8_0): each group is unpacked
/// into eight rows of blocks the tile kernels multiply as ggml multiplies the original ones
/// ([`crate::x86::packed::unpack`]: Q8_0 blocks (for Q5_0 of the same signed quants), run with
/// the Q8_0 tiles; 36-byte blocks of `d`, `m` and unsigned quants for Q4_1/Q5_1, run with the
/// Q4_1 tiles' arithmetic) in the thread's scratch buffer: the bits of the unpacked matrix
/// (tinyBLAS's order for Q8_0/Q5_0 batches, ggml's `vec_dot` for Q4_1/Q5_1, the orders
/// llama.cpp uses).
#[cfg(target_arch = "x86_64")]
fn lanes_batch(
    p: &Packed,
    a: &Acts,
    n_tokens: usize,
    per: usize,
    out: crate::pool::SharedMut<f32>,
) {
    let min = lane_flags(p.ty).is_some_and(|f| f.0);
    let isa = p.isa;
    let (tiles, size) = if min {
        let shape = crate::tile_shape(isa, GgmlType::Q4_1).expect("the x86 sets have tiles");
        let tiles = crate::matmul::Tiles::with(shape, |m, n| {
            crate::x86::tile::tile_kernel_q1_bytes(isa, m, n)
        });
        (tiles, 36)
    } else {
        (
            crate::matmul::Tiles::new(isa, GgmlType::Q8_0, false, None),
            34,
        )
    };
    let tiles = tiles.expect("the x86 sets have tiles");
    let (groups, gbytes, rows) = (p.rows / GROUP, p.group_bytes(), p.rows);
    let rb = size * a.nb;
    let task = |c: usize| {
        crate::matmul::with_scratch(GROUP * rb, |buf| {
            for g in c * per..((c + 1) * per).min(groups) {
                // SAFETY: group g has `gbytes` bytes and `buf` room for eight unpacked rows; the
                // outputs t * rows + 8 g .. + 8 belong to this task only; the CPU runs `p.isa`
                // (asserted by `gemm_packed`); every token has its activation row and scales in `a`.
                unsafe {
                    crate::x86::packed::unpack(
                        isa,
                        p.ty,
                        a.nb,
                        p.data()[g * gbytes..(g + 1) * gbytes].as_ptr(),
                        buf.as_mut_ptr(),
                    );
                    tiles.rows(
                        p.cols,
                        buf.as_ptr(),
                        rb,
                        GROUP,
                        (&a.q, a.lda, &a.d, a.ldd),
                        n_tokens,
                        out.at(g * GROUP),
                        rows,
                    );
                }
            }
        })
    };
    let n_tasks = groups.div_ceil(per);
    crate::pool::for_each(n_tasks, task);
}

/// What [`gemm_packed`] computes, in plain Rust and the same order (Q4_0: each row's blocks
/// summed as `acc = fma(int as f32, d_w * d_y, acc)`; Q4_K: see [`reference_q4_k`]), for tests.
///
/// # Panics
/// As [`gemm_packed`], or if `w.ty` has no packed layout.
pub fn gemm_packed_reference(w: &Weights, xs: &[f32], n_tokens: usize, ys: &mut [f32]) {
    if w.ty == GgmlType::Q4_K {
        return reference_q4_k(w, xs, n_tokens, ys);
    }
    if lane_order(w.ty) {
        return reference_lanes(w, xs, n_tokens, ys);
    }
    assert_eq!(w.ty, GgmlType::Q4_0, "a packable type");
    assert_eq!(xs.len(), n_tokens * w.cols);
    assert_eq!(ys.len(), n_tokens * w.rows);
    let a = prepare(Isa::Scalar, w.ty, w.cols, xs, n_tokens, Acts::default());
    let rb = w.row_bytes();
    let h =
        |b: &[u8], i: usize| half::f16::from_bits(u16::from_le_bytes([b[i], b[i + 1]])).to_f32();
    for t in 0..n_tokens {
        for r in 0..w.rows {
            let mut acc = 0f32;
            for l in 0..a.nb {
                let b = &w.data[r * rb + l * 18..r * rb + (l + 1) * 18];
                let y = &a.q[t * a.lda + l * 34 + 2..t * a.lda + (l + 1) * 34];
                let dot: i32 = (0..16)
                    .map(|j| {
                        let (lo, hi) = ((b[2 + j] & 0xF) as i32 - 8, (b[2 + j] >> 4) as i32 - 8);
                        lo * y[j] as i8 as i32 + hi * y[j + 16] as i8 as i32
                    })
                    .sum();
                acc = (dot as f32).mul_add(h(b, 0) * a.d[t * a.nb + l], acc);
            }
            ys[t * w.rows + r] = acc;
        }
    }
}

/// [`gemm_packed_reference`] for Q4_1, Q5_0 and Q5_1: ggml's one-row AVX2 order (`vec_dot`),
/// which tinyBLAS's Q5_0 batches share: per block the integer sums of elements `4i..4i+3` in lane
/// `i`, `lane = fma(d_w * d_y, sum as f32, lane)`, with a minimum `summs = summs + m_w * s_y`
/// (rounded product, then the sum), then the lanes reduced as `hsum_float_8` does,
/// `((l0 + l4) + (l2 + l6)) + ((l1 + l5) + (l3 + l7))`, plus `summs`.
fn reference_lanes(w: &Weights, xs: &[f32], n_tokens: usize, ys: &mut [f32]) {
    assert_eq!(xs.len(), n_tokens * w.cols);
    assert_eq!(ys.len(), n_tokens * w.rows);
    let (min, high) = lane_flags(w.ty).unwrap_or((false, false));
    let q8 = w.ty == GgmlType::Q8_0;
    let a = prepare(Isa::Scalar, w.ty, w.cols, xs, n_tokens, Acts::default());
    let (rb, bs) = (w.row_bytes(), w.ty.type_size());
    let (ab, aq) = if min { (36, 4) } else { (34, 2) };
    let h =
        |b: &[u8], i: usize| half::f16::from_bits(u16::from_le_bytes([b[i], b[i + 1]])).to_f32();
    for t in 0..n_tokens {
        for r in 0..w.rows {
            let mut lanes = [0f32; 8];
            let mut summs = 0f32;
            for l in 0..a.nb {
                let b = &w.data[r * rb + l * bs..r * rb + (l + 1) * bs];
                let y = &a.q[t * a.lda + l * ab + aq..t * a.lda + (l + 1) * ab];
                let qs_at = if q8 { 2 } else { bs - 16 };
                let qh = if high {
                    u32::from_le_bytes(b[qs_at - 4..qs_at].try_into().expect("4 bytes"))
                } else {
                    0
                };
                let q = |j: usize| {
                    let qs = &b[qs_at..];
                    if q8 {
                        return qs[j] as i8 as i32;
                    }
                    let nib = if j < 16 { qs[j] & 0xF } else { qs[j - 16] >> 4 };
                    let v = (nib | (((qh >> j) & 1) as u8) << 4) as i32;
                    if min {
                        v
                    } else {
                        v - 16
                    }
                };
                let dy = a.d[t * a.ldd + l];
                let d = h(b, 0) * dy;
                for (i, lane) in lanes.iter_mut().enumerate() {
                    let sum: i32 = (4 * i..4 * i + 4).map(|j| q(j) * y[j] as i8 as i32).sum();
                    *lane = d.mul_add(sum as f32, *lane);
                }
                if min {
                    summs += h(b, 2) * a.d[t * a.ldd + a.nb + l];
                }
            }
            let l = lanes;
            let hsum = ((l[0] + l[4]) + (l[2] + l[6])) + ((l[1] + l[5]) + (l[3] + l[7]));
            ys[t * w.rows + r] = if min { hsum + summs } else { hsum };
        }
    }
}

/// [`gemm_packed_reference`] for Q4_K: llama.cpp's repacked order, per row and token: each
/// sub-block's integer dot times its scale, summed exactly over a pair of sub-blocks (the first
/// [`in_fours`] tokens) or over the whole super-block (the rest), then
/// `acc = fma(sum as f32, d_w * d_y, acc)`; the same for the mins' term
/// (`min_j * sum(q8 of sub-block j)`, with `dmin_w * d_y`); the output is `acc - acc_min`.
fn reference_q4_k(w: &Weights, xs: &[f32], n_tokens: usize, ys: &mut [f32]) {
    assert_eq!(xs.len(), n_tokens * w.cols);
    assert_eq!(ys.len(), n_tokens * w.rows);
    let a = prepare(
        Isa::Scalar,
        GgmlType::Q4_K,
        w.cols,
        xs,
        n_tokens,
        Acts::default(),
    );
    let rb = w.row_bytes();
    let h =
        |b: &[u8], i: usize| half::f16::from_bits(u16::from_le_bytes([b[i], b[i + 1]])).to_f32();
    for t in 0..n_tokens {
        let per_pair = t < in_fours(n_tokens);
        for r in 0..w.rows {
            let (mut acc, mut accm) = (0f32, 0f32);
            for b in 0..a.nb {
                let x = &w.data[r * rb + b * 144..r * rb + (b + 1) * 144];
                let y = &a.q[t * a.lda + b * 292..t * a.lda + (b + 1) * 292];
                let (sc, mn) = crate::k4_scales_mins(x[4..16].try_into().expect("12 bytes"));
                let dy = a.d[t * a.nb + b];
                let (dd, dm) = (h(x, 0) * dy, h(x, 2) * dy);
                let (mut tot, mut totm) = (0i32, 0i32);
                for p in 0..4 {
                    let (mut isum, mut imin) = (0i32, 0i32);
                    for half in 0..2 {
                        let j = 2 * p + half;
                        let dot: i32 = (0..32)
                            .map(|l| {
                                let q = x[16 + 32 * p + l];
                                let v = if half == 0 { q & 0xF } else { q >> 4 };
                                v as i32 * y[4 + 32 * j + l] as i8 as i32
                            })
                            .sum();
                        let bsum: i32 = y[4 + 32 * j..4 + 32 * (j + 1)]
                            .iter()
                            .map(|&q| q as i8 as i32)
                            .sum();
                        isum += sc[j] as i32 * dot;
                        imin += mn[j] as i32 * bsum;
                    }
                    if per_pair {
                        acc = (isum as f32).mul_add(dd, acc);
                        accm = (imin as f32).mul_add(dm, accm);
                    } else {
                        tot += isum;
                        totm += imin;
                    }
                }
                if !per_pair {
                    acc = (tot as f32).mul_add(dd, acc);
                    accm = (totm as f32).mul_add(dm, accm);
                }
            }
            ys[t * w.rows + r] = acc - accm;
        }
    }
}
