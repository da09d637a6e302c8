//! aarch64 NEON dot products, after ggml's `arch/arm/quants.c`, in two flavours: plain NEON
//! (`vmull_s8` + pairwise adds, as ggml's `ggml_vdotq_s32` fallback) and NEON with the
//! dot-product extension (`sdot`, emitted with `asm!` because its intrinsic is unstable).
//!
//! The kernel bodies are written once, generic over [`Dot`]; the `_neon` and `_dotprod`
//! entry points instantiate them with the two ways of doing a 4-way i8 dot product. Each sums in
//! the order of ggml-cpu's NEON code as GCC compiles it (32-element blocks in pairs with two
//! accumulators, K-quant block sums with the FMAs GCC contracts, F32/F16 reductions and tails):
//! `crates/kernels/tests/ggml_cpu.rs`, run under QEMU by `tests/aarch64.sh`, compares them bit
//! for bit with llama.cpp's ggml-cpu built for armv8.2-a+dotprod and for armv8-a.

use std::arch::aarch64::*;
use std::arch::asm;

use crate::{k4_scales_mins, rd_f16, rd_f32, rd_u32, DotFn, GgmlType};

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

/// `acc[i] += a[4i..4i+4] · b[4i..4i+4]` (or any lane split that keeps the total and keeps each
/// lane within one 16-byte operand).
pub trait Dot {
    /// # Safety
    /// The CPU must support the implementation's instructions.
    unsafe fn dot(acc: int32x4_t, a: int8x16_t, b: int8x16_t) -> int32x4_t;
}

/// Plain NEON: widening multiplies and pairwise adds.
pub struct Emulated;
impl Dot for Emulated {
    #[inline(always)]
    unsafe fn dot(acc: int32x4_t, a: int8x16_t, b: int8x16_t) -> int32x4_t {
        let p0 = vmull_s8(vget_low_s8(a), vget_low_s8(b));
        let p1 = vmull_s8(vget_high_s8(a), vget_high_s8(b));
        vaddq_s32(acc, vaddq_s32(vpaddlq_s16(p0), vpaddlq_s16(p1)))
    }
}

/// The `sdot` instruction (FEAT_DotProd).
pub struct Sdot;
impl Dot for Sdot {
    #[inline(always)]
    unsafe fn dot(mut acc: int32x4_t, a: int8x16_t, b: int8x16_t) -> int32x4_t {
        asm!(
            "sdot {acc:v}.4s, {a:v}.16b, {b:v}.16b",
            acc = inout(vreg) acc,
            a = in(vreg) a,
            b = in(vreg) b,
            options(pure, nomem, nostack, preserves_flags)
        );
        acc
    }
}

macro_rules! entry_points {
    ($($ty:ident => $name:ident, $neon:ident, $dotprod:ident);* $(;)?) => {
        $(
            /// NEON version of the same-named scalar kernel.
            ///
            /// # Safety
            /// See [`crate::DotFn`]; needs NEON.
            #[target_feature(enable = "neon")]
            pub unsafe fn $neon(n: usize, x: *const u8, y: *const u8) -> f32 {
                $name::<Emulated>(n, x, y)
            }
            /// NEON + dot-product version of the same-named scalar kernel.
            ///
            /// # Safety
            /// See [`crate::DotFn`]; needs NEON and the dot-product extension.
            #[target_feature(enable = "neon,dotprod")]
            pub unsafe fn $dotprod(n: usize, x: *const u8, y: *const u8) -> f32 {
                $name::<Sdot>(n, x, y)
            }
        )*

        /// The NEON (`dotprod == false`) or NEON+dotprod kernel for weights `ty`.
        pub fn kernel(ty: GgmlType, dotprod: bool) -> Option<DotFn> {
            match ty {
                GgmlType::F32 => Some(vec_dot_f32_neon),
                GgmlType::F16 => Some(vec_dot_f16_neon),
                GgmlType::BF16 => Some(vec_dot_bf16_neon),
                $(GgmlType::$ty => Some(if dotprod { $dotprod } else { $neon }),)*
                _ => None,
            }
        }
    };
}

