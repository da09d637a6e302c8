//! x86 kernels for the 8-row packed layout of [`crate::packed`], one source per kernel compiled
//! for each [`Level`] as in [`super`].

// the per-token arrays are indexed in step with the token loops
#![allow(clippy::needless_range_loop)]

use std::arch::x86_64::*;

use super::{entry_points, hsum_float_8, mul_sum_us8_pairs, Level};
use crate::packed::{Q5_GB, Q5_QH, Q5_QS};
use crate::{GgmlType, Isa};

/// What one call multiplies: a packed group of eight rows against up to four tokens.
#[derive(Clone, Copy)]
pub struct Panel {
    /// Blocks per row.
    pub nb: usize,
    /// The group's `nb` group-blocks.
    pub w: *const u8,
    /// Token `j`'s Q8_0 row (Q8_K for Q4_K) at `a + j * lda`.
    pub a: *const u8,
    /// Bytes between tokens' activation rows.
    pub lda: usize,
    /// Token `j`'s block scales at `d + j * ldd`.
    pub d: *const f32,
    /// Token `j`'s offset corrections (Q4_K: sums of pairs of sub-blocks) at `corr + j * ldc`.
    pub corr: *const i32,
    /// Elements between tokens' corrections.
    pub ldc: usize,
    /// Elements between tokens' per-block arrays.
    pub ldd: usize,
    /// Token `j`'s eight outputs at `out + j * ldo`.
    pub out: *mut f32,
    /// Elements between tokens' outputs.
    pub ldo: usize,
}

/// `N` tokens against one packed group of eight Q4_0 rows. The i32 sums are the same on every
/// level: on VNNI one `vpdpbusd` per nibble half, elsewhere `vpmaddubsw` into i16 lanes that
/// cannot overflow, widened once per block.
///
/// # Safety
/// Every pointer of `p` is valid for what its field says (`nb` blocks, `N` tokens, 8 writable
/// outputs per token); the CPU runs level `L`.
#[inline(always)]
unsafe fn group<L: Level, const N: usize>(p: Panel) {
    let gb = 16 + 128;
    let m4 = _mm256_set1_epi8(0x0F);
    let ones = _mm256_set1_epi16(1);
    let mut acc = [_mm256_setzero_ps(); N];
    for l in 0..p.nb {
        let b = p.w.add(l * gb);
        let mut s16 = [_mm256_setzero_si256(); N];
        let mut s32 = [_mm256_setzero_si256(); N];
        for s in 0..4 {
            let v = _mm256_loadu_si256(b.add(16 + 32 * s).cast());
            let lo = _mm256_and_si256(v, m4);
            let hi = _mm256_and_si256(_mm256_srli_epi16::<4>(v), m4);
            for j in 0..N {
                let y = p.a.add(j * p.lda + l * 34 + 2);
                let ylo = _mm256_set1_epi32((y.add(4 * s) as *const i32).read_unaligned());
                let yhi = _mm256_set1_epi32((y.add(16 + 4 * s) as *const i32).read_unaligned());
                if L::VNNI {
                    s32[j] = _mm256_dpbusd_epi32(_mm256_dpbusd_epi32(s32[j], lo, ylo), hi, yhi);
                } else {
                    // i16 lanes hold at most 8 products (8 * 2 * 15 * 127 < 2^15)
                    s16[j] = _mm256_add_epi16(
                        s16[j],
                        _mm256_add_epi16(
                            _mm256_maddubs_epi16(lo, ylo),
                            _mm256_maddubs_epi16(hi, yhi),
                        ),
                    );
                }
            }
        }
        let dw = _mm256_cvtph_ps(_mm_loadu_si128(b.cast()));
        for j in 0..N {
            // the unsigned nibbles' products, less 8 * sum(y) for the offset of -8
            let sum = if L::VNNI {
                s32[j]
            } else {
                _mm256_madd_epi16(s16[j], ones)
            };
            let dot = _mm256_sub_epi32(sum, _mm256_set1_epi32(*p.corr.add(j * p.ldc + l)));
            let scale = _mm256_mul_ps(dw, _mm256_set1_ps(*p.d.add(j * p.ldd + l)));
            acc[j] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(dot), scale, acc[j]);
        }
    }
    for j in 0..N {
        _mm256_storeu_ps(p.out.add(j * p.ldo), acc[j]);
    }
}

