//! x86 kernels for the 8-row packed layout of [`crate::packed`], one source per kernel compiled
//! for each [`Level`] as in [`super`].

// the per-token arrays are indexed in step with the token loops
#![allow(clippy::needless_range_loop)]

use std::arch::x86_64::*;

use super::{
    entry_points, fetch_ahead, hsum_float_8, mul_sum_us8_pairs, mul_sum_us8_pairs_acc, or_and,
    Level,
};
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
        if N == 1 {
            fetch_ahead(b, gb);
        }
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
        if N == 1 {
            fetch_ahead(g, K_GB);
        }
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

/// Row `R`'s 32 quants of a lane-order group-block ([`crate::packed`]'s Q4_1/Q5_0/Q5_1 layout) as
/// unsigned values: the nibble, with `HIGH` the fifth bit above it. `qs` is the byte pair holding
/// rows `R & !1` (low nibbles) and `R | 1` (high nibbles), `qh` the 32 bytes whose bit `R` is each
/// element's fifth bit. A 16-bit shift moves bit `R` of every byte to bit 4 of the same byte (the
/// shift is at most 4, so no bit that reaches bit 4 crosses a byte).
#[inline(always)]
unsafe fn lane_row<L: Level, const R: usize, const HIGH: bool>(
    qs: __m256i,
    qh: __m256i,
) -> __m256i {
    let m4 = _mm256_set1_epi8(0x0F);
    let nib = if R.is_multiple_of(2) {
        _mm256_and_si256(qs, m4)
    } else {
        _mm256_and_si256(_mm256_srli_epi16::<4>(qs), m4)
    };
    if !HIGH {
        return nib;
    }
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
    or_and::<L>(nib, hb, _mm256_set1_epi8(0x10))
}

/// One step of [`group_lanes`]: row `R` (of pair `qs`) against activation `y`, as ggml's
/// `vec_dot` adds one block: the quants' products summed in fours (for Q5_0 the unsigned quants'
/// less `16 * sum(y)`, summed from `neg_off` = `-16 * sum(y)`: the same integers as the signed
/// ones'), times `d_w * d_y` into the row's eight lanes.
#[inline(always)]
unsafe fn lane_step<L: Level, const R: usize, const MIN: bool, const HIGH: bool>(
    qs: __m256i,
    qh: __m256i,
    y: __m256i,
    neg_off: __m256i,
    d: &[f32; 8],
    acc: &mut [__m256; 8],
) {
    let q = lane_row::<L, R, HIGH>(qs, qh);
    let sum = if MIN {
        mul_sum_us8_pairs::<L>(q, y)
    } else {
        mul_sum_us8_pairs_acc::<L>(neg_off, q, y)
    };
    acc[R] = _mm256_fmadd_ps(_mm256_broadcast_ss(&d[R]), _mm256_cvtepi32_ps(sum), acc[R]);
}

/// Calls `step(R, qs)` for the eight rows of a lane-order group-block at `b` (nibble pairs at
/// `qs_at`), each pair's 32 bytes loaded once.
macro_rules! each_row {
    ($b:expr, $qs_at:expr, |$r:tt, $qs:ident| $step:expr) => {{
        let $qs = _mm256_loadu_si256($b.add($qs_at).cast());
        each_row!(@ 0, 1, $qs, $r, $step);
        let $qs = _mm256_loadu_si256($b.add($qs_at + 32).cast());
        each_row!(@ 2, 3, $qs, $r, $step);
        let $qs = _mm256_loadu_si256($b.add($qs_at + 64).cast());
        each_row!(@ 4, 5, $qs, $r, $step);
        let $qs = _mm256_loadu_si256($b.add($qs_at + 96).cast());
        each_row!(@ 6, 7, $qs, $r, $step);
    }};
    (@ $r0:literal, $r1:literal, $qs:ident, $r:tt, $step:expr) => {{
        {
            const $r: usize = $r0;
            $step;
        }
        {
            const $r: usize = $r1;
            $step;
        }
    }};
}

/// The eight rows' `d_w * d_y` of a block, stored by one 32-byte store and read back by one
/// broadcast load per row ([`group_lanes`], [`group_q8_0`]). Aligned to 32 bytes so the store
/// never spans two cache lines: an unaligned slot on the stack did whenever the caller's frame
/// put it across a 64-byte boundary, and then every broadcast load waited for the split store
/// instead of being forwarded from it (the Q5_1 output matrix of the low tier ran at half speed
/// in a build whose only change was a larger frame in the caller, docs/performance.md).
#[repr(C, align(32))]
struct Scales([f32; 8]);