entry_points! {
    Q8_0 => q8_0_q8_0, vec_dot_q8_0_q8_0_neon, vec_dot_q8_0_q8_0_dotprod;
    Q4_0 => q4_0_q8_0, vec_dot_q4_0_q8_0_neon, vec_dot_q4_0_q8_0_dotprod;
    Q4_1 => q4_1_q8_1, vec_dot_q4_1_q8_1_neon, vec_dot_q4_1_q8_1_dotprod;
    Q5_0 => q5_0_q8_0, vec_dot_q5_0_q8_0_neon, vec_dot_q5_0_q8_0_dotprod;
    Q5_1 => q5_1_q8_1, vec_dot_q5_1_q8_1_neon, vec_dot_q5_1_q8_1_dotprod;
    Q4_K => q4_k_q8_k, vec_dot_q4_k_q8_k_neon, vec_dot_q4_k_q8_k_dotprod;
    Q5_K => q5_k_q8_k, vec_dot_q5_k_q8_k_neon, vec_dot_q5_k_q8_k_dotprod;
    Q6_K => q6_k_q8_k, vec_dot_q6_k_q8_k_neon, vec_dot_q6_k_q8_k_dotprod;
}

#[inline(always)]
unsafe fn ld_u8(p: *const u8) -> uint8x16_t {
    vld1q_u8(p)
}

#[inline(always)]
unsafe fn ld_s8(p: *const u8) -> int8x16_t {
    vld1q_s8(p.cast())
}

#[inline(always)]
unsafe fn s8(v: uint8x16_t) -> int8x16_t {
    vreinterpretq_s8_u8(v)
}

/// `ggml_vec_dot_f32`, NEON, in its order: four 4-lane FMA accumulators over steps of 16,
/// reduced as `GGML_F32x4_REDUCE` (`(a0 + a2) + (a1 + a3)`, then `vaddvq`), then the elements
/// past the last step in f32 as GCC compiled ggml's scalar loop: rounded products added in order
/// in groups of four, the last 0-3 as FMAs.
///
/// # Safety
/// See [`crate::DotFn`]; needs NEON.
#[target_feature(enable = "neon")]
pub unsafe fn vec_dot_f32_neon(n: usize, x: *const u8, y: *const u8) -> f32 {
    let (x, y) = (x.cast::<f32>(), y.cast::<f32>());
    let mut acc = [vdupq_n_f32(0.0); 4];
    let np = n & !15;
    let mut i = 0;
    while i < np {
        for (k, a) in acc.iter_mut().enumerate() {
            *a = vfmaq_f32(*a, vld1q_f32(x.add(i + 4 * k)), vld1q_f32(y.add(i + 4 * k)));
        }
        i += 16;
    }
    let sumf = reduce4(acc);
    crate::f32_tail_as_gcc(x, y, i, n, sumf)
}

/// ggml's `GGML_F32x4_REDUCE` of four accumulators: `(a0 + a2) + (a1 + a3)`, then `vaddvq`.
#[inline(always)]
unsafe fn reduce4(a: [float32x4_t; 4]) -> f32 {
    vaddvq_f32(vaddq_f32(vaddq_f32(a[0], a[2]), vaddq_f32(a[1], a[3])))
}

/// Four f16 (as bits) to f32, exactly, without the unstable f16 vector types: shift the
/// exponent and mantissa into place, rescale by 2^112 (which also normalises subnormals), and
/// patch infinities and NaNs.
#[inline(always)]
unsafe fn f16x4_to_f32(hb: uint16x4_t) -> float32x4_t {
    let w = vmovl_u16(hb);
    let sign = vshlq_n_u32::<16>(vandq_u32(w, vdupq_n_u32(0x8000)));
    let em = vandq_u32(w, vdupq_n_u32(0x7fff));
    let shifted = vshlq_n_u32::<13>(em);
    let scaled = vmulq_f32(
        vreinterpretq_f32_u32(shifted),
        vdupq_n_f32(f32::from_bits(0x7780_0000)),
    );
    let infnan = vcgeq_u32(em, vdupq_n_u32(0x7c00));
    let special = vorrq_u32(shifted, vdupq_n_u32(0x7f80_0000));
    let r = vbslq_u32(infnan, special, vreinterpretq_u32_f32(scaled));
    vreinterpretq_f32_u32(vorrq_u32(r, sign))
}