/// `N` tokens against one packed group of eight Q4_K rows ([`crate::packed`]'s Q4_K layout),
/// Q8_K activations: each pair of sub-blocks' scaled integer sums are added to the f32
/// accumulators at once (`!ONCE`, llama.cpp's four-token `gemm`) or first summed over the
/// super-block (`ONCE`, its `gemv`).
///
/// # Safety
/// As [`group`]; `corr` holds four pair sums per super-block, `d` one scale.
#[inline(always)]
unsafe fn group_q4_k<L: Level, const N: usize, const ONCE: bool>(p: Panel) {
    use crate::packed::K_GB;
    const K_SC: usize = 32;
    const K_MIN: usize = K_SC + 64;
    const K_QS: usize = K_MIN + 64;
    let m4 = _mm256_set1_epi8(0x0F);
    let mut acc = [_mm256_setzero_ps(); N];
    let mut accm = [_mm256_setzero_ps(); N];
    for b in 0..p.nb {
        let g = p.w.add(b * K_GB);
        let dw = _mm256_cvtph_ps(_mm_loadu_si128(g.cast()));
        let mw = _mm256_cvtph_ps(_mm_loadu_si128(g.add(16).cast()));
        let mut dy = [_mm256_setzero_ps(); N];
        for j in 0..N {
            dy[j] = _mm256_set1_ps(*p.d.add(j * p.ldd + b));
        }
        let mut tot = [_mm256_setzero_si256(); N];
        let mut totm = [_mm256_setzero_si256(); N];
        for pr in 0..4 {
            let mut lo16 = [_mm256_setzero_si256(); N];
            let mut hi16 = [_mm256_setzero_si256(); N];
            // eight steps of four elements: each i16 lane sums 16 products, at most
            // 16 * 15 * 127 < 2^15
            for s in 0..8 {
                let v = _mm256_loadu_si256(g.add(K_QS + 256 * pr + 32 * s).cast());
                let lo = _mm256_and_si256(v, m4);
                let hi = _mm256_and_si256(_mm256_srli_epi16::<4>(v), m4);
                for j in 0..N {
                    let y = p.a.add(j * p.lda + b * 292 + 4 + 64 * pr + 4 * s);
                    let ylo = _mm256_set1_epi32((y as *const i32).read_unaligned());
                    let yhi = _mm256_set1_epi32((y.add(32) as *const i32).read_unaligned());
                    lo16[j] = _mm256_add_epi16(lo16[j], _mm256_maddubs_epi16(lo, ylo));
                    hi16[j] = _mm256_add_epi16(hi16[j], _mm256_maddubs_epi16(hi, yhi));
                }
            }
            // sub-block scales as i16 pairs (row r's in both halves of 32-bit lane r)
            let vlo = _mm_loadl_epi64(g.add(K_SC + 16 * pr).cast());
            let vhi = _mm_loadl_epi64(g.add(K_SC + 16 * pr + 8).cast());
            let slo = _mm256_cvtepu8_epi16(_mm_unpacklo_epi8(vlo, vlo));
            let shi = _mm256_cvtepu8_epi16(_mm_unpacklo_epi8(vhi, vhi));
            let mins = _mm256_cvtepu8_epi16(_mm_loadu_si128(g.add(K_MIN + 16 * pr).cast()));
            for j in 0..N {
                let isum = _mm256_add_epi32(
                    _mm256_madd_epi16(lo16[j], slo),
                    _mm256_madd_epi16(hi16[j], shi),
                );
                let bs = _mm256_set1_epi32(*p.corr.add(j * p.ldc + 4 * b + pr));
                let imin = _mm256_madd_epi16(mins, bs);
                if ONCE {
                    tot[j] = _mm256_add_epi32(tot[j], isum);
                    totm[j] = _mm256_add_epi32(totm[j], imin);
                } else {
                    acc[j] =
                        _mm256_fmadd_ps(_mm256_cvtepi32_ps(isum), _mm256_mul_ps(dw, dy[j]), acc[j]);
                    accm[j] = _mm256_fmadd_ps(
                        _mm256_cvtepi32_ps(imin),
                        _mm256_mul_ps(mw, dy[j]),
                        accm[j],
                    );
                }
            }
        }
        if ONCE {
            for j in 0..N {
                acc[j] =
                    _mm256_fmadd_ps(_mm256_cvtepi32_ps(tot[j]), _mm256_mul_ps(dw, dy[j]), acc[j]);
                accm[j] = _mm256_fmadd_ps(
                    _mm256_cvtepi32_ps(totm[j]),
                    _mm256_mul_ps(mw, dy[j]),
                    accm[j],
                );
            }
        }
    }
    for j in 0..N {
        _mm256_storeu_ps(p.out.add(j * p.ldo), _mm256_sub_ps(acc[j], accm[j]));
    }
}

