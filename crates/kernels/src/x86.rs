//! x86_64 dot products, after ggml's `arch/x86/quants.c` AVX2 paths, compiled for three levels:
//! AVX2 (+FMA, F16C), AVX-512 (F, BW, VL) and AVX-512 with VNNI.
//!
//! Each kernel is written once, as an `#[inline(always)]` body generic over a [`Level`], and
//! gets one `#[target_feature]` entry point per level ([`kernel`]). The AVX-512 levels compile
//! the same bodies with EVEX encodings and 32 vector registers (the tile kernels of [`tile`]
//! keep more accumulators in registers there), and on VNNI the byte products of the 32-element
//! formats take one `vpdpbusd` where AVX2 needs `vpmaddubsw` + `vpmaddwd`, as ggml does when
//! built with `__AVX512VNNI__` (`mul_sum_us8_pairs_float`). The integer sums are exact on every
//! level and the float operations run in the same order, so every level returns the same bits.
//!
//! Each entry point has the signature of [`crate::DotFn`]; the pointers are read unaligned.

use std::arch::x86_64::*;

use crate::{k4_scales_mins, rd_f32, rd_u32, DotFn, GgmlType, Isa};

pub mod packed;
pub mod tile;

/// A set of x86 instructions the kernel bodies are compiled for.
pub(crate) trait Level {
    /// `vpdpbusd` (AVX-512 VNNI with VL) for products of unsigned and signed bytes summed in
    /// fours.
    const VNNI: bool;
    /// AVX-512 F/BW/VL on 256-bit registers (`vpternlogd`).
    const AVX512: bool;
}

/// AVX2, FMA and F16C.
pub(crate) struct Avx2;
impl Level for Avx2 {
    const VNNI: bool = false;
    const AVX512: bool = false;
}

/// AVX2, FMA, F16C and AVX-512 F, BW, VL.
pub(crate) struct Avx512;
impl Level for Avx512 {
    const VNNI: bool = false;
    const AVX512: bool = true;
}

/// [`Avx512`] and AVX-512 VNNI.
pub(crate) struct Avx512Vnni;
impl Level for Avx512Vnni {
    const VNNI: bool = true;
    const AVX512: bool = true;
}

/// Defines, for a body trait `$tr` with method `$m`, one generic entry point per level that
/// runs `K::$m::<Level>` compiled with that level's features, and `$pick`, which returns the
/// entry point of `K` for an [`Isa`] (AVX2's for any other).
macro_rules! entry_points {
    ($tr:ident :: $m:ident, $pick:ident, $fty:ty, fn($($a:ident: $t:ty),* $(,)?) $(-> $r:ty)?) => {
        #[target_feature(enable = "avx2,fma,f16c")]
        unsafe fn on_avx2<K: $tr>($($a: $t),*) $(-> $r)? {
            K::$m::<$crate::x86::Avx2>($($a),*)
        }
        #[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl")]
        unsafe fn on_avx512<K: $tr>($($a: $t),*) $(-> $r)? {
            K::$m::<$crate::x86::Avx512>($($a),*)
        }
        #[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
        unsafe fn on_avx512vnni<K: $tr>($($a: $t),*) $(-> $r)? {
            K::$m::<$crate::x86::Avx512Vnni>($($a),*)
        }
        /// The entry point of body `K` for `isa` (AVX2's for a set other than the AVX-512 ones).
        fn $pick<K: $tr>(isa: $crate::Isa) -> $fty {
            match isa {
                $crate::Isa::Avx512 => on_avx512::<K>,
                $crate::Isa::Avx512Vnni => on_avx512vnni::<K>,
                _ => on_avx2::<K>,
            }
        }
    };
}
pub(crate) use entry_points;

/// A one-row dot product body ([`crate::DotFn`]'s arguments).
trait Dot {
    /// # Safety
    /// As [`crate::DotFn`], on a CPU that runs level `L`.
    unsafe fn dot<L: Level>(n: usize, x: *const u8, y: *const u8) -> f32;
}

entry_points!(
    Dot::dot,
    dot_for,
    DotFn,
    fn(n: usize, x: *const u8, y: *const u8) -> f32
);

/// Names the body `$f` as a [`Dot`] type `$k`.
macro_rules! dot_bodies {
    ($($k:ident => $f:ident),* $(,)?) => {
        $(
            struct $k;
            impl Dot for $k {
                #[inline(always)]
                unsafe fn dot<L: Level>(n: usize, x: *const u8, y: *const u8) -> f32 {
                    $f::<L>(n, x, y)
                }
            }
        )*
    };
}

dot_bodies!(
    DotF32 => vec_dot_f32,
    DotF16 => vec_dot_f16,
    DotBf16 => vec_dot_bf16,
    DotQ8_0 => vec_dot_q8_0_q8_0,
    DotQ4_0 => vec_dot_q4_0_q8_0,
    DotQ4_1 => vec_dot_q4_1_q8_1,
    DotQ5_0 => vec_dot_q5_0_q8_0,
    DotQ5_1 => vec_dot_q5_1_q8_1,
    DotQ4K => vec_dot_q4_k_q8_k,
    DotQ5K => vec_dot_q5_k_q8_k,
    DotQ6K => vec_dot_q6_k_q8_k,
);

