//! Quantized-activation dot products, as ggml's CPU backend does them: activations are quantized
//! to 32-element blocks of int8 with an f16 scale (`block_q8_0`; for Q4_1 weights also the
//! block sum `s = d * Σq`, ggml's `block_q8_1`), then each weight block is multiplied in integer
//! arithmetic and scaled once per block.
//!
//! Weights: Q4_0, Q4_1, Q8_0. Implementations: a scalar reference (line-for-line with
//! `ggml_vec_dot_q4_0_q8_0`, `ggml_vec_dot_q4_1_q8_1`, `ggml_vec_dot_q8_0_q8_0` generic code) and
//! AVX2+FMA (x86-64), chosen once at run time; `SLMPACK_ISA=scalar|avx2` forces one.

use std::cell::RefCell;
use std::sync::OnceLock;

use half::f16;
use rayon::prelude::*;
use slmpack_gguf::GgmlType;

use crate::matmul::SyncOut;
use crate::tensor::QTensor;

/// Elements per block (`QK8_0`, `QK4_0`, `QK4_1`).
pub const QK: usize = 32;

/// The instruction set the kernels use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Isa {
    Scalar,
    Avx2,
}

impl Isa {
    pub fn name(self) -> &'static str {
        match self {
            Isa::Scalar => "scalar",
            Isa::Avx2 => "avx2+fma",
        }
    }

    /// Whether this CPU can run `self`.
    pub fn supported(self) -> bool {
        match self {
            Isa::Scalar => true,
            Isa::Avx2 => avx2_supported(),
        }
    }
}

#[cfg(target_arch = "x86_64")]
fn avx2_supported() -> bool {
    std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma")
}

#[cfg(not(target_arch = "x86_64"))]
fn avx2_supported() -> bool {
    false
}

/// The ISA in use: `SLMPACK_ISA` if set (and supported), else the best this CPU has.
pub fn isa() -> Isa {
    static ISA: OnceLock<Isa> = OnceLock::new();
    *ISA.get_or_init(|| {
        let best = if Isa::Avx2.supported() {
            Isa::Avx2
        } else {
            Isa::Scalar
        };
        match std::env::var("SLMPACK_ISA").ok().as_deref() {
            Some("scalar") => Isa::Scalar,
            Some("avx2") if Isa::Avx2.supported() => Isa::Avx2,
            Some(other) => {
                eprintln!(
                    "warning: `SLMPACK_ISA={other}` is not available on this CPU; using `{}`\n  hint: use `scalar` or `avx2`",
                    best.name()
                );
                best
            }
            None => best,
        }
    })
}

/// Whether the kernels handle weights of type `ty`.
pub fn handles(ty: GgmlType) -> bool {
    matches!(ty, GgmlType::Q4_0 | GgmlType::Q4_1 | GgmlType::Q8_0)
}

/// One block of quantized activations: ggml's `block_q8_0` (`d`, `qs`) plus `block_q8_1`'s
/// `s = d * Σqs`. `d` and `s` are stored as the f32 value of their f16 rounding, as ggml keeps them.
#[derive(Debug, Clone, Copy)]
#[repr(C, align(32))]
pub struct BlockQ8 {
    pub qs: [i8; QK],
    pub d: f32,
    pub s: f32,
}

impl Default for BlockQ8 {
    fn default() -> Self {
        BlockQ8 {
            qs: [0; QK],
            d: 0.0,
            s: 0.0,
        }
    }
}

/// ggml's `quantize_row_q8_1_ref` (which is `quantize_row_q8_0_ref` plus the sum):
/// `d = amax / 127`, `q = round(x / d)`.
pub fn quantize_q8(x: &[f32], out: &mut [BlockQ8]) {
    debug_assert_eq!(x.len(), out.len() * QK);
    for (xb, y) in x.chunks_exact(QK).zip(out.iter_mut()) {
        let amax = xb.iter().fold(0f32, |m, v| m.max(v.abs()));
        let d = amax / 127.0;
        let id = if d != 0.0 { 1.0 / d } else { 0.0 };
        let mut sum = 0i32;
        for (q, &v) in y.qs.iter_mut().zip(xb) {
            let r = (v * id).round() as i8;
            *q = r;
            sum += r as i32;
        }
        y.d = f16::from_f32(d).to_f32();
        y.s = f16::from_f32(sum as f32 * d).to_f32();
    }
}