/// `ggml_vec_dot_f16` as ggml-cpu runs it on NEON without FP16 vector arithmetic
/// (`GGML_F32Cx4`): f16 widened to f32, four 4-lane FMA accumulators over steps of 16, reduced
/// as [`reduce4`] into f64 (`ggml_float`), then the elements past the last step added in f64.
///
/// # Safety
/// See [`crate::DotFn`]; needs NEON.
#[target_feature(enable = "neon")]
pub unsafe fn vec_dot_f16_neon(n: usize, x: *const u8, y: *const u8) -> f32 {
    let (x, y) = (x.cast::<u16>(), y.cast::<u16>());
    let mut acc = [vdupq_n_f32(0.0); 4];
    let np = n & !15;
    let mut i = 0;
    while i < np {
        for (k, a) in acc.iter_mut().enumerate() {
            let vx = f16x4_to_f32(vld1_u16(x.add(i + 4 * k)));
            let vy = f16x4_to_f32(vld1_u16(y.add(i + 4 * k)));
            *a = vfmaq_f32(*a, vx, vy);
        }
        i += 16;
    }
    let mut sumf = reduce4(acc) as f64;
    while i < n {
        sumf += (rd_f16(x.add(i).cast()) * rd_f16(y.add(i).cast())) as f64;
        i += 1;
    }
    sumf as f32
}

/// `ggml_vec_dot_bf16` as ggml-cpu runs it on aarch64, which has no SIMD path for it: each
/// product in f32 (exact: bf16 times bf16 fits), added in order in f64 (`ggml_float`). The
/// products are taken eight at a time with NEON; the additions stay sequential.
///
/// # Safety
/// See [`crate::DotFn`]; needs NEON.
#[target_feature(enable = "neon")]
pub unsafe fn vec_dot_bf16_neon(n: usize, x: *const u8, y: *const u8) -> f32 {
    let (x, y) = (x.cast::<u16>(), y.cast::<u16>());
    let mut sumf = 0f64;
    let mut prod = [0f32; 8];
    let mut i = 0;
    while i + 8 <= n {
        let vx = vld1q_u16(x.add(i));
        let vy = vld1q_u16(y.add(i));
        let xl = vreinterpretq_f32_u32(vshll_n_u16::<16>(vget_low_u16(vx)));
        let xh = vreinterpretq_f32_u32(vshll_n_u16::<16>(vget_high_u16(vx)));
        let yl = vreinterpretq_f32_u32(vshll_n_u16::<16>(vget_low_u16(vy)));
        let yh = vreinterpretq_f32_u32(vshll_n_u16::<16>(vget_high_u16(vy)));
        vst1q_f32(prod.as_mut_ptr(), vmulq_f32(xl, yl));
        vst1q_f32(prod.as_mut_ptr().add(4), vmulq_f32(xh, yh));
        for &p in &prod {
            sumf += p as f64;
        }
        i += 8;
    }
    while i < n {
        let bx = f32::from_bits((x.add(i).read_unaligned() as u32) << 16);
        let by = f32::from_bits((y.add(i).read_unaligned() as u32) << 16);
        sumf += (bx * by) as f64;
        i += 1;
    }
    sumf as f32
}

/// ggml's NEON loop over 32-element blocks (`arch/arm/quants.c`), summed in its order: blocks
/// in pairs, the even one into one f32x4 accumulator and the odd one into another, each as
/// `acc = acc + float(p) * (d_x * d_y)` (`vmlaq_n_f32`: a multiply, then an add), then
/// `vaddvq(acc0) + vaddvq(acc1)`. `block(ib)` gives block `ib`'s integer lane sums `p` and
/// `d_x`, `d_y` (a macro, so the block's `sdot` stays in the caller's `dotprod` function). A
/// last, odd block is the caller's (ggml's scalar loop).
macro_rules! pairs {
    ($nb:expr, $block:ident) => {{
        let mut sumv0 = vdupq_n_f32(0.0);
        let mut sumv1 = vdupq_n_f32(0.0);
        let mut ib = 0;
        while ib + 1 < $nb {
            let (p0, dx0, dy0) = $block!(ib);
            let (p1, dx1, dy1) = $block!(ib + 1);
            sumv0 = vmlaq_n_f32(sumv0, vcvtq_f32_s32(p0), dx0 * dy0);
            sumv1 = vmlaq_n_f32(sumv1, vcvtq_f32_s32(p1), dx1 * dy1);
            ib += 2;
        }
        vaddvq_f32(sumv0) + vaddvq_f32(sumv1)
    }};
}