/// The kernel for weights `ty` on `isa` (`Avx2`, `Avx512` or `Avx512Vnni`).
pub fn kernel(isa: Isa, ty: GgmlType) -> Option<DotFn> {
    Some(match ty {
        GgmlType::F32 => dot_for::<DotF32>(isa),
        GgmlType::F16 => dot_for::<DotF16>(isa),
        GgmlType::BF16 => dot_for::<DotBf16>(isa),
        GgmlType::Q8_0 => dot_for::<DotQ8_0>(isa),
        GgmlType::Q4_0 => dot_for::<DotQ4_0>(isa),
        GgmlType::Q4_1 => dot_for::<DotQ4_1>(isa),
        GgmlType::Q5_0 => dot_for::<DotQ5_0>(isa),
        GgmlType::Q5_1 => dot_for::<DotQ5_1>(isa),
        GgmlType::Q4_K => dot_for::<DotQ4K>(isa),
        GgmlType::Q5_K => dot_for::<DotQ5K>(isa),
        GgmlType::Q6_K => dot_for::<DotQ6K>(isa),
        _ => return None,
    })
}

/// An f16 at `p` (unaligned) to f32 with F16C, inline (the `half` crate's conversion is an
/// out-of-line call with a run-time feature check).
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn rd_f16(p: *const u8) -> f32 {
    let bits = u16::from_le_bytes(p.cast::<[u8; 2]>().read_unaligned());
    // `vmovd` in asm, not `_mm_cvtsi32_si128`: LLVM folds that (and `_mm_set1_epi16`) into a
    // `vpinsrw` that merges into whatever vector register it likes, often the caller's
    // accumulator, a false dependency that chained every block of a dot product to the last
    let v: __m128i;
    // SAFETY: `vmovd` only writes `v` (zeroing its upper lanes); no memory, stack or flags.
    std::arch::asm!(
        "vmovd {v}, {b:e}",
        v = lateout(xmm_reg) v,
        b = in(reg) bits as u32,
        options(pure, nomem, nostack, preserves_flags)
    );
    _mm_cvtss_f32(_mm_cvtph_ps(v))
}

const Q4_0: usize = 18;
const Q4_1: usize = 20;
const Q5_0: usize = 22;
const Q5_1: usize = 24;
const Q8_0: usize = 34;
const Q8_1: usize = 36;
const Q4K: usize = 144;
const Q5K: usize = 176;
const Q6K: usize = 210;
const Q8K: usize = 292;

/// How far ahead of what they read the kernels that stream a one-token product's weights from
/// memory (the packed ones, Q6_K's) fetch them into cache. The hardware prefetchers alone left
/// one core reading the weights at ~30 GB/s on a host where it streams 38 (criterion `stream`);
/// fetching 8 KiB ahead brought every one-thread product to 36-40 GB/s (`slmpack run --profile`,
/// low tier: decode 266 -> 326 t/s; 4 KiB: less, 12-16 KiB: no more; docs/performance.md).
/// Past the end of a matrix the fetches run into the next one, which the forward pass reads next
/// (the packed matrices are laid out in that order).
const FETCH_AHEAD: usize = 8192;

/// Fetches into L1 the cache lines of the `len` bytes [`FETCH_AHEAD`] bytes after `p`, one
/// `prefetcht0` per 64 bytes: called for each of a run of consecutive `len`-byte blocks, it
/// fetches every line of the run (no two fetches more than 64 bytes apart).
#[inline(always)]
pub(crate) fn fetch_ahead(p: *const u8, len: usize) {
    for k in 0..len.div_ceil(64) {
        // SAFETY: a prefetch never faults, whatever the address; `wrapping_add` keeps the
        // pointer arithmetic defined past the block's allocation
        unsafe { _mm_prefetch::<_MM_HINT_T0>(p.wrapping_add(FETCH_AHEAD + 64 * k).cast()) };
    }
}

#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn hsum_float_8(x: __m256) -> f32 {
    let mut r = _mm_add_ps(_mm256_castps256_ps128(x), _mm256_extractf128_ps::<1>(x));
    r = _mm_add_ps(r, _mm_movehl_ps(r, r));
    r = _mm_add_ss(r, _mm_movehdup_ps(r));
    _mm_cvtss_f32(r)
}

/// `vpdpbusd` from zero: unsigned `ax` times signed `sy`, summed in groups of four (exact).
#[inline]
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
unsafe fn dpbusd(ax: __m256i, sy: __m256i) -> __m256i {
    _mm256_dpbusd_epi32(_mm256_setzero_si256(), ax, sy)
}

/// Unsigned `ax` times signed `sy`, summed in groups of four into i32 lanes: `vpdpbusd` on
/// VNNI, else `vpmaddubsw` + `vpmaddwd`, the same sums while no pair of products leaves i16
/// (true for every pair of ggml's quants with Q8 activations in -127..=127).
#[inline(always)]
pub(crate) unsafe fn mul_sum_us8_pairs<L: Level>(ax: __m256i, sy: __m256i) -> __m256i {
    if L::VNNI {
        dpbusd(ax, sy)
    } else {
        _mm256_madd_epi16(_mm256_maddubs_epi16(ax, sy), _mm256_set1_epi16(1))
    }
}

/// `acc` plus [`mul_sum_us8_pairs`]: on VNNI one `vpdpbusd` into `acc` (exact, as the sums
/// are: no lane leaves i32), else the pairs' sums added to it.
#[inline(always)]
pub(crate) unsafe fn mul_sum_us8_pairs_acc<L: Level>(
    acc: __m256i,
    ax: __m256i,
    sy: __m256i,
) -> __m256i {
    if L::VNNI {
        dpbusd_acc(acc, ax, sy)
    } else {
        _mm256_add_epi32(acc, mul_sum_us8_pairs::<L>(ax, sy))
    }
}

/// `vpdpbusd` into `acc`.
#[inline]
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
unsafe fn dpbusd_acc(acc: __m256i, ax: __m256i, sy: __m256i) -> __m256i {
    _mm256_dpbusd_epi32(acc, ax, sy)
}