/// Row `R`'s 32 quants of a Q5_0 group-block ([`crate::packed`]'s Q5_0 layout) as unsigned
/// 5-bit values `nibble | high << 4` (the stored value plus 16): `qs` is the byte pair holding
/// rows `R & !1` (low nibbles) and `R | 1` (high nibbles), `qh` the 32 bytes whose bit `R` is
/// each element's high bit. A 16-bit shift moves bit `R` of every byte to bit 4 of the same byte
/// (the shift is at most 4, so no bit that reaches bit 4 crosses a byte).
#[inline(always)]
unsafe fn q5_0_row<const R: usize>(qs: __m256i, qh: __m256i) -> __m256i {
    let m4 = _mm256_set1_epi8(0x0F);
    let nib = if R.is_multiple_of(2) {
        _mm256_and_si256(qs, m4)
    } else {
        _mm256_and_si256(_mm256_srli_epi16::<4>(qs), m4)
    };
    let hb = match R {
        0 => _mm256_slli_epi16::<4>(qh),
        1 => _mm256_slli_epi16::<3>(qh),
        2 => _mm256_slli_epi16::<2>(qh),
        3 => _mm256_slli_epi16::<1>(qh),
        4 => qh,
        5 => _mm256_srli_epi16::<1>(qh),
        6 => _mm256_srli_epi16::<2>(qh),
        _ => _mm256_srli_epi16::<3>(qh),
    };
    _mm256_or_si256(nib, _mm256_and_si256(hb, _mm256_set1_epi8(0x10)))
}

/// One step of [`group_q5_0`]: row `R` (of pair `qs`) against activation `y`, as ggml's
/// `ggml_vec_dot_q5_0_q8_0` adds one block: the signed quants' products summed in fours (here
/// the unsigned quants' less `16 * sum(y)`, the same integers), times `d_w * d_y` into the
/// row's eight lanes.
#[inline(always)]
unsafe fn q5_0_step<L: Level, const R: usize>(
    qs: __m256i,
    qh: __m256i,
    y: __m256i,
    off: __m256i,
    d: &[f32; 8],
    acc: &mut [__m256; 8],
) {
    let q = q5_0_row::<R>(qs, qh);
    let sum = _mm256_sub_epi32(mul_sum_us8_pairs::<L>(q, y), off);
    acc[R] = _mm256_fmadd_ps(_mm256_broadcast_ss(&d[R]), _mm256_cvtepi32_ps(sum), acc[R]);
}

