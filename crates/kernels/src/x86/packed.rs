//! AVX2 kernels for the 8-row packed layout of [`crate::packed`].

// the per-token arrays are indexed in step with the token loops
#![allow(clippy::needless_range_loop)]

use std::arch::x86_64::*;

use super::bytes_from_bits_32;
use crate::GgmlType;

/// What one call multiplies: a packed group of eight rows against up to four tokens.
#[derive(Clone, Copy)]
pub struct Panel {
    /// Blocks per row.
    pub nb: usize,
    /// The group's `nb` group-blocks.
    pub w: *const u8,
    /// Token `j`'s Q8_0 row (Q8_1 for Q5_1) at `a + j * lda`.
    pub a: *const u8,
    /// Bytes between tokens' activation rows.
    pub lda: usize,
    /// Token `j`'s block scales at `d + j * ldd`.
    pub d: *const f32,
    /// Token `j`'s offset corrections at `corr + j * ldd`.
    pub corr: *const i32,
    /// Token `j`'s Q8_1 sums at `sy + j * ldd` (Q5_1).
    pub sy: *const f32,
    /// Elements between tokens' per-block arrays.
    pub ldd: usize,
    /// Token `j`'s eight outputs at `out + j * ldo`.
    pub out: *mut f32,
    /// Elements between tokens' outputs.
    pub ldo: usize,
}

/// `N` tokens against one packed group of eight rows: Q4_0 (`!Q5`, `!MIN`), Q5_0 (`Q5`) or
/// Q5_1 (`Q5`, `MIN`).
///
/// # Safety
/// Every pointer of `p` is valid for what its field says (`nb` blocks, `N` tokens, 8 writable
/// outputs per token); the CPU runs AVX2, FMA and F16C.
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn group<const Q5: bool, const MIN: bool, const N: usize>(p: Panel) {
    let Panel {
        nb,
        w,
        a,
        lda,
        d,
        corr,
        sy,
        ldd,
        out,
        ldo,
    } = p;
    let qh_at = if MIN { 32 } else { 16 };
    let qs_at = if Q5 { qh_at + 32 } else { qh_at };
    let gb = qs_at + 128;
    // activation blocks: Q8_1 (d, s, 32 quants) or Q8_0 (d, 32 quants)
    let (abs, aqs) = if MIN { (36, 4) } else { (34, 2) };
    let mut summ = [_mm256_setzero_ps(); N];
    let m4 = _mm256_set1_epi8(0x0F);
    let ones = _mm256_set1_epi16(1);
    let mut acc = [_mm256_setzero_ps(); N];
    for l in 0..nb {
        let b = w.add(l * gb);
        let mut s32 = [_mm256_setzero_si256(); N];
        let mut s16 = [_mm256_setzero_si256(); N];
        for s in 0..4 {
            let v = _mm256_loadu_si256(b.add(qs_at + 32 * s).cast());
            let mut lo = _mm256_and_si256(v, m4);
            let mut hi = _mm256_and_si256(_mm256_srli_epi16::<4>(v), m4);
            if Q5 {
                let bit = _mm256_set1_epi8(0x10);
                let h0 = (b.add(qh_at + 8 * s) as *const u32).read_unaligned();
                let h1 = (b.add(qh_at + 4 + 8 * s) as *const u32).read_unaligned();
                lo = _mm256_or_si256(lo, _mm256_and_si256(bytes_from_bits_32(h0), bit));
                hi = _mm256_or_si256(hi, _mm256_and_si256(bytes_from_bits_32(h1), bit));
            }
            for j in 0..N {
                let y = a.add(j * lda + l * abs + aqs);
                let ylo = _mm256_set1_epi32((y.add(4 * s) as *const i32).read_unaligned());
                let yhi = _mm256_set1_epi32((y.add(16 + 4 * s) as *const i32).read_unaligned());
                s16[j] = _mm256_add_epi16(
                    s16[j],
                    _mm256_add_epi16(_mm256_maddubs_epi16(lo, ylo), _mm256_maddubs_epi16(hi, yhi)),
                );
            }
            // i16 lanes hold at most 8 products of Q4_0 (8 * 2 * 15 * 127 < 2^15) or 4 of
            // Q5_0 (4 * 2 * 31 * 127 < 2^15) before they are widened
            if !Q5 && s == 3 || Q5 && s % 2 == 1 {
                for j in 0..N {
                    s32[j] = _mm256_add_epi32(s32[j], _mm256_madd_epi16(s16[j], ones));
                    s16[j] = _mm256_setzero_si256();
                }
            }
        }
        let dw = _mm256_cvtph_ps(_mm_loadu_si128(b.cast()));
        for j in 0..N {
            let dot = if MIN {
                s32[j]
            } else {
                _mm256_sub_epi32(s32[j], _mm256_set1_epi32(*corr.add(j * ldd + l)))
            };
            let scale = _mm256_mul_ps(dw, _mm256_set1_ps(*d.add(j * ldd + l)));
            acc[j] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(dot), scale, acc[j]);
        }
        if MIN {
            let mw = _mm256_cvtph_ps(_mm_loadu_si128(b.add(16).cast()));
            for j in 0..N {
                summ[j] = _mm256_fmadd_ps(mw, _mm256_set1_ps(*sy.add(j * ldd + l)), summ[j]);
            }
        }
    }
    for j in 0..N {
        let r = if MIN {
            _mm256_add_ps(acc[j], summ[j])
        } else {
            acc[j]
        };
        _mm256_storeu_ps(out.add(j * ldo), r);
    }
}

/// [`group`] for `ty` (Q4_0, Q5_0 or Q5_1) and `n` tokens (1 to 4).
///
/// # Safety
/// As [`group`].
pub unsafe fn gemm(ty: GgmlType, n: usize, p: Panel) {
    macro_rules! go {
        ($q5:literal, $min:literal) => {
            match n {
                1 => group::<$q5, $min, 1>(p),
                2 => group::<$q5, $min, 2>(p),
                3 => group::<$q5, $min, 3>(p),
                4 => group::<$q5, $min, 4>(p),
                _ => unreachable!("1 to 4 tokens"),
            }
        };
    }
    match ty {
        GgmlType::Q4_0 => go!(false, false),
        GgmlType::Q5_0 => go!(true, false),
        GgmlType::Q5_1 => go!(true, true),
        _ => unreachable!("packed types are Q4_0, Q5_0 and Q5_1"),
    }
}