#[inline]
fn f16_at(b: &[u8], i: usize) -> f32 {
    f16::from_le_bytes([b[i], b[i + 1]]).to_f32()
}

/// A row-by-activations dot product: `(weight row bytes, activation blocks) -> f32`.
pub type VecDot = fn(&[u8], &[BlockQ8]) -> f32;

/// `block_q4_0` (18 bytes: `d`, `qs[16]`) · `block_q8_0`.
pub fn vec_dot_q4_0_scalar(x: &[u8], y: &[BlockQ8]) -> f32 {
    let mut sumf = 0f32;
    for (xb, yb) in x.chunks_exact(18).zip(y) {
        let qs = &xb[2..18];
        let mut sumi0 = 0i32;
        let mut sumi1 = 0i32;
        for (j, &q) in qs.iter().enumerate() {
            let v0 = (q & 0x0F) as i32 - 8;
            let v1 = (q >> 4) as i32 - 8;
            sumi0 += v0 * yb.qs[j] as i32;
            sumi1 += v1 * yb.qs[j + QK / 2] as i32;
        }
        sumf += (sumi0 + sumi1) as f32 * (f16_at(xb, 0) * yb.d);
    }
    sumf
}

/// `block_q4_1` (20 bytes: `d`, `m`, `qs[16]`) · `block_q8_1`.
pub fn vec_dot_q4_1_scalar(x: &[u8], y: &[BlockQ8]) -> f32 {
    let mut sumf = 0f32;
    for (xb, yb) in x.chunks_exact(20).zip(y) {
        let qs = &xb[4..20];
        let mut sumi0 = 0i32;
        let mut sumi1 = 0i32;
        for (j, &q) in qs.iter().enumerate() {
            sumi0 += (q & 0x0F) as i32 * yb.qs[j] as i32;
            sumi1 += (q >> 4) as i32 * yb.qs[j + QK / 2] as i32;
        }
        sumf += (f16_at(xb, 0) * yb.d) * (sumi0 + sumi1) as f32 + f16_at(xb, 2) * yb.s;
    }
    sumf
}

/// `block_q8_0` (34 bytes: `d`, `qs[32]`) · `block_q8_0`.
pub fn vec_dot_q8_0_scalar(x: &[u8], y: &[BlockQ8]) -> f32 {
    let mut sumf = 0f32;
    for (xb, yb) in x.chunks_exact(34).zip(y) {
        let mut sumi = 0i32;
        for j in 0..QK {
            sumi += (xb[2 + j] as i8) as i32 * yb.qs[j] as i32;
        }
        sumf += sumi as f32 * (f16_at(xb, 0) * yb.d);
    }
    sumf
}

/// The dot product for weights of type `ty` on `isa`, if the kernels handle it.
pub fn vec_dot_for(ty: GgmlType, isa: Isa) -> Option<VecDot> {
    match (ty, isa) {
        (GgmlType::Q4_0, Isa::Scalar) => Some(vec_dot_q4_0_scalar),
        (GgmlType::Q4_1, Isa::Scalar) => Some(vec_dot_q4_1_scalar),
        (GgmlType::Q8_0, Isa::Scalar) => Some(vec_dot_q8_0_scalar),
        #[cfg(target_arch = "x86_64")]
        (GgmlType::Q4_0, Isa::Avx2) => Some(avx2::vec_dot_q4_0),
        #[cfg(target_arch = "x86_64")]
        (GgmlType::Q4_1, Isa::Avx2) => Some(avx2::vec_dot_q4_1),
        #[cfg(target_arch = "x86_64")]
        (GgmlType::Q8_0, Isa::Avx2) => Some(avx2::vec_dot_q8_0),
        _ => None,
    }
}

thread_local! {
    static ACT: RefCell<Vec<BlockQ8>> = const { RefCell::new(Vec::new()) };
}

/// Rows per rayon task.
const ROWS_PER_TASK: usize = 16;