/// `a | (b & c)`: one `vpternlogd` on AVX-512, else an and and an or.
#[inline(always)]
pub(crate) unsafe fn or_and<L: Level>(a: __m256i, b: __m256i, c: __m256i) -> __m256i {
    if L::AVX512 {
        ternlog_or_and(a, b, c)
    } else {
        _mm256_or_si256(a, _mm256_and_si256(b, c))
    }
}

/// `a | (b & c)` in one `vpternlogd` (truth table 0xF8: set where `a`, or `b` and `c`).
#[inline]
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl")]
unsafe fn ternlog_or_and(a: __m256i, b: __m256i, c: __m256i) -> __m256i {
    _mm256_ternarylogic_epi32::<0xF8>(a, b, c)
}

/// [`mul_sum_us8_pairs`] as floats.
#[inline(always)]
unsafe fn mul_sum_us8_pairs_float<L: Level>(ax: __m256i, sy: __m256i) -> __m256 {
    _mm256_cvtepi32_ps(mul_sum_us8_pairs::<L>(ax, sy))
}

/// Signed `x` times signed `y`, summed in groups of four, as floats.
#[inline(always)]
unsafe fn mul_sum_i8_pairs_float<L: Level>(x: __m256i, y: __m256i) -> __m256 {
    let ax = _mm256_sign_epi8(x, x);
    let sy = _mm256_sign_epi8(y, x);
    mul_sum_us8_pairs_float::<L>(ax, sy)
}

/// 16 bytes of nibbles to 32 bytes: low nibbles first, then high nibbles.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn bytes_from_nibbles_32(p: *const u8) -> __m256i {
    let tmp = _mm_loadu_si128(p.cast());
    let bytes = _mm256_insertf128_si256::<1>(_mm256_castsi128_si256(tmp), _mm_srli_epi16::<4>(tmp));
    _mm256_and_si256(bytes, _mm256_set1_epi8(0xF))
}

/// 32 bits to 32 bytes, 0xFF where the bit is set.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn bytes_from_bits_32(x32: u32) -> __m256i {
    let shuf_mask = _mm256_set_epi64x(
        0x0303030303030303,
        0x0202020202020202,
        0x0101010101010101,
        0x0000000000000000,
    );
    let bytes = _mm256_shuffle_epi8(_mm256_set1_epi32(x32 as i32), shuf_mask);
    let bit_mask = _mm256_set1_epi64x(0x7fbfdfeff7fbfdfe);
    let bytes = _mm256_or_si256(bytes, bit_mask);
    _mm256_cmpeq_epi8(bytes, _mm256_set1_epi64x(-1))
}

#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn load(p: *const u8) -> __m256i {
    _mm256_loadu_si256(p.cast())
}

/// `ggml_vec_dot_f32` with AVX2/FMA, in its order: four 8-lane accumulators over steps of 32,
/// reduced as `GGML_F32x8_REDUCE` (`(a0 + a2) + (a1 + a3)`, halves, two `hadd`s), then the
/// elements past the last step in f32, each as an FMA (`sumf += x[i]*y[i]`, which GCC contracts).
///
/// # Safety
/// See [`crate::DotFn`]; needs AVX2 and FMA.
#[inline(always)]
unsafe fn vec_dot_f32<L: Level>(n: usize, x: *const u8, y: *const u8) -> f32 {
    let (x, y) = (x.cast::<f32>(), y.cast::<f32>());
    let mut acc = [_mm256_setzero_ps(); 4];
    let np = n & !31;
    let mut i = 0;
    while i < np {
        for (k, a) in acc.iter_mut().enumerate() {
            let vx = _mm256_loadu_ps(x.add(i + 8 * k));
            let vy = _mm256_loadu_ps(y.add(i + 8 * k));
            *a = _mm256_fmadd_ps(vx, vy, *a);
        }
        i += 32;
    }
    let sumf = reduce4_hadd(acc);
    crate::f32_tail_as_gcc(x, y, i, n, sumf)
}

/// ggml's `GGML_F32x8_REDUCE` of four accumulators: `(a0 + a2) + (a1 + a3)`, the two halves
/// added, then two `hadd`s.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
pub(crate) unsafe fn reduce4_hadd(a: [__m256; 4]) -> f32 {
    let x0 = _mm256_add_ps(_mm256_add_ps(a[0], a[2]), _mm256_add_ps(a[1], a[3]));
    let t0 = _mm_add_ps(_mm256_castps256_ps128(x0), _mm256_extractf128_ps::<1>(x0));
    let t1 = _mm_hadd_ps(t0, t0);
    _mm_cvtss_f32(_mm_hadd_ps(t1, t1))
}

/// `ggml_vec_dot_f16` with F16C conversion and FMA.
///
/// # Safety
/// See [`crate::DotFn`]; needs AVX2, FMA and F16C.
#[inline(always)]
unsafe fn vec_dot_f16<L: Level>(n: usize, x: *const u8, y: *const u8) -> f32 {
    let mut acc = [_mm256_setzero_ps(); 4];
    let np = n & !31;
    let mut i = 0;
    while i < np {
        for (k, a) in acc.iter_mut().enumerate() {
            let vx = _mm256_cvtph_ps(_mm_loadu_si128(x.add(2 * (i + 8 * k)).cast()));
            let vy = _mm256_cvtph_ps(_mm_loadu_si128(y.add(2 * (i + 8 * k)).cast()));
            *a = _mm256_fmadd_ps(vx, vy, *a);
        }
        i += 32;
    }
    let s = _mm256_add_ps(_mm256_add_ps(acc[0], acc[1]), _mm256_add_ps(acc[2], acc[3]));
    let mut sumf = hsum_float_8(s);
    while i < n {
        sumf += rd_f16(x.add(2 * i)) * rd_f16(y.add(2 * i));
        i += 1;
    }
    sumf
}