/// One token against one packed group of eight Q5_0 rows, each row summed exactly as ggml's
/// one-row `ggml_vec_dot_q5_0_q8_0` (AVX2) sums it: per block the integer sums of four products
/// in eight lanes, `acc = fma(d_w * d_y, sums, acc)`, and at the end `hsum_float_8(acc)`. The
/// layout only saves work: the 5-bit quants are rebuilt with two shifts and masks instead of
/// ggml's byte shuffle and compare, one load of nibbles serves two rows, one of high bits
/// eight, and the eight `d_w * d_y` are one vector multiply.
///
/// # Safety
/// As [`group`], one token; `d` holds the token's block scales.
#[inline(always)]
unsafe fn group_q5_0<L: Level>(p: Panel) {
    let sixteen = _mm256_set1_epi8(16);
    let mut acc = [_mm256_setzero_ps(); 8];
    for l in 0..p.nb {
        let b = p.w.add(l * Q5_GB);
        let y = _mm256_loadu_si256(p.a.add(l * 34 + 2).cast());
        let off = mul_sum_us8_pairs::<L>(sixteen, y);
        let mut d = [0f32; 8];
        let dd = _mm256_mul_ps(
            _mm256_cvtph_ps(_mm_loadu_si128(b.cast())),
            _mm256_set1_ps(*p.d.add(l)),
        );
        _mm256_storeu_ps(d.as_mut_ptr(), dd);
        let qh = _mm256_loadu_si256(b.add(Q5_QH).cast());
        let qs = _mm256_loadu_si256(b.add(Q5_QS).cast());
        q5_0_step::<L, 0>(qs, qh, y, off, &d, &mut acc);
        q5_0_step::<L, 1>(qs, qh, y, off, &d, &mut acc);
        let qs = _mm256_loadu_si256(b.add(Q5_QS + 32).cast());
        q5_0_step::<L, 2>(qs, qh, y, off, &d, &mut acc);
        q5_0_step::<L, 3>(qs, qh, y, off, &d, &mut acc);
        let qs = _mm256_loadu_si256(b.add(Q5_QS + 64).cast());
        q5_0_step::<L, 4>(qs, qh, y, off, &d, &mut acc);
        q5_0_step::<L, 5>(qs, qh, y, off, &d, &mut acc);
        let qs = _mm256_loadu_si256(b.add(Q5_QS + 96).cast());
        q5_0_step::<L, 6>(qs, qh, y, off, &d, &mut acc);
        q5_0_step::<L, 7>(qs, qh, y, off, &d, &mut acc);
    }
    for (r, a) in acc.iter().enumerate() {
        *p.out.add(r) = hsum_float_8(*a);
    }
}

/// Unpacks `nb` Q5_0 group-blocks at `w` into eight Q8_0 rows at `out` (row `r` at
/// `out + r * 34 * nb`): each block's `d` and its 32 quants as signed bytes (-16..15). The tile
/// kernels multiply those as ggml multiplies the Q5_0 blocks (the same signed quants, scales and
/// order), so a batch gets the bits of the unpacked matrix.
///
/// # Safety
/// `w` holds `nb` group-blocks, `out` `8 * 34 * nb` writable bytes; the CPU runs level `L`.
#[inline(always)]
unsafe fn unpack_q5_0<L: Level>(nb: usize, w: *const u8, out: *mut u8) {
    let sixteen = _mm256_set1_epi8(16);
    let rb = 34 * nb;
    for l in 0..nb {
        let b = w.add(l * Q5_GB);
        let qh = _mm256_loadu_si256(b.add(Q5_QH).cast());
        let put = |r: usize, q: __m256i| {
            let o = out.add(r * rb + l * 34);
            std::ptr::copy_nonoverlapping(b.add(2 * r), o, 2);
            _mm256_storeu_si256(o.add(2).cast(), _mm256_sub_epi8(q, sixteen));
        };
        let qs = _mm256_loadu_si256(b.add(Q5_QS).cast());
        put(0, q5_0_row::<0>(qs, qh));
        put(1, q5_0_row::<1>(qs, qh));
        let qs = _mm256_loadu_si256(b.add(Q5_QS + 32).cast());
        put(2, q5_0_row::<2>(qs, qh));
        put(3, q5_0_row::<3>(qs, qh));
        let qs = _mm256_loadu_si256(b.add(Q5_QS + 64).cast());
        put(4, q5_0_row::<4>(qs, qh));
        put(5, q5_0_row::<5>(qs, qh));
        let qs = _mm256_loadu_si256(b.add(Q5_QS + 96).cast());
        put(6, q5_0_row::<6>(qs, qh));
        put(7, q5_0_row::<7>(qs, qh));
    }
}

/// The unpacking entry points (a module of their own: [`entry_points`] names its functions).
mod unpacking {
    use super::{entry_points, unpack_q5_0, Level};