#[inline(always)]
unsafe fn q8_0_q8_0<D: Dot>(n: usize, x: *const u8, y: *const u8) -> f32 {
    let nb = n / 32;
    macro_rules! block {
        ($ib:expr) => {{
            let ib: usize = $ib;
            let (bx, by) = (x.add(ib * Q8_0), y.add(ib * Q8_0));
            let zero = vdupq_n_s32(0);
            let p = D::dot(
                D::dot(zero, ld_s8(bx.add(2)), ld_s8(by.add(2))),
                ld_s8(bx.add(18)),
                ld_s8(by.add(18)),
            );
            (p, rd_f16(bx), rd_f16(by))
        }};
    }
    let mut sumf = pairs!(nb, block);
    if nb % 2 == 1 {
        // ggml's scalar tail: `sumf += sumi*(d_x*d_y)`, contracted
        let (p, dx, dy) = block!(nb - 1);
        sumf = (vaddvq_s32(p) as f32).mul_add(dx * dy, sumf);
    }
    sumf
}

#[inline(always)]
unsafe fn q4_0_q8_0<D: Dot>(n: usize, x: *const u8, y: *const u8) -> f32 {
    let nb = n / 32;
    let m4b = vdupq_n_u8(0x0F);
    let s8b = vdupq_n_s8(0x8);
    macro_rules! block {
        ($ib:expr) => {{
            let ib: usize = $ib;
            let (bx, by) = (x.add(ib * Q4_0), y.add(ib * Q8_0));
            let v0 = ld_u8(bx.add(2));
            let v0l = vsubq_s8(s8(vandq_u8(v0, m4b)), s8b);
            let v0h = vsubq_s8(s8(vshrq_n_u8::<4>(v0)), s8b);
            let zero = vdupq_n_s32(0);
            let p = D::dot(D::dot(zero, v0l, ld_s8(by.add(2))), v0h, ld_s8(by.add(18)));
            (p, rd_f16(bx), rd_f16(by))
        }};
    }
    let mut sumf = pairs!(nb, block);
    if nb % 2 == 1 {
        // `sumf += sumi*d_x*d_y`, contracted
        let (p, dx, dy) = block!(nb - 1);
        sumf = (vaddvq_s32(p) as f32 * dx).mul_add(dy, sumf);
    }
    sumf
}

/// ggml's scalar tail of Q4_1/Q5_1: `sumf += (d_x*d_y)*sumi + m*s`, which GCC contracts to
/// `sumf + fma(d_x*d_y, sumi, m*s)`.
#[inline(always)]
fn tail_q1(sumf: f32, sumi: i32, dx: f32, dy: f32, m: f32, s: f32) -> f32 {
    sumf + (dx * dy).mul_add(sumi as f32, m * s)
}

#[inline(always)]
unsafe fn q4_1_q8_1<D: Dot>(n: usize, x: *const u8, y: *const u8) -> f32 {
    let nb = n / 32;
    let m4b = vdupq_n_u8(0x0F);
    macro_rules! block {
        ($ib:expr) => {{
            let ib: usize = $ib;
            let (bx, by) = (x.add(ib * Q4_1), y.add(ib * Q8_1));
            let v0 = ld_u8(bx.add(4));
            let v0l = s8(vandq_u8(v0, m4b));
            let v0h = s8(vshrq_n_u8::<4>(v0));
            let zero = vdupq_n_s32(0);
            let p = D::dot(D::dot(zero, v0l, ld_s8(by.add(4))), v0h, ld_s8(by.add(20)));
            (p, rd_f16(bx), rd_f16(by))
        }};
    }
    let ms = |ib: usize| (rd_f16(x.add(ib * Q4_1 + 2)), rd_f16(y.add(ib * Q8_1 + 2)));
    // `summs += m0*s0 + m1*s1` per pair of blocks, contracted to `summs + fma(m0, s0, m1*s1)`
    let mut summs = 0f32;
    let mut ib = 0;
    while ib + 1 < nb {
        let ((m0, s0), (m1, s1)) = (ms(ib), ms(ib + 1));
        summs += m0.mul_add(s0, m1 * s1);
        ib += 2;
    }
    let mut sumf = pairs!(nb, block) + summs;
    if nb % 2 == 1 {
        let (p, dx, dy) = block!(nb - 1);
        let (m, s) = ms(nb - 1);
        sumf = tail_q1(sumf, vaddvq_s32(p), dx, dy, m, s);
    }
    sumf
}