#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn bf16x8(p: *const u8) -> __m256 {
    _mm256_castsi256_ps(_mm256_slli_epi32::<16>(_mm256_cvtepu16_epi32(
        _mm_loadu_si128(p.cast()),
    )))
}

/// `ggml_vec_dot_bf16` with AVX2/FMA (bf16 widened by a shift), in its order: four accumulators
/// over steps of 32 (`mul` then `add`, which GCC contracts to an FMA), reduced as
/// `(c0 + c2) + (c1 + c3)` and [`hsum_float_8`], then the elements past the last step added in
/// f64 (`ggml_float`).
///
/// # Safety
/// See [`crate::DotFn`]; needs AVX2 and FMA.
#[inline(always)]
unsafe fn vec_dot_bf16<L: Level>(n: usize, x: *const u8, y: *const u8) -> f32 {
    let mut acc = [_mm256_setzero_ps(); 4];
    let np = n & !31;
    let mut i = 0;
    while i < np {
        for (k, a) in acc.iter_mut().enumerate() {
            let vx = bf16x8(x.add(2 * (i + 8 * k)));
            let vy = bf16x8(y.add(2 * (i + 8 * k)));
            *a = _mm256_fmadd_ps(vx, vy, *a);
        }
        i += 32;
    }
    let s = _mm256_add_ps(_mm256_add_ps(acc[0], acc[2]), _mm256_add_ps(acc[1], acc[3]));
    let mut sumf = hsum_float_8(s) as f64;
    while i < n {
        let bx =
            f32::from_bits((u16::from_le_bytes([*x.add(2 * i), *x.add(2 * i + 1)]) as u32) << 16);
        let by =
            f32::from_bits((u16::from_le_bytes([*y.add(2 * i), *y.add(2 * i + 1)]) as u32) << 16);
        sumf += (bx * by) as f64;
        i += 1;
    }
    sumf as f32
}

/// `ggml_vec_dot_q8_0_q8_0`, AVX2.
///
/// # Safety
/// See [`crate::DotFn`]; needs AVX2 and FMA.
#[inline(always)]
unsafe fn vec_dot_q8_0_q8_0<L: Level>(n: usize, x: *const u8, y: *const u8) -> f32 {
    let nb = n / 32;
    let mut acc = _mm256_setzero_ps();
    for ib in 0..nb {
        let (bx, by) = (x.add(ib * Q8_0), y.add(ib * Q8_0));
        let d = _mm256_set1_ps(rd_f16(bx) * rd_f16(by));
        let qx = load(bx.add(2));
        let qy = load(by.add(2));
        let q = mul_sum_i8_pairs_float::<L>(qx, qy);
        acc = _mm256_fmadd_ps(d, q, acc);
    }
    hsum_float_8(acc)
}

/// `ggml_vec_dot_q4_0_q8_0`, AVX2.
///
/// # Safety
/// See [`crate::DotFn`]; needs AVX2 and FMA.
#[inline(always)]
unsafe fn vec_dot_q4_0_q8_0<L: Level>(n: usize, x: *const u8, y: *const u8) -> f32 {
    let nb = n / 32;
    let mut acc = _mm256_setzero_ps();
    let off = _mm256_set1_epi8(8);
    for ib in 0..nb {
        let (bx, by) = (x.add(ib * Q4_0), y.add(ib * Q8_0));
        let d = _mm256_set1_ps(rd_f16(bx) * rd_f16(by));
        let qx = _mm256_sub_epi8(bytes_from_nibbles_32(bx.add(2)), off);
        let qy = load(by.add(2));
        let q = mul_sum_i8_pairs_float::<L>(qx, qy);
        acc = _mm256_fmadd_ps(d, q, acc);
    }
    hsum_float_8(acc)
}

/// `ggml_vec_dot_q4_1_q8_1`, AVX2.
///
/// # Safety
/// See [`crate::DotFn`]; needs AVX2 and FMA.
#[inline(always)]
unsafe fn vec_dot_q4_1_q8_1<L: Level>(n: usize, x: *const u8, y: *const u8) -> f32 {
    let nb = n / 32;
    let mut acc = _mm256_setzero_ps();
    let mut summs = 0f32;
    for ib in 0..nb {
        let (bx, by) = (x.add(ib * Q4_1), y.add(ib * Q8_1));
        summs += rd_f16(bx.add(2)) * rd_f16(by.add(2));
        let d = _mm256_set1_ps(rd_f16(bx) * rd_f16(by));
        let qx = bytes_from_nibbles_32(bx.add(4));
        let qy = load(by.add(4));
        let xy = mul_sum_us8_pairs_float::<L>(qx, qy);
        acc = _mm256_fmadd_ps(d, xy, acc);
    }
    hsum_float_8(acc) + summs
}

/// `ggml_vec_dot_q5_0_q8_0`, AVX2.
///
/// # Safety
/// See [`crate::DotFn`]; needs AVX2 and FMA.
#[inline(always)]
unsafe fn vec_dot_q5_0_q8_0<L: Level>(n: usize, x: *const u8, y: *const u8) -> f32 {
    let nb = n / 32;
    let mut acc = _mm256_setzero_ps();
    for ib in 0..nb {
        let (bx, by) = (x.add(ib * Q5_0), y.add(ib * Q8_0));
        let d = _mm256_set1_ps(rd_f16(bx) * rd_f16(by));
        let mut qx = bytes_from_nibbles_32(bx.add(6));
        let bxhi = bytes_from_bits_32(rd_u32(bx.add(2)));
        // where the high bit is clear, `q | 0xF0` is `q - 16` as i8
        let bxhi = _mm256_andnot_si256(bxhi, _mm256_set1_epi8(0xF0u8 as i8));
        qx = _mm256_or_si256(qx, bxhi);
        let qy = load(by.add(2));
        let q = mul_sum_i8_pairs_float::<L>(qx, qy);
        acc = _mm256_fmadd_ps(d, q, acc);
    }
    hsum_float_8(acc)
}