    /// An unpacking body, compiled per level by [`unpack_for`].
    trait Unpack {
        /// # Safety
        /// As [`unpack_q5_0`], on a CPU that runs level `L`.
        unsafe fn run<L: Level>(nb: usize, w: *const u8, out: *mut u8);
    }

    entry_points!(
        Unpack::run,
        unpack_for,
        unsafe fn(usize, *const u8, *mut u8),
        fn(nb: usize, w: *const u8, out: *mut u8)
    );

    struct U5_0;
    impl Unpack for U5_0 {
        #[inline(always)]
        unsafe fn run<L: Level>(nb: usize, w: *const u8, out: *mut u8) {
            unpack_q5_0::<L>(nb, w, out)
        }
    }

    /// [`unpack_q5_0`]'s entry point for `isa`.
    pub(super) fn q5_0(isa: crate::Isa) -> unsafe fn(usize, *const u8, *mut u8) {
        unpack_for::<U5_0>(isa)
    }
}

/// [`unpack_q5_0`] compiled for `isa` (one of the x86 sets).
///
/// # Safety
/// As [`unpack_q5_0`]; the CPU runs `isa`.
pub unsafe fn unpack_q5_0_to_q8_0(isa: Isa, nb: usize, w: *const u8, out: *mut u8) {
    unpacking::q5_0(isa)(nb, w, out)
}

/// A packed-group body, compiled per level by [`group_for`].
trait Group {
    /// # Safety
    /// As [`group`], on a CPU that runs level `L`.
    unsafe fn run<L: Level>(p: Panel);
}

entry_points!(Group::run, group_for, unsafe fn(Panel), fn(p: Panel));

/// [`group`] for `N` tokens as a [`Group`].
struct G4_0<const N: usize>;
impl<const N: usize> Group for G4_0<N> {
    #[inline(always)]
    unsafe fn run<L: Level>(p: Panel) {
        group::<L, N>(p)
    }
}

/// [`group_q5_0`] (one token) as a [`Group`].
struct G5_0;
impl Group for G5_0 {
    #[inline(always)]
    unsafe fn run<L: Level>(p: Panel) {
        group_q5_0::<L>(p)
    }
}

/// [`group_q4_k`] for `N` tokens as a [`Group`].
struct G4K<const N: usize, const ONCE: bool>;
impl<const N: usize, const ONCE: bool> Group for G4K<N, ONCE> {
    #[inline(always)]
    unsafe fn run<L: Level>(p: Panel) {
        group_q4_k::<L, N, ONCE>(p)
    }
}

/// [`group`] for Q4_0, [`group_q4_k`] for Q4_K (summed as llama.cpp's `gemv` if `once`), `n`
/// tokens (1 to 4), or [`group_q5_0`] for Q5_0 (one token), compiled for `isa` (one of the x86
/// sets).
///
/// # Safety
/// As [`group`]; the CPU runs `isa`.
pub unsafe fn gemm(isa: Isa, ty: GgmlType, n: usize, once: bool, p: Panel) {
    let f = match (ty, n, once) {
        (GgmlType::Q4_0, 1, _) => group_for::<G4_0<1>>(isa),
        (GgmlType::Q4_0, 2, _) => group_for::<G4_0<2>>(isa),
        (GgmlType::Q4_0, 3, _) => group_for::<G4_0<3>>(isa),
        (GgmlType::Q4_0, 4, _) => group_for::<G4_0<4>>(isa),
        (GgmlType::Q5_0, 1, _) => group_for::<G5_0>(isa),
        (GgmlType::Q4_K, 4, false) => group_for::<G4K<4, false>>(isa),
        (GgmlType::Q4_K, 1, _) => group_for::<G4K<1, true>>(isa),
        (GgmlType::Q4_K, 2, _) => group_for::<G4K<2, true>>(isa),
        (GgmlType::Q4_K, 3, _) => group_for::<G4K<3, true>>(isa),
        (GgmlType::Q4_K, 4, true) => group_for::<G4K<4, true>>(isa),
        _ => unreachable!("packed types are Q4_0 and Q4_K (1 to 4 tokens) and Q5_0 (one)"),
    };
    f(p)
}