/// The 32 high bits of a Q5 block as two 16-byte masks with 0x10 where the bit is set.
#[inline(always)]
unsafe fn q5_high(qh: u32) -> (uint8x16_t, uint8x16_t) {
    const BITS: [u8; 16] = [1, 2, 4, 8, 16, 32, 64, 128, 1, 2, 4, 8, 16, 32, 64, 128];
    let bits = vld1q_u8(BITS.as_ptr());
    let b = qh.to_le_bytes();
    let lo = vcombine_u8(vdup_n_u8(b[0]), vdup_n_u8(b[1]));
    let hi = vcombine_u8(vdup_n_u8(b[2]), vdup_n_u8(b[3]));
    let m16 = vdupq_n_u8(0x10);
    (
        vandq_u8(vtstq_u8(lo, bits), m16),
        vandq_u8(vtstq_u8(hi, bits), m16),
    )
}

#[inline(always)]
unsafe fn q5_0_q8_0<D: Dot>(n: usize, x: *const u8, y: *const u8) -> f32 {
    let nb = n / 32;
    let m4b = vdupq_n_u8(0x0F);
    let s16 = vdupq_n_s8(16);
    macro_rules! block {
        ($ib:expr) => {{
            let ib: usize = $ib;
            let (bx, by) = (x.add(ib * Q5_0), y.add(ib * Q8_0));
            let (hl, hh) = q5_high(rd_u32(bx.add(2)));
            let v0 = ld_u8(bx.add(6));
            let v0l = vsubq_s8(s8(vorrq_u8(vandq_u8(v0, m4b), hl)), s16);
            let v0h = vsubq_s8(s8(vorrq_u8(vshrq_n_u8::<4>(v0), hh)), s16);
            let zero = vdupq_n_s32(0);
            let p = D::dot(D::dot(zero, v0l, ld_s8(by.add(2))), v0h, ld_s8(by.add(18)));
            (p, rd_f16(bx), rd_f16(by))
        }};
    }
    let mut sumf = pairs!(nb, block);
    if nb % 2 == 1 {
        // `sumf += (d_x*d_y) * sumi`, contracted
        let (p, dx, dy) = block!(nb - 1);
        sumf = (dx * dy).mul_add(vaddvq_s32(p) as f32, sumf);
    }
    sumf
}

#[inline(always)]
unsafe fn q5_1_q8_1<D: Dot>(n: usize, x: *const u8, y: *const u8) -> f32 {
    let nb = n / 32;
    let m4b = vdupq_n_u8(0x0F);
    macro_rules! block {
        ($ib:expr) => {{
            let ib: usize = $ib;
            let (bx, by) = (x.add(ib * Q5_1), y.add(ib * Q8_1));
            let (hl, hh) = q5_high(rd_u32(bx.add(4)));
            let v0 = ld_u8(bx.add(8));
            let v0l = s8(vorrq_u8(vandq_u8(v0, m4b), hl));
            let v0h = s8(vorrq_u8(vshrq_n_u8::<4>(v0), hh));
            let zero = vdupq_n_s32(0);
            let p = D::dot(D::dot(zero, v0l, ld_s8(by.add(4))), v0h, ld_s8(by.add(20)));
            (p, rd_f16(bx), rd_f16(by))
        }};
    }
    let ms = |ib: usize| (rd_f16(x.add(ib * Q5_1 + 2)), rd_f16(y.add(ib * Q8_1 + 2)));
    // `summs0 += m0*s0` and `summs1 += m1*s1`, contracted
    let (mut summs0, mut summs1) = (0f32, 0f32);
    let mut ib = 0;
    while ib + 1 < nb {
        let ((m0, s0), (m1, s1)) = (ms(ib), ms(ib + 1));
        summs0 = m0.mul_add(s0, summs0);
        summs1 = m1.mul_add(s1, summs1);
        ib += 2;
    }
    let mut sumf = pairs!(nb, block) + summs0 + summs1;
    if nb % 2 == 1 {
        let (p, dx, dy) = block!(nb - 1);
        let (m, s) = ms(nb - 1);
        sumf = tail_q1(sumf, vaddvq_s32(p), dx, dy, m, s);
    }
    sumf
}

/// `sum_j bsums[j] * mins[j / 2]` for Q4_K/Q5_K.
#[inline(always)]
unsafe fn k4_mins_dot(bsums: *const u8, mins: &[u8; 8]) -> i32 {
    let b = bsums.cast::<i16>();
    let q8sums = vpaddq_s16(vld1q_s16(b), vld1q_s16(b.add(8)));
    let m = vreinterpretq_s16_u16(vmovl_u8(vld1_u8(mins.as_ptr())));
    let prod = vaddq_s32(
        vmull_s16(vget_low_s16(q8sums), vget_low_s16(m)),
        vmull_s16(vget_high_s16(q8sums), vget_high_s16(m)),
    );
    vaddvq_s32(prod)
}