/// `ggml_vec_dot_q5_1_q8_1`, AVX2.
///
/// # Safety
/// See [`crate::DotFn`]; needs AVX2 and FMA.
#[inline(always)]
unsafe fn vec_dot_q5_1_q8_1<L: Level>(n: usize, x: *const u8, y: *const u8) -> f32 {
    let nb = n / 32;
    let mut acc = _mm256_setzero_ps();
    let mut summs = 0f32;
    for ib in 0..nb {
        let (bx, by) = (x.add(ib * Q5_1), y.add(ib * Q8_1));
        summs += rd_f16(bx.add(2)) * rd_f16(by.add(2));
        let d = _mm256_set1_ps(rd_f16(bx) * rd_f16(by));
        let mut qx = bytes_from_nibbles_32(bx.add(8));
        let bxhi = bytes_from_bits_32(rd_u32(bx.add(4)));
        let bxhi = _mm256_and_si256(bxhi, _mm256_set1_epi8(0x10));
        qx = _mm256_or_si256(qx, bxhi);
        let qy = load(by.add(4));
        let q = mul_sum_us8_pairs_float::<L>(qx, qy);
        acc = _mm256_fmadd_ps(d, q, acc);
    }
    hsum_float_8(acc) + summs
}

/// The mins term of Q4_K/Q5_K as ggml's AVX2 code forms it: four i32 lanes, lane `k` holding
/// `mins[2k] * s[2k] + mins[2k+1] * s[2k+1]` where `s[j]` is the sum of sub-block `j`'s quants
/// (`bsums[2j] + bsums[2j+1]`).
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
pub(crate) unsafe fn k4_mins_prod(bsums: *const u8, mins: &[u8; 8]) -> __m128i {
    let q8sums = load(bsums);
    let q8s = _mm_hadd_epi16(
        _mm256_castsi256_si128(q8sums),
        _mm256_extracti128_si256::<1>(q8sums),
    );
    let m = _mm_cvtepu8_epi16(_mm_loadl_epi64(mins.as_ptr().cast()));
    _mm_madd_epi16(m, q8s)
}

/// [`k4_mins_prod`] summed: `sum_j bsums[j] * mins[j / 2]`.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
pub(crate) unsafe fn k4_mins_dot(bsums: *const u8, mins: &[u8; 8]) -> i32 {
    let prod = k4_mins_prod(bsums, mins);
    let s = _mm_add_epi32(prod, _mm_unpackhi_epi64(prod, prod));
    let s = _mm_add_epi32(s, _mm_shuffle_epi32::<0b10_11_00_01>(s));
    _mm_cvtsi128_si32(s)
}

/// The sum of four f32 lanes as ggml's Q4_K code takes it: `(a0 + a2) + (a1 + a3)`.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
pub(crate) unsafe fn hsum_float_4(a: __m128) -> f32 {
    let a = _mm_add_ps(a, _mm_movehl_ps(a, a));
    _mm_cvtss_f32(_mm_add_ss(a, _mm_movehdup_ps(a)))
}

/// The `-32` offset of Q6_K's quants as ggml's AVX2 code subtracts it, per i32 lane `k` of the
/// block's sum: `32 * (bsums[2k] * scales[2k] + bsums[2k+1] * scales[2k+1])`.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
pub(crate) unsafe fn q6_k_offset(bsums: *const u8, scales: *const u8) -> __m256i {
    let sc = _mm256_cvtepi8_epi16(_mm_loadu_si128(scales.cast()));
    _mm256_slli_epi32::<5>(_mm256_madd_epi16(load(bsums), sc))
}

/// `ggml_vec_dot_q4_K_q8_K`, AVX2.
///
/// # Safety
/// See [`crate::DotFn`]; needs AVX2 and FMA.
#[inline(always)]
unsafe fn vec_dot_q4_k_q8_k<L: Level>(n: usize, x: *const u8, y: *const u8) -> f32 {
    let nb = n / 256;
    let m4 = _mm256_set1_epi8(0xF);
    let mut acc = _mm256_setzero_ps();
    let mut acc_m = _mm_setzero_ps();
    for i in 0..nb {
        let (bx, by) = (x.add(i * Q4K), y.add(i * Q8K));
        let yd = rd_f32(by);
        let d = yd * rd_f16(bx);
        let dmin = -yd * rd_f16(bx.add(2));
        let (scales, mins) = k4_scales_mins(&*bx.add(4).cast::<[u8; 12]>());
        let prod = _mm_cvtepi32_ps(k4_mins_prod(by.add(260), &mins));
        acc_m = _mm_fmadd_ps(_mm_set1_ps(dmin), prod, acc_m);
        let mut q4 = bx.add(16);
        let mut q8 = by.add(4);
        let mut sumi = _mm256_setzero_si256();
        for j in 0..4 {
            let scale_l = _mm256_set1_epi16(scales[2 * j] as i16);
            let scale_h = _mm256_set1_epi16(scales[2 * j + 1] as i16);
            let q4bits = load(q4);
            q4 = q4.add(32);
            let q4l = _mm256_and_si256(q4bits, m4);
            let q4h = _mm256_and_si256(_mm256_srli_epi16::<4>(q4bits), m4);
            let q8l = load(q8);
            q8 = q8.add(32);
            let p16l = _mm256_madd_epi16(scale_l, _mm256_maddubs_epi16(q4l, q8l));
            let q8h = load(q8);
            q8 = q8.add(32);
            let p16h = _mm256_madd_epi16(scale_h, _mm256_maddubs_epi16(q4h, q8h));
            sumi = _mm256_add_epi32(sumi, _mm256_add_epi32(p16l, p16h));
        }
        acc = _mm256_fmadd_ps(_mm256_set1_ps(d), _mm256_cvtepi32_ps(sumi), acc);
    }
    hsum_float_8(acc) + hsum_float_4(acc_m)
}