/// One token against one lane-order group of eight rows (Q5_0: `MIN` false, `HIGH` true; Q4_1:
/// `MIN`; Q5_1: both), each row summed exactly as ggml's one-row AVX2 `vec_dot` (`q5_0_q8_0`,
/// `q4_1_q8_1`, `q5_1_q8_1`) sums it: per block the integer sums of four products in eight
/// lanes, `acc = fma(d_w * d_y, sums, acc)`, for `MIN` `summs += m_w * s_y`, and at the end
/// `hsum_float_8(acc) + summs`. The layout only saves work: the quants come back with a mask (and
/// for the fifth bit a shift and a mask) instead of ggml's nibble spread and byte shuffle and
/// compare per row, one load of nibbles serves two rows, one of fifth bits eight, and the eight
/// `d_w * d_y` (and `m_w * s_y`) are one vector multiply.
///
/// # Safety
/// As [`group`], one token; `d` holds the token's block scales (and for `MIN` their sums after
/// them, `d + nb`, as [`crate::act_scales`] writes Q8_1's).
#[inline(always)]
unsafe fn group_lanes<L: Level, const MIN: bool, const HIGH: bool>(p: Panel) {
    let (qh_at, qs_at, gb) = crate::packed::lane_layout(MIN, HIGH);
    // Q8_1 activations (36-byte blocks, quants at 4) with the mins, else Q8_0 (34, at 2)
    let (ab, aq) = if MIN { (36, 4) } else { (34, 2) };
    let sixteen = _mm256_set1_epi8(16);
    let mut acc = [_mm256_setzero_ps(); 8];
    let mut summs = _mm256_setzero_ps();
    for l in 0..p.nb {
        let b = p.w.add(l * gb);
        fetch_ahead(b, gb);
        let y = _mm256_loadu_si256(p.a.add(l * ab + aq).cast());
        let neg_off = if MIN {
            _mm256_setzero_si256()
        } else {
            _mm256_sub_epi32(_mm256_setzero_si256(), mul_sum_us8_pairs::<L>(sixteen, y))
        };
        let mut d = Scales([0f32; 8]);
        let dd = _mm256_mul_ps(
            _mm256_cvtph_ps(_mm_loadu_si128(b.cast())),
            _mm256_set1_ps(*p.d.add(l)),
        );
        _mm256_store_ps(d.0.as_mut_ptr(), dd);
        // read back from memory, one broadcast load per row (which LLVM otherwise turns into
        // two shuffles of `dd` for most rows)
        let d = &std::hint::black_box(&d).0;
        if MIN {
            let ms = _mm256_mul_ps(
                _mm256_cvtph_ps(_mm_loadu_si128(b.add(16).cast())),
                _mm256_set1_ps(*p.d.add(p.nb + l)),
            );
            summs = _mm256_add_ps(summs, ms);
        }
        let qh = if HIGH {
            _mm256_loadu_si256(b.add(qh_at).cast())
        } else {
            _mm256_setzero_si256()
        };
        each_row!(b, qs_at, |R, qs| lane_step::<L, R, MIN, HIGH>(
            qs, qh, y, neg_off, d, &mut acc
        ));
    }
    let mut m = [0f32; 8];
    _mm256_storeu_ps(m.as_mut_ptr(), summs);
    for r in 0..8 {
        let h = hsum_float_8(acc[r]);
        *p.out.add(r) = if MIN { h + m[r] } else { h };
    }
}