#[inline(always)]
unsafe fn q4_k_q8_k<D: Dot>(n: usize, x: *const u8, y: *const u8) -> f32 {
    let nb = n / 256;
    let m4b = vdupq_n_u8(0xF);
    let mut sumf = 0f32;
    for i in 0..nb {
        let (bx, by) = (x.add(i * Q4K), y.add(i * Q8K));
        let yd = rd_f32(by);
        let d = yd * rd_f16(bx);
        let dmin = yd * rd_f16(bx.add(2));
        let (scales, mins) = k4_scales_mins(&*bx.add(4).cast::<[u8; 12]>());
        // ggml: `sumf -= dmin * sum(mins)`, contracted (GCC) to one FMA
        sumf = (-dmin).mul_add(k4_mins_dot(by.add(260), &mins) as f32, sumf);
        let mut acc = vdupq_n_s32(0);
        for j in 0..4 {
            let q4 = bx.add(16 + 32 * j);
            let q8 = by.add(4 + 64 * j);
            let b0 = ld_u8(q4);
            let b1 = ld_u8(q4.add(16));
            let zero = vdupq_n_s32(0);
            let pl = D::dot(
                D::dot(zero, s8(vandq_u8(b0, m4b)), ld_s8(q8)),
                s8(vandq_u8(b1, m4b)),
                ld_s8(q8.add(16)),
            );
            let ph = D::dot(
                D::dot(zero, s8(vshrq_n_u8::<4>(b0)), ld_s8(q8.add(32))),
                s8(vshrq_n_u8::<4>(b1)),
                ld_s8(q8.add(48)),
            );
            acc = vmlaq_n_s32(acc, pl, scales[2 * j] as i32);
            acc = vmlaq_n_s32(acc, ph, scales[2 * j + 1] as i32);
        }
        // `sumf += d * (sumi1 + sumi2)`, contracted
        sumf = d.mul_add(vaddvq_s32(acc) as f32, sumf);
    }
    sumf
}

#[inline(always)]
unsafe fn q5_k_q8_k<D: Dot>(n: usize, x: *const u8, y: *const u8) -> f32 {
    let nb = n / 256;
    let m4b = vdupq_n_u8(0xF);
    let mone = vdupq_n_u8(1);
    let mut sumf = 0f32;
    for i in 0..nb {
        let (bx, by) = (x.add(i * Q5K), y.add(i * Q8K));
        let yd = rd_f32(by);
        let d = yd * rd_f16(bx);
        let dmin = yd * rd_f16(bx.add(2));
        let (scales, mins) = k4_scales_mins(&*bx.add(4).cast::<[u8; 12]>());
        // ggml: `sumf += d * sumi - dmin * sumi_mins`, which GCC contracts to
        // `sumf + fma(d, sumi, -(dmin * sumi_mins))`
        let mins_term = dmin * k4_mins_dot(by.add(260), &mins) as f32;
        let mut qh0 = ld_u8(bx.add(16));
        let mut qh1 = ld_u8(bx.add(32));
        let mut acc = vdupq_n_s32(0);
        for j in 0..4 {
            let q5 = bx.add(48 + 32 * j);
            let q8 = by.add(4 + 64 * j);
            let b0 = ld_u8(q5);
            let b1 = ld_u8(q5.add(16));
            let h0l = vshlq_n_u8::<4>(vandq_u8(qh0, mone));
            let h1l = vshlq_n_u8::<4>(vandq_u8(qh1, mone));
            qh0 = vshrq_n_u8::<1>(qh0);
            qh1 = vshrq_n_u8::<1>(qh1);
            let h0h = vshlq_n_u8::<4>(vandq_u8(qh0, mone));
            let h1h = vshlq_n_u8::<4>(vandq_u8(qh1, mone));
            qh0 = vshrq_n_u8::<1>(qh0);
            qh1 = vshrq_n_u8::<1>(qh1);
            let zero = vdupq_n_s32(0);
            let pl = D::dot(
                D::dot(zero, s8(vorrq_u8(vandq_u8(b0, m4b), h0l)), ld_s8(q8)),
                s8(vorrq_u8(vandq_u8(b1, m4b), h1l)),
                ld_s8(q8.add(16)),
            );
            let ph = D::dot(
                D::dot(
                    zero,
                    s8(vorrq_u8(vshrq_n_u8::<4>(b0), h0h)),
                    ld_s8(q8.add(32)),
                ),
                s8(vorrq_u8(vshrq_n_u8::<4>(b1), h1h)),
                ld_s8(q8.add(48)),
            );
            acc = vmlaq_n_s32(acc, pl, scales[2 * j] as i32);
            acc = vmlaq_n_s32(acc, ph, scales[2 * j + 1] as i32);
        }
        sumf += d.mul_add(vaddvq_s32(acc) as f32, -mins_term);
    }
    sumf
}