/// `ggml_vec_dot_q5_K_q8_K`, AVX2.
///
/// # Safety
/// See [`crate::DotFn`]; needs AVX2 and FMA.
#[inline(always)]
unsafe fn vec_dot_q5_k_q8_k<L: Level>(n: usize, x: *const u8, y: *const u8) -> f32 {
    let nb = n / 256;
    let m4 = _mm256_set1_epi8(0xF);
    let m16 = _mm256_set1_epi8(16);
    let mut acc = _mm256_setzero_ps();
    let mut acc_m = 0f32;
    for i in 0..nb {
        let (bx, by) = (x.add(i * Q5K), y.add(i * Q8K));
        let yd = rd_f32(by);
        let d = yd * rd_f16(bx);
        let dmin = -yd * rd_f16(bx.add(2));
        let (scales, mins) = k4_scales_mins(&*bx.add(4).cast::<[u8; 12]>());
        acc_m = dmin.mul_add(k4_mins_dot(by.add(260), &mins) as f32, acc_m);
        let hbits = load(bx.add(16));
        let mut hmask = _mm256_set1_epi8(1);
        let mut q5 = bx.add(48);
        let mut q8 = by.add(4);
        let mut sumi = _mm256_setzero_si256();
        for j in 0..4 {
            let scale_0 = _mm256_set1_epi16(scales[2 * j] as i16);
            let scale_1 = _mm256_set1_epi16(scales[2 * j + 1] as i16);
            let q5bits = load(q5);
            q5 = q5.add(32);
            let q5l_0 = _mm256_and_si256(q5bits, m4);
            let h0 = _mm256_cmpeq_epi8(_mm256_and_si256(hbits, hmask), hmask);
            let q5_0 = _mm256_or_si256(q5l_0, _mm256_and_si256(h0, m16));
            hmask = _mm256_add_epi8(hmask, hmask);
            let q5l_1 = _mm256_and_si256(_mm256_srli_epi16::<4>(q5bits), m4);
            let h1 = _mm256_cmpeq_epi8(_mm256_and_si256(hbits, hmask), hmask);
            let q5_1 = _mm256_or_si256(q5l_1, _mm256_and_si256(h1, m16));
            hmask = _mm256_add_epi8(hmask, hmask);
            let q8_0 = load(q8);
            q8 = q8.add(32);
            let q8_1 = load(q8);
            q8 = q8.add(32);
            let p16_0 = _mm256_madd_epi16(scale_0, _mm256_maddubs_epi16(q5_0, q8_0));
            let p16_1 = _mm256_madd_epi16(scale_1, _mm256_maddubs_epi16(q5_1, q8_1));
            sumi = _mm256_add_epi32(sumi, _mm256_add_epi32(p16_0, p16_1));
        }
        acc = _mm256_fmadd_ps(_mm256_set1_ps(d), _mm256_cvtepi32_ps(sumi), acc);
    }
    hsum_float_8(acc) + acc_m
}

/// Two Q6_K scales (i8) widened to 8 i16 lanes each, as one 256-bit vector.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn scale_pair(s: *const u8, k: usize) -> __m256i {
    let lo = *s.add(k) as i8 as i16;
    let hi = *s.add(k + 1) as i8 as i16;
    _mm256_setr_m128i(_mm_set1_epi16(lo), _mm_set1_epi16(hi))
}