/// One token against one lane-order group of eight Q8_0 rows (the eight `d`, then each row's 32
/// quants), each row summed exactly as ggml's one-row AVX2 `ggml_vec_dot_q8_0_q8_0`: per block
/// `acc = fma(d_w * d_y, sums of four products, acc)`, then `hsum_float_8(acc)`; the eight
/// `d_w * d_y` are one vector multiply.
///
/// # Safety
/// As [`group`], one token.
#[inline(always)]
unsafe fn group_q8_0<L: Level>(p: Panel) {
    let gb = crate::packed::Q8_GB;
    let mut acc = [_mm256_setzero_ps(); 8];
    for l in 0..p.nb {
        let b = p.w.add(l * gb);
        fetch_ahead(b, gb);
        let y = _mm256_loadu_si256(p.a.add(l * 34 + 2).cast());
        let mut d = Scales([0f32; 8]);
        let dd = _mm256_mul_ps(
            _mm256_cvtph_ps(_mm_loadu_si128(b.cast())),
            _mm256_set1_ps(*p.d.add(l)),
        );
        _mm256_store_ps(d.0.as_mut_ptr(), dd);
        // one broadcast load per row (see `group_lanes`)
        let d = &std::hint::black_box(&d).0;
        // VNNI: `q * y` = `(q + 128) * y - 128 * y`, the unsigned `q + 128` (`q ^ 0x80`) into
        // one `vpdpbusd` that starts from `-128 * sum(y)` (the same exact i32 sums as the signs)
        let neg = if L::VNNI {
            let s = mul_sum_us8_pairs::<L>(_mm256_set1_epi8(-128), y);
            _mm256_sub_epi32(_mm256_setzero_si256(), s)
        } else {
            _mm256_setzero_si256()
        };
        for r in 0..8 {
            let q = _mm256_loadu_si256(b.add(16 + 32 * r).cast());
            let sum = if L::VNNI {
                let u = _mm256_xor_si256(q, _mm256_set1_epi8(-128));
                mul_sum_us8_pairs_acc::<L>(neg, u, y)
            } else {
                mul_sum_us8_pairs::<L>(_mm256_sign_epi8(q, q), _mm256_sign_epi8(y, q))
            };
            acc[r] = _mm256_fmadd_ps(_mm256_broadcast_ss(&d[r]), _mm256_cvtepi32_ps(sum), acc[r]);
        }
    }
    for r in 0..8 {
        *p.out.add(r) = hsum_float_8(acc[r]);
    }
}

/// Unpacks `nb` lane-order group-blocks at `w` into eight rows at `out` of 32-element blocks the
/// tile kernels multiply as ggml multiplies the original ones (the same quants, scales and
/// order), so a batch gets the bits of the unpacked matrix: for Q5_0 (`!MIN`) Q8_0 blocks (`d`,
/// the quants as signed bytes -16..15; 34 bytes), else `d`, `m` and the 32 unsigned quants (36
/// bytes, [`crate::x86::tile`]'s expanded Q4_1/Q5_1 block). Row `r` at `out + r * nb * size`.
///
/// # Safety
/// `w` holds `nb` group-blocks, `out` `8 * nb * size` writable bytes; the CPU runs level `L`.
#[inline(always)]
unsafe fn unpack_lanes<L: Level, const MIN: bool, const HIGH: bool>(
    nb: usize,
    w: *const u8,
    out: *mut u8,
) {
    let (qh_at, qs_at, gb) = crate::packed::lane_layout(MIN, HIGH);
    let (size, head) = if MIN { (36, 4) } else { (34, 2) };
    let sixteen = _mm256_set1_epi8(16);
    let rb = size * nb;
    for l in 0..nb {
        let b = w.add(l * gb);
        let qh = if HIGH {
            _mm256_loadu_si256(b.add(qh_at).cast())
        } else {
            _mm256_setzero_si256()
        };
        let put = |r: usize, q: __m256i| {
            let o = out.add(r * rb + l * size);
            std::ptr::copy_nonoverlapping(b.add(2 * r), o, 2);
            if MIN {
                std::ptr::copy_nonoverlapping(b.add(16 + 2 * r), o.add(2), 2);
            }
            let q = if MIN { q } else { _mm256_sub_epi8(q, sixteen) };
            _mm256_storeu_si256(o.add(head).cast(), q);
        };
        each_row!(b, qs_at, |R, qs| put(R, lane_row::<L, R, HIGH>(qs, qh)));
    }
}

/// The unpacking entry points (a module of their own: [`entry_points`] names its functions).
mod unpacking {
    use super::{entry_points, unpack_lanes, Level};

    /// An unpacking body, compiled per level by [`unpack_for`].
    trait Unpack {
        /// # Safety
        /// As [`unpack_lanes`], on a CPU that runs level `L`.
        unsafe fn run<L: Level>(nb: usize, w: *const u8, out: *mut u8);
    }

    entry_points!(
        Unpack::run,
        unpack_for,
        unsafe fn(usize, *const u8, *mut u8),
        fn(nb: usize, w: *const u8, out: *mut u8)
    );