/// `ys[t] = W xs[t]` with quantized activations. Returns false (and does nothing) when the
/// weight type is not handled, so the caller takes the portable path.
pub fn matmul(w: &QTensor, xs: &[f32], n_tokens: usize, ys: &mut [f32]) -> bool {
    if !w.cols.is_multiple_of(QK) {
        return false;
    }
    let Some(dot) = vec_dot_for(w.ty, isa()) else {
        return false;
    };
    let nb = w.cols / QK;
    ACT.with(|act| {
        let mut act = act.borrow_mut();
        if act.len() < n_tokens * nb {
            act.resize(n_tokens * nb, BlockQ8::default());
        }
        for t in 0..n_tokens {
            quantize_q8(
                &xs[t * w.cols..(t + 1) * w.cols],
                &mut act[t * nb..(t + 1) * nb],
            );
        }
        let act = &act[..n_tokens * nb];
        let out = SyncOut(ys.as_mut_ptr());
        let rows = w.rows;
        (0..rows.div_ceil(ROWS_PER_TASK))
            .into_par_iter()
            .for_each(|task| {
                let r0 = task * ROWS_PER_TASK;
                for r in r0..(r0 + ROWS_PER_TASK).min(rows) {
                    let row = w.row(r);
                    for t in 0..n_tokens {
                        let v = dot(row, &act[t * nb..(t + 1) * nb]);
                        // SAFETY: (t, r) is written by this task only; index < n_tokens * rows.
                        unsafe { *out.get().add(t * rows + r) = v };
                    }
                }
            });
    });
    true
}

#[cfg(target_arch = "x86_64")]
mod avx2 {
    //! AVX2+FMA versions of the dot products, following ggml's x86 code (`bytes_from_nibbles_32`,
    //! `mul_sum_i8_pairs_float`, `mul_sum_us8_pairs_float`).
    use std::arch::x86_64::*;

    use super::{BlockQ8, QK};

    pub fn vec_dot_q4_0(x: &[u8], y: &[BlockQ8]) -> f32 {
        assert!(x.len() >= y.len() * 18);
        // SAFETY: only selected when AVX2 and FMA were detected; lengths checked above.
        unsafe { q4_0(x, y) }
    }

    pub fn vec_dot_q4_1(x: &[u8], y: &[BlockQ8]) -> f32 {
        assert!(x.len() >= y.len() * 20);
        // SAFETY: as above.
        unsafe { q4_1(x, y) }
    }

    pub fn vec_dot_q8_0(x: &[u8], y: &[BlockQ8]) -> f32 {
        assert!(x.len() >= y.len() * 34);
        // SAFETY: as above.
        unsafe { q8_0(x, y) }
    }

    #[inline]
    fn f16_at(b: &[u8], i: usize) -> f32 {
        half::f16::from_le_bytes([b[i], b[i + 1]]).to_f32()
    }

    #[inline]
    #[target_feature(enable = "avx2,fma")]
    unsafe fn hsum_float_8(x: __m256) -> f32 {
        let mut res = _mm256_extractf128_ps(x, 1);
        res = _mm_add_ps(res, _mm256_castps256_ps128(x));
        res = _mm_add_ps(res, _mm_movehl_ps(res, res));
        res = _mm_add_ss(res, _mm_movehdup_ps(res));
        _mm_cvtss_f32(res)
    }

    /// 16 bytes of nibbles -> 32 bytes: low nibbles in lanes 0..16, high nibbles in 16..32.
    #[inline]
    #[target_feature(enable = "avx2,fma")]
    unsafe fn bytes_from_nibbles_32(p: *const u8) -> __m256i {
        let tmp = _mm_loadu_si128(p as *const __m128i);
        let bytes = _mm256_set_m128i(_mm_srli_epi16(tmp, 4), tmp);
        _mm256_and_si256(_mm256_set1_epi8(0x0F), bytes)
    }

    #[inline]
    #[target_feature(enable = "avx2,fma")]
    unsafe fn sum_i16_pairs_float(x: __m256i) -> __m256 {
        let summed = _mm256_madd_epi16(_mm256_set1_epi16(1), x);
        _mm256_cvtepi32_ps(summed)
    }