/// `ggml_vec_dot_q6_K_q8_K`, AVX2.
///
/// # Safety
/// See [`crate::DotFn`]; needs AVX2 and FMA.
#[inline(always)]
unsafe fn vec_dot_q6_k_q8_k<L: Level>(n: usize, x: *const u8, y: *const u8) -> f32 {
    if L::AVX512 {
        return vec_dot_q6_k_q8_k_512::<L>(n, x, y);
    }
    let nb = n / 256;
    let m4 = _mm256_set1_epi8(0xF);
    let m2 = _mm256_set1_epi8(3);
    let mut acc = _mm256_setzero_ps();
    for i in 0..nb {
        let (bx, by) = (x.add(i * Q6K), y.add(i * Q8K));
        fetch_ahead(bx, Q6K);
        let d = rd_f32(by) * rd_f16(bx.add(208));
        let mut q4 = bx;
        let mut qh = bx.add(128);
        let sc = bx.add(192);
        let mut q8 = by.add(4);
        let mut sumi = _mm256_setzero_si256();
        for j in 0..2 {
            let is = 8 * j;
            let scale_0 = scale_pair(sc, is);
            let scale_1 = scale_pair(sc, is + 2);
            let scale_2 = scale_pair(sc, is + 4);
            let scale_3 = scale_pair(sc, is + 6);
            let q4bits1 = load(q4);
            let q4bits2 = load(q4.add(32));
            q4 = q4.add(64);
            let q4bits_h = load(qh);
            qh = qh.add(32);
            let q4h_0 = _mm256_slli_epi16::<4>(_mm256_and_si256(q4bits_h, m2));
            let q4h_1 =
                _mm256_slli_epi16::<4>(_mm256_and_si256(_mm256_srli_epi16::<2>(q4bits_h), m2));
            let q4h_2 =
                _mm256_slli_epi16::<4>(_mm256_and_si256(_mm256_srli_epi16::<4>(q4bits_h), m2));
            let q4h_3 =
                _mm256_slli_epi16::<4>(_mm256_and_si256(_mm256_srli_epi16::<6>(q4bits_h), m2));
            let q4_0 = _mm256_or_si256(_mm256_and_si256(q4bits1, m4), q4h_0);
            let q4_1 = _mm256_or_si256(_mm256_and_si256(q4bits2, m4), q4h_1);
            let q4_2 =
                _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16::<4>(q4bits1), m4), q4h_2);
            let q4_3 =
                _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16::<4>(q4bits2), m4), q4h_3);
            let q8_0 = load(q8);
            let q8_1 = load(q8.add(32));
            let q8_2 = load(q8.add(64));
            let q8_3 = load(q8.add(96));
            q8 = q8.add(128);
            let p16_0 = _mm256_maddubs_epi16(q4_0, q8_0);
            let p16_1 = _mm256_maddubs_epi16(q4_1, q8_1);
            let p16_2 = _mm256_maddubs_epi16(q4_2, q8_2);
            let p16_3 = _mm256_maddubs_epi16(q4_3, q8_3);
            let p16_0 = _mm256_madd_epi16(scale_0, p16_0);
            let p16_1 = _mm256_madd_epi16(scale_1, p16_1);
            let p16_2 = _mm256_madd_epi16(scale_2, p16_2);
            let p16_3 = _mm256_madd_epi16(scale_3, p16_3);
            sumi = _mm256_add_epi32(sumi, _mm256_add_epi32(p16_0, p16_1));
            sumi = _mm256_add_epi32(sumi, _mm256_add_epi32(p16_2, p16_3));
        }
        sumi = _mm256_sub_epi32(sumi, q6_k_offset(by.add(260), sc));
        acc = _mm256_fmadd_ps(_mm256_set1_ps(d), _mm256_cvtepi32_ps(sumi), acc);
    }
    hsum_float_8(acc)
}

/// [`vec_dot_q6_k_q8_k`] with AVX-512's byte and word instructions on 256-bit registers, the
/// same bits in fewer operations: each quant's two high bits move into place with one shift
/// and a `vpternlogd` (AVX2: a shift, two ands, a shift and an or), the scale pairs come from
/// the block's sixteen scales widened once (`vpermw`, instead of building each pair from two
/// scalar loads), and with VNNI `vpdpwssd` scales and adds the products in one step. The i32
/// lanes hold the same integers as AVX2's (integer sums, no lane leaves i32), so the float
/// steps, and the result, are ggml's AVX2 ones. Decode's Q6_K matrices (the K-quant mixes'
/// `ffn_down`) run this kernel unpacked, bound by its arithmetic.
///
/// # Safety
/// See [`crate::DotFn`]; needs AVX-512 F/BW/VL (and VNNI where `L::VNNI`), AVX2 and FMA.
#[inline(always)]
unsafe fn vec_dot_q6_k_q8_k_512<L: Level>(n: usize, x: *const u8, y: *const u8) -> f32 {
    let nb = n / 256;
    let m4 = _mm256_set1_epi8(0xF);
    let m30 = _mm256_set1_epi8(0x30);
    // scale pair (2k, 2k + 1) of the half `j`: word lanes 0-7 scale `8j + 2k`, 8-15 the next
    let pair = |j: usize, k: usize| {
        let (a, b) = ((8 * j + 2 * k) as i16, (8 * j + 2 * k + 1) as i16);
        _mm256_setr_epi16(a, a, a, a, a, a, a, a, b, b, b, b, b, b, b, b)
    };
    let idx = [
        [pair(0, 0), pair(0, 1), pair(0, 2), pair(0, 3)],
        [pair(1, 0), pair(1, 1), pair(1, 2), pair(1, 3)],
    ];
    let mut acc = _mm256_setzero_ps();
    for i in 0..nb {
        let (bx, by) = (x.add(i * Q6K), y.add(i * Q8K));
        fetch_ahead(bx, Q6K);
        let d = rd_f32(by) * rd_f16(bx.add(208));
        let sc16 = _mm256_cvtepi8_epi16(_mm_loadu_si128(bx.add(192).cast()));
        let mut q4 = bx;
        let mut qh = bx.add(128);
        let mut q8 = by.add(4);
        let mut sumi = _mm256_setzero_si256();
        for idx in &idx {
            let q4bits1 = load(q4);
            let q4bits2 = load(q4.add(32));
            q4 = q4.add(64);
            let h = load(qh);
            qh = qh.add(32);
            // bits 2k, 2k + 1 of `h` to bits 4, 5 (a 16-bit shift: what crosses a byte lands
            // outside 0x30)
            let q4_0 = or_and::<L>(
                _mm256_and_si256(q4bits1, m4),
                _mm256_slli_epi16::<4>(h),
                m30,
            );
            let q4_1 = or_and::<L>(
                _mm256_and_si256(q4bits2, m4),
                _mm256_slli_epi16::<2>(h),
                m30,
            );
            let q4_2 = or_and::<L>(
                _mm256_and_si256(_mm256_srli_epi16::<4>(q4bits1), m4),
                h,
                m30,
            );
            let q4_3 = or_and::<L>(
                _mm256_and_si256(_mm256_srli_epi16::<4>(q4bits2), m4),
                _mm256_srli_epi16::<2>(h),
                m30,
            );
            let p16 = [
                _mm256_maddubs_epi16(q4_0, load(q8)),
                _mm256_maddubs_epi16(q4_1, load(q8.add(32))),
                _mm256_maddubs_epi16(q4_2, load(q8.add(64))),
                _mm256_maddubs_epi16(q4_3, load(q8.add(96))),
            ];
            q8 = q8.add(128);
            for (p, ix) in p16.into_iter().zip(idx) {
                sumi = scale_add::<L>(sumi, permute_words(*ix, sc16), p);
            }
        }
        let off = _mm256_slli_epi32::<5>(_mm256_madd_epi16(load(by.add(260)), sc16));
        sumi = _mm256_sub_epi32(sumi, off);
        acc = _mm256_fmadd_ps(_mm256_set1_ps(d), _mm256_cvtepi32_ps(sumi), acc);
    }
    hsum_float_8(acc)
}