    struct U<const MIN: bool, const HIGH: bool>;
    impl<const MIN: bool, const HIGH: bool> Unpack for U<MIN, HIGH> {
        #[inline(always)]
        unsafe fn run<L: Level>(nb: usize, w: *const u8, out: *mut u8) {
            unpack_lanes::<L, MIN, HIGH>(nb, w, out)
        }
    }

    /// [`unpack_lanes`]'s entry point for `isa` and the layout's flags.
    pub(super) fn pick(
        isa: crate::Isa,
        min: bool,
        high: bool,
    ) -> unsafe fn(usize, *const u8, *mut u8) {
        match (min, high) {
            (false, _) => unpack_for::<U<false, true>>(isa),
            (true, false) => unpack_for::<U<true, false>>(isa),
            (true, true) => unpack_for::<U<true, true>>(isa),
        }
    }
}

/// [`unpack_lanes`] for packed `ty` weights (Q4_1, Q5_0 or Q5_1) compiled for `isa` (one of the
/// x86 sets), or for Q8_0 a copy back to ggml's blocks.
///
/// # Safety
/// As [`unpack_lanes`]; the CPU runs `isa`.
pub unsafe fn unpack(isa: Isa, ty: GgmlType, nb: usize, w: *const u8, out: *mut u8) {
    if ty == GgmlType::Q8_0 {
        // a copy back to ggml's blocks
        let gb = crate::packed::Q8_GB;
        for l in 0..nb {
            for r in 0..8 {
                let o = out.add((r * nb + l) * 34);
                std::ptr::copy_nonoverlapping(w.add(l * gb + 2 * r), o, 2);
                std::ptr::copy_nonoverlapping(w.add(l * gb + 16 + 32 * r), o.add(2), 32);
            }
        }
        return;
    }
    let (min, high) = crate::packed::lane_flags(ty).expect("a lane-order packed type");
    unpacking::pick(isa, min, high)(nb, w, out)
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

/// [`group_q8_0`] (one token) as a [`Group`].
struct GQ8;
impl Group for GQ8 {
    #[inline(always)]
    unsafe fn run<L: Level>(p: Panel) {
        group_q8_0::<L>(p)
    }
}

/// [`group_lanes`] (one token) as a [`Group`].
struct GLanes<const MIN: bool, const HIGH: bool>;
impl<const MIN: bool, const HIGH: bool> Group for GLanes<MIN, HIGH> {
    #[inline(always)]
    unsafe fn run<L: Level>(p: Panel) {
        group_lanes::<L, MIN, HIGH>(p)
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
/// tokens (1 to 4), or [`group_lanes`] for Q4_1, Q5_0 and Q5_1 (one token), compiled for `isa`
/// (one of the x86 sets).
///
/// # Safety
/// As [`group`]; the CPU runs `isa`.
pub unsafe fn gemm(isa: Isa, ty: GgmlType, n: usize, once: bool, p: Panel) {
    let f = match (ty, n, once) {
        (GgmlType::Q4_0, 1, _) => group_for::<G4_0<1>>(isa),
        (GgmlType::Q4_0, 2, _) => group_for::<G4_0<2>>(isa),
        (GgmlType::Q4_0, 3, _) => group_for::<G4_0<3>>(isa),
        (GgmlType::Q4_0, 4, _) => group_for::<G4_0<4>>(isa),
        (GgmlType::Q8_0, 1, _) => group_for::<GQ8>(isa),
        (GgmlType::Q5_0, 1, _) => group_for::<GLanes<false, true>>(isa),
        (GgmlType::Q4_1, 1, _) => group_for::<GLanes<true, false>>(isa),
        (GgmlType::Q5_1, 1, _) => group_for::<GLanes<true, true>>(isa),
        (GgmlType::Q4_K, 4, false) => group_for::<G4K<4, false>>(isa),
        (GgmlType::Q4_K, 1, _) => group_for::<G4K<1, true>>(isa),
        (GgmlType::Q4_K, 2, _) => group_for::<G4K<2, true>>(isa),
        (GgmlType::Q4_K, 3, _) => group_for::<G4K<3, true>>(isa),
        (GgmlType::Q4_K, 4, true) => group_for::<G4K<4, true>>(isa),
        _ => unreachable!("packed: Q4_0, Q4_K (1 to 4 tokens); Q4_1, Q5_0, Q5_1, Q8_0 (one)"),
    };
    f(p)
}
