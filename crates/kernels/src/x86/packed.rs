//! x86 kernels for the 8-row packed layout of [`crate::packed`], one source per kernel compiled
//! for each [`Level`] as in [`super`].

// the per-token arrays are indexed in step with the token loops
#![allow(clippy::needless_range_loop)]

use std::arch::x86_64::*;

use super::{entry_points, Level};
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

/// [`group_q4_k`] for `N` tokens as a [`Group`].
struct G4K<const N: usize, const ONCE: bool>;
impl<const N: usize, const ONCE: bool> Group for G4K<N, ONCE> {
    #[inline(always)]
    unsafe fn run<L: Level>(p: Panel) {
        group_q4_k::<L, N, ONCE>(p)
    }
}

/// [`group`] for Q4_0, [`group_q4_k`] for Q4_K (summed as llama.cpp's `gemv` if `once`), `n`
/// tokens (1 to 4), compiled for `isa` (one of the x86 sets).
///
/// # Safety
/// As [`group`]; the CPU runs `isa`.
pub unsafe fn gemm(isa: Isa, ty: GgmlType, n: usize, once: bool, p: Panel) {
    let f = match (ty, n, once) {
        (GgmlType::Q4_0, 1, _) => group_for::<G4_0<1>>(isa),
        (GgmlType::Q4_0, 2, _) => group_for::<G4_0<2>>(isa),
        (GgmlType::Q4_0, 3, _) => group_for::<G4_0<3>>(isa),
        (GgmlType::Q4_0, 4, _) => group_for::<G4_0<4>>(isa),
        (GgmlType::Q4_K, 4, false) => group_for::<G4K<4, false>>(isa),
        (GgmlType::Q4_K, 1, _) => group_for::<G4K<1, true>>(isa),
        (GgmlType::Q4_K, 2, _) => group_for::<G4K<2, true>>(isa),
        (GgmlType::Q4_K, 3, _) => group_for::<G4K<3, true>>(isa),
        (GgmlType::Q4_K, 4, true) => group_for::<G4K<4, true>>(isa),
        _ => unreachable!("packed types are Q4_0 and Q4_K, 1 to 4 tokens"),
    };
    f(p)
}