/// `a`'s 16-bit lanes picked by `idx` (`vpermw`).
#[inline]
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl")]
unsafe fn permute_words(idx: __m256i, a: __m256i) -> __m256i {
    _mm256_permutexvar_epi16(idx, a)
}

/// `acc` plus the products of the 16-bit lanes of `s` and `p` summed in pairs: one `vpdpwssd`
/// on VNNI, else `vpmaddwd` and an add (the same i32 sums).
#[inline(always)]
unsafe fn scale_add<L: Level>(acc: __m256i, s: __m256i, p: __m256i) -> __m256i {
    if L::VNNI {
        dpwssd_acc(acc, s, p)
    } else {
        _mm256_add_epi32(acc, _mm256_madd_epi16(s, p))
    }
}

/// `vpdpwssd` into `acc`.
#[inline]
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
unsafe fn dpwssd_acc(acc: __m256i, s: __m256i, p: __m256i) -> __m256i {
    _mm256_dpwssd_epi32(acc, s, p)
}

/// Q8_0 (`q81 == false`) or Q8_1 activations of one row with AVX2, bit for bit what
/// [`crate::act`] writes with [`crate::act::Rounding::X86`], which is what ggml-cpu's AVX2
/// `quantize_row_q8_0`/`quantize_row_q8_1` do: `d = amax / 127`, `q = round(x * (127 / amax))`
/// with halves to even (`_mm256_round_ps`), Q8_1's `s = d * sum(q)`. A block with a non-finite
/// value goes through the scalar code.
///
/// # Safety
/// `x.len()` a multiple of 32 and `dst.len() == row_bytes(Q8_0 or Q8_1, x.len())`; needs AVX2.
#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn quantize_row_q8(x: &[f32], dst: &mut [u8], q81: bool) {
    let (bs, off) = if q81 { (Q8_1, 4) } else { (Q8_0, 2) };
    let sign = _mm256_set1_ps(-0.0);
    let perm = _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7);
    for (xb, yb) in x.chunks_exact(32).zip(dst.chunks_exact_mut(bs)) {
        let p = xb.as_ptr();
        let v = [
            _mm256_loadu_ps(p),
            _mm256_loadu_ps(p.add(8)),
            _mm256_loadu_ps(p.add(16)),
            _mm256_loadu_ps(p.add(24)),
        ];
        let m = _mm256_max_ps(
            _mm256_max_ps(_mm256_andnot_ps(sign, v[0]), _mm256_andnot_ps(sign, v[1])),
            _mm256_max_ps(_mm256_andnot_ps(sign, v[2]), _mm256_andnot_ps(sign, v[3])),
        );
        let m = _mm_max_ps(_mm256_castps256_ps128(m), _mm256_extractf128_ps::<1>(m));
        let m = _mm_max_ps(m, _mm_movehl_ps(m, m));
        let amax = _mm_cvtss_f32(_mm_max_ss(m, _mm_movehdup_ps(m)));
        if !amax.is_finite() || xb.iter().any(|v| !v.is_finite()) {
            let r = crate::act::Rounding::X86;
            if q81 {
                crate::act::quantize_row_q8_1(xb, yb, r);
            } else {
                crate::act::quantize_row_q8_0(xb, yb, r);
            }
            continue;
        }
        let d = amax / 127.0;
        let id = _mm256_set1_ps(if amax != 0.0 { 127.0 / amax } else { 0.0 });
        let mut q = [_mm256_setzero_si256(); 4];
        for (qk, &vk) in q.iter_mut().zip(&v) {
            let s = _mm256_mul_ps(vk, id);
            let r = _mm256_round_ps::<{ _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC }>(s);
            *qk = _mm256_cvtps_epi32(r);
        }
        let q16a = _mm256_packs_epi32(q[0], q[1]);
        let q16b = _mm256_packs_epi32(q[2], q[3]);
        let q8 = _mm256_permutevar8x32_epi32(_mm256_packs_epi16(q16a, q16b), perm);
        let yp = yb.as_mut_ptr();
        _mm256_storeu_si256(yp.add(off).cast(), q8);
        yp.cast::<[u8; 2]>()
            .write_unaligned(slmpack_quant::fp32_to_fp16(d).to_bits().to_le_bytes());
        if q81 {
            let s = _mm256_add_epi32(_mm256_add_epi32(q[0], q[1]), _mm256_add_epi32(q[2], q[3]));
            let s = _mm_add_epi32(_mm256_castsi256_si128(s), _mm256_extracti128_si256::<1>(s));
            let s = _mm_add_epi32(s, _mm_unpackhi_epi64(s, s));
            let s = _mm_add_epi32(s, _mm_shuffle_epi32::<0b10_11_00_01>(s));
            let sum = _mm_cvtsi128_si32(s);
            yp.add(2).cast::<[u8; 2]>().write_unaligned(
                slmpack_quant::fp32_to_fp16(sum as f32 * d)
                    .to_bits()
                    .to_le_bytes(),
            );
        }
    }
}