#[inline(always)]
unsafe fn q6_k_q8_k<D: Dot>(n: usize, x: *const u8, y: *const u8) -> f32 {
    let nb = n / 256;
    let m4b = vdupq_n_u8(0xF);
    let m3 = vdupq_n_u8(0x3);
    let mc = vdupq_n_u8(0xC);
    let m30 = vdupq_n_u8(0x30);
    let mc0 = vdupq_n_u8(0xC0);
    let mut sumf = 0f32;
    for i in 0..nb {
        let (bx, by) = (x.add(i * Q6K), y.add(i * Q8K));
        let d = rd_f32(by) * rd_f16(bx.add(208));
        let sc = bx.add(192).cast::<i8>();
        // sum over the 16 groups of scale * bsum, for the -32 offset
        let scales = vld1q_s8(sc);
        let b = by.add(260).cast::<i16>();
        let (bs0, bs1) = (vld1q_s16(b), vld1q_s16(b.add(8)));
        let s0 = vmovl_s8(vget_low_s8(scales));
        let s1 = vmovl_s8(vget_high_s8(scales));
        let prod = vaddq_s32(
            vaddq_s32(
                vmull_s16(vget_low_s16(bs0), vget_low_s16(s0)),
                vmull_s16(vget_high_s16(bs0), vget_high_s16(s0)),
            ),
            vaddq_s32(
                vmull_s16(vget_low_s16(bs1), vget_low_s16(s1)),
                vmull_s16(vget_high_s16(bs1), vget_high_s16(s1)),
            ),
        );
        let isum_mins = vaddvq_s32(prod);
        let mut acc = vdupq_n_s32(0);
        for c in 0..2 {
            let ql = bx.add(64 * c);
            let qh = bx.add(128 + 32 * c);
            let q8 = by.add(4 + 128 * c);
            let (ql0, ql1, ql2, ql3) = (
                ld_u8(ql),
                ld_u8(ql.add(16)),
                ld_u8(ql.add(32)),
                ld_u8(ql.add(48)),
            );
            let (qh0, qh1) = (ld_u8(qh), ld_u8(qh.add(16)));
            let a = [
                vorrq_u8(vandq_u8(ql0, m4b), vshlq_n_u8::<4>(vandq_u8(qh0, m3))),
                vorrq_u8(vandq_u8(ql1, m4b), vshlq_n_u8::<4>(vandq_u8(qh1, m3))),
                vorrq_u8(vandq_u8(ql2, m4b), vshlq_n_u8::<2>(vandq_u8(qh0, mc))),
                vorrq_u8(vandq_u8(ql3, m4b), vshlq_n_u8::<2>(vandq_u8(qh1, mc))),
                vorrq_u8(vshrq_n_u8::<4>(ql0), vandq_u8(qh0, m30)),
                vorrq_u8(vshrq_n_u8::<4>(ql1), vandq_u8(qh1, m30)),
                vorrq_u8(vshrq_n_u8::<4>(ql2), vshrq_n_u8::<2>(vandq_u8(qh0, mc0))),
                vorrq_u8(vshrq_n_u8::<4>(ql3), vshrq_n_u8::<2>(vandq_u8(qh1, mc0))),
            ];
            for (k, &v) in a.iter().enumerate() {
                let p = D::dot(vdupq_n_s32(0), s8(v), ld_s8(q8.add(16 * k)));
                acc = vmlaq_n_s32(acc, p, *sc.add(8 * c + k) as i32);
            }
        }
        // ggml: `sum += d_all * d_y * (isum - 32 * isum_mins)`, contracted
        sumf = d.mul_add((vaddvq_s32(acc) - 32 * isum_mins) as f32, sumf);
    }
    sumf
}