    /// unsigned x · signed y, 32 pairs, as 8 float partial sums.
    #[inline]
    #[target_feature(enable = "avx2,fma")]
    unsafe fn mul_sum_us8_pairs_float(ax: __m256i, sy: __m256i) -> __m256 {
        sum_i16_pairs_float(_mm256_maddubs_epi16(ax, sy))
    }

    /// signed x · signed y, 32 pairs, as 8 float partial sums.
    #[inline]
    #[target_feature(enable = "avx2,fma")]
    unsafe fn mul_sum_i8_pairs_float(x: __m256i, y: __m256i) -> __m256 {
        let ax = _mm256_sign_epi8(x, x);
        let sy = _mm256_sign_epi8(y, x);
        mul_sum_us8_pairs_float(ax, sy)
    }

    #[target_feature(enable = "avx2,fma")]
    unsafe fn q4_0(x: &[u8], y: &[BlockQ8]) -> f32 {
        let mut acc = _mm256_setzero_ps();
        let off = _mm256_set1_epi8(8);
        for (i, yb) in y.iter().enumerate() {
            let xb = &x[i * 18..i * 18 + 18];
            let d = _mm256_set1_ps(f16_at(xb, 0) * yb.d);
            let qx = _mm256_sub_epi8(bytes_from_nibbles_32(xb.as_ptr().add(2)), off);
            let qy = _mm256_loadu_si256(yb.qs.as_ptr() as *const __m256i);
            let q = mul_sum_i8_pairs_float(qx, qy);
            acc = _mm256_fmadd_ps(d, q, acc);
        }
        hsum_float_8(acc)
    }

    #[target_feature(enable = "avx2,fma")]
    unsafe fn q4_1(x: &[u8], y: &[BlockQ8]) -> f32 {
        let mut acc = _mm256_setzero_ps();
        let mut summs = 0f32;
        for (i, yb) in y.iter().enumerate() {
            let xb = &x[i * 20..i * 20 + 20];
            let d0 = f16_at(xb, 0);
            let m0 = f16_at(xb, 2);
            summs += m0 * yb.s;
            let d0v = _mm256_set1_ps(d0);
            let d1v = _mm256_set1_ps(yb.d);
            let d0d1 = _mm256_mul_ps(d0v, d1v);
            let qx = bytes_from_nibbles_32(xb.as_ptr().add(4));
            let qy = _mm256_loadu_si256(yb.qs.as_ptr() as *const __m256i);
            let xy = mul_sum_us8_pairs_float(qx, qy);
            acc = _mm256_fmadd_ps(d0d1, xy, acc);
        }
        hsum_float_8(acc) + summs
    }

    #[target_feature(enable = "avx2,fma")]
    unsafe fn q8_0(x: &[u8], y: &[BlockQ8]) -> f32 {
        let mut acc = _mm256_setzero_ps();
        for (i, yb) in y.iter().enumerate() {
            let xb = &x[i * 34..i * 34 + 34];
            let d = _mm256_set1_ps(f16_at(xb, 0) * yb.d);
            let qx = _mm256_loadu_si256(xb.as_ptr().add(2) as *const __m256i);
            let qy = _mm256_loadu_si256(yb.qs.as_ptr() as *const __m256i);
            let q = mul_sum_i8_pairs_float(qx, qy);
            acc = _mm256_fmadd_ps(d, q, acc);
        }
        hsum_float_8(acc)
    }

    const _: () = assert!(QK == 32);
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A small deterministic generator for test data.
    struct Lcg(u64);
    impl Lcg {
        fn next(&mut self) -> u32 {
            self.0 = self
                .0
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (self.0 >> 33) as u32
        }
        fn f(&mut self) -> f32 {
            self.next() as f32 / (1u64 << 31) as f32 * 2.0 - 1.0
        }
    }

    fn random_row(ty: GgmlType, nb: usize, rng: &mut Lcg) -> Vec<u8> {
        let bs = match ty {
            GgmlType::Q4_0 => 18,
            GgmlType::Q4_1 => 20,
            _ => 34,
        };
        let mut v = vec![0u8; nb * bs];
        for (i, b) in v.iter_mut().enumerate() {
            *b = rng.next() as u8;
            let _ = i;
        }
        // sane f16 scales in every block
        for blk in v.chunks_exact_mut(bs) {
            let d = f16::from_f32(rng.f() * 0.05).to_le_bytes();
            blk[0..2].copy_from_slice(&d);
            if ty == GgmlType::Q4_1 {
                let m = f16::from_f32(rng.f() * 0.1).to_le_bytes();
                blk[2..4].copy_from_slice(&m);
            }
        }
        v
    }

    /// The exact value of a weight row times quantized activations, in f64.
    fn reference(ty: GgmlType, x: &[u8], y: &[BlockQ8]) -> f64 {
        let mut w = vec![0f32; y.len() * QK];
        slmpack_quant::dequantize_row(ty, x, &mut w).unwrap();
        let mut s = 0f64;
        for (b, yb) in y.iter().enumerate() {
            for j in 0..QK {
                s += w[b * QK + j] as f64 * yb.qs[j] as f64 * yb.d as f64;
            }
        }
        s
    }

    #[test]
    fn quantize_q8_matches_ggml_reference() {
        let x: Vec<f32> = (0..64).map(|i| (i as f32 - 20.0) * 0.37).collect();
        let mut b = vec![BlockQ8::default(); 2];
        quantize_q8(&x, &mut b);
        let amax = 20.0 * 0.37f32;
        let d = amax / 127.0;
        assert_eq!(b[0].d, f16::from_f32(d).to_f32());
        assert_eq!(b[0].qs[0], -127);
        assert_eq!(b[0].qs[20], 0);
        let sum: i32 = b[0].qs.iter().map(|&q| q as i32).sum();
        assert_eq!(b[0].s, f16::from_f32(sum as f32 * d).to_f32());
        let mut z = vec![BlockQ8::default(); 1];
        quantize_q8(&[0.0; 32], &mut z);
        assert!(z[0].qs.iter().all(|&q| q == 0) && z[0].d == 0.0);
    }

    #[test]
    fn scalar_kernels_match_dequantized_dot() {
        let mut rng = Lcg(7);
        for ty in [GgmlType::Q4_0, GgmlType::Q4_1, GgmlType::Q8_0] {
            let nb = 9;
            let x = random_row(ty, nb, &mut rng);
            let a: Vec<f32> = (0..nb * QK).map(|_| rng.f()).collect();
            let mut y = vec![BlockQ8::default(); nb];
            quantize_q8(&a, &mut y);
            let got = vec_dot_for(ty, Isa::Scalar).unwrap()(&x, &y) as f64;
            let mut want = reference(ty, &x, &y);
            if ty == GgmlType::Q4_1 {
                // Q4_1's `m * s` uses the f16-rounded block sum; recompute the min term that way
                let mut w0 = 0f64;
                for (b, yb) in y.iter().enumerate() {
                    let m = f16_at(&x[b * 20..], 2) as f64;
                    let exact: f64 = yb.qs.iter().map(|&q| q as f64).sum::<f64>() * yb.d as f64;
                    w0 += m * (yb.s as f64 - exact);
                }
                want += w0;
            }
            assert!(
                (got - want).abs() <= 1e-4 * (1.0 + want.abs()),
                "{ty}: {got} vs {want}"
            );
        }
    }

    #[test]
    fn avx2_matches_scalar_on_random_data() {
        if !Isa::Avx2.supported() {
            eprintln!("avx2 not supported on this CPU; the avx2 kernels are not exercised");
            return;
        }
        let mut rng = Lcg(42);
        for ty in [GgmlType::Q4_0, GgmlType::Q4_1, GgmlType::Q8_0] {
            for nb in [1usize, 2, 5, 18, 48] {
                let x = random_row(ty, nb, &mut rng);
                let a: Vec<f32> = (0..nb * QK).map(|_| rng.f() * 3.0).collect();
                let mut y = vec![BlockQ8::default(); nb];
                quantize_q8(&a, &mut y);
                let s = vec_dot_for(ty, Isa::Scalar).unwrap()(&x, &y);
                let v = vec_dot_for(ty, Isa::Avx2).unwrap()(&x, &y);
                assert!(
                    (s - v).abs() <= 1e-5 * (1.0 + s.abs()),
                    "{ty} nb={nb}: scalar {s} avx2 {v}"
                );
            }
        }
    }
}
