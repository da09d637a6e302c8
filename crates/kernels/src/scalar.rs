//! Scalar reference dot products, written after ggml's generic code (`ggml-cpu/quants.c`,
//! `ggml_vec_dot_*_generic`, and `vec.cpp` for F32/F16/BF16) so the two can be compared line by
//! line. Every SIMD kernel is tested against these.
//!
//! Each function takes `n` (elements, a multiple of the block size) and the raw little-endian
//! bytes of the weight row `x` and the activation row `y`.

use std::borrow::Cow;

use bytemuck::Pod;
use half::{bf16, f16};
use slmpack_quant::blocks::{
    BlockQ4K, BlockQ4_0, BlockQ4_1, BlockQ5K, BlockQ5_0, BlockQ5_1, BlockQ6K, BlockQ8K, BlockQ8_0,
    BlockQ8_1, QK8_0, QK8_1, QK_K,
};
use slmpack_quant::{bf16_to_fp32, fp16_to_fp32};

use crate::{act_type, row_bytes, DotFn, GgmlType};

/// Views `bytes` as blocks; copies if they are not aligned for `B`.
fn blocks<B: Pod>(bytes: &[u8], count: usize) -> Cow<'_, [B]> {
    let bytes = &bytes[..count * std::mem::size_of::<B>()];
    match bytemuck::try_cast_slice(bytes) {
        Ok(s) => Cow::Borrowed(s),
        Err(_) => {
            let mut v = vec![B::zeroed(); count];
            bytemuck::cast_slice_mut::<B, u8>(&mut v).copy_from_slice(bytes);
            Cow::Owned(v)
        }
    }
}

#[inline]
fn h(x: f16) -> f32 {
    fp16_to_fp32(x)
}

/// `ggml_vec_dot_f32`: f32 weights · f32 activations, summed in f64.
pub fn vec_dot_f32(n: usize, x: &[u8], y: &[u8]) -> f32 {
    let x: Cow<[f32]> = blocks(x, n);
    let y: Cow<[f32]> = blocks(y, n);
    let mut sumf = 0f64;
    for i in 0..n {
        sumf += (x[i] * y[i]) as f64;
    }
    sumf as f32
}

/// `ggml_vec_dot_f16`: f16 weights · f16 activations, products in f32, summed in f64.
pub fn vec_dot_f16(n: usize, x: &[u8], y: &[u8]) -> f32 {
    let x: Cow<[f16]> = blocks(x, n);
    let y: Cow<[f16]> = blocks(y, n);
    let mut sumf = 0f64;
    for i in 0..n {
        sumf += (h(x[i]) * h(y[i])) as f64;
    }
    sumf as f32
}

/// `ggml_vec_dot_bf16`: bf16 weights · bf16 activations, products in f32, summed in f64.
pub fn vec_dot_bf16(n: usize, x: &[u8], y: &[u8]) -> f32 {
    let x: Cow<[bf16]> = blocks(x, n);
    let y: Cow<[bf16]> = blocks(y, n);
    let mut sumf = 0f64;
    for i in 0..n {
        sumf += (bf16_to_fp32(x[i]) * bf16_to_fp32(y[i])) as f64;
    }
    sumf as f32
}

/// `ggml_vec_dot_q4_0_q8_0`.
pub fn vec_dot_q4_0_q8_0(n: usize, vx: &[u8], vy: &[u8]) -> f32 {
    let qk = QK8_0;
    let nb = n / qk;
    let x: Cow<[BlockQ4_0]> = blocks(vx, nb);
    let y: Cow<[BlockQ8_0]> = blocks(vy, nb);
    let mut sumf = 0f32;
    for ib in 0..nb {
        let mut sumi0 = 0i32;
        let mut sumi1 = 0i32;
        for j in 0..qk / 2 {
            let v0 = (x[ib].qs[j] & 0x0F) as i32 - 8;
            let v1 = (x[ib].qs[j] >> 4) as i32 - 8;
            sumi0 += v0 * y[ib].qs[j] as i32;
            sumi1 += v1 * y[ib].qs[j + qk / 2] as i32;
        }
        let sumi = sumi0 + sumi1;
        sumf += sumi as f32 * h(x[ib].d) * h(y[ib].d);
    }
    sumf
}

/// `ggml_vec_dot_q4_1_q8_1`.
pub fn vec_dot_q4_1_q8_1(n: usize, vx: &[u8], vy: &[u8]) -> f32 {
    let qk = QK8_1;
    let nb = n / qk;
    let x: Cow<[BlockQ4_1]> = blocks(vx, nb);
    let y: Cow<[BlockQ8_1]> = blocks(vy, nb);
    let mut sumf = 0f32;
    for ib in 0..nb {
        let mut sumi0 = 0i32;
        let mut sumi1 = 0i32;
        for j in 0..qk / 2 {
            let v0 = (x[ib].qs[j] & 0x0F) as i32;
            let v1 = (x[ib].qs[j] >> 4) as i32;
            sumi0 += v0 * y[ib].qs[j] as i32;
            sumi1 += v1 * y[ib].qs[j + qk / 2] as i32;
        }
        let sumi = sumi0 + sumi1;
        sumf += (h(x[ib].d) * h(y[ib].d)) * sumi as f32 + h(x[ib].m) * h(y[ib].s);
    }
    sumf
}

/// `ggml_vec_dot_q5_0_q8_0`.
pub fn vec_dot_q5_0_q8_0(n: usize, vx: &[u8], vy: &[u8]) -> f32 {
    let qk = QK8_0;
    let nb = n / qk;
    let x: Cow<[BlockQ5_0]> = blocks(vx, nb);
    let y: Cow<[BlockQ8_0]> = blocks(vy, nb);
    let mut sumf = 0f32;
    for ib in 0..nb {
        let qh = u32::from_le_bytes(x[ib].qh);
        let mut sumi0 = 0i32;
        let mut sumi1 = 0i32;
        for j in 0..qk / 2 {
            let xh_0 = (((qh & (1u32 << j)) >> j) << 4) as u8;
            let xh_1 = ((qh & (1u32 << (j + 16))) >> (j + 12)) as u8;
            let x0 = (((x[ib].qs[j] & 0x0F) | xh_0).wrapping_sub(16)) as i8 as i32;
            let x1 = (((x[ib].qs[j] >> 4) | xh_1).wrapping_sub(16)) as i8 as i32;
            sumi0 += x0 * y[ib].qs[j] as i32;
            sumi1 += x1 * y[ib].qs[j + qk / 2] as i32;
        }
        let sumi = sumi0 + sumi1;
        sumf += (h(x[ib].d) * h(y[ib].d)) * sumi as f32;
    }
    sumf
}

/// `ggml_vec_dot_q5_1_q8_1`.
pub fn vec_dot_q5_1_q8_1(n: usize, vx: &[u8], vy: &[u8]) -> f32 {
    let qk = QK8_1;
    let nb = n / qk;
    let x: Cow<[BlockQ5_1]> = blocks(vx, nb);
    let y: Cow<[BlockQ8_1]> = blocks(vy, nb);
    let mut sumf = 0f32;
    for ib in 0..nb {
        let qh = u32::from_le_bytes(x[ib].qh);
        let mut sumi0 = 0i32;
        let mut sumi1 = 0i32;
        for j in 0..qk / 2 {
            let xh_0 = ((qh >> j) << 4) as u8 & 0x10;
            let xh_1 = (qh >> (j + 12)) as u8 & 0x10;
            let x0 = ((x[ib].qs[j] & 0xF) | xh_0) as i32;
            let x1 = ((x[ib].qs[j] >> 4) | xh_1) as i32;
            sumi0 += x0 * y[ib].qs[j] as i32;
            sumi1 += x1 * y[ib].qs[j + qk / 2] as i32;
        }
        let sumi = sumi0 + sumi1;
        sumf += (h(x[ib].d) * h(y[ib].d)) * sumi as f32 + h(x[ib].m) * h(y[ib].s);
    }
    sumf
}

/// `ggml_vec_dot_q8_0_q8_0`.
pub fn vec_dot_q8_0_q8_0(n: usize, vx: &[u8], vy: &[u8]) -> f32 {
    let qk = QK8_0;
    let nb = n / qk;
    let x: Cow<[BlockQ8_0]> = blocks(vx, nb);
    let y: Cow<[BlockQ8_0]> = blocks(vy, nb);
    let mut sumf = 0f32;
    for ib in 0..nb {
        let mut sumi = 0i32;
        for j in 0..qk {
            sumi += x[ib].qs[j] as i32 * y[ib].qs[j] as i32;
        }
        sumf += sumi as f32 * (h(x[ib].d) * h(y[ib].d));
    }
    sumf
}

/// The shared tail of ggml's Q4_K/Q5_K generic code: `aux8` holds the 256 unsigned quants.
fn k4_tail(
    aux8: &[i8; QK_K],
    scales12: &[u8; 12],
    xd: f16,
    xdmin: f16,
    y: &BlockQ8K,
    sums: &mut [f32; 8],
    sumf: &mut f32,
) {
    let (scales, mins) = crate::k4_scales_mins(scales12);
    let mut aux32 = [0i32; 8];
    let mut aux16 = [0i16; 8];
    let mut sumi = 0i32;
    for j in 0..QK_K / 16 {
        sumi += y.bsums[j] as i32 * mins[j / 2] as i32;
    }
    let mut a = 0usize;
    let mut q8 = 0usize;
    for &scale in scales.iter() {
        let scale = scale as i32;
        for _ in 0..4 {
            for l in 0..8 {
                aux16[l] = y.qs[q8 + l] as i16 * aux8[a + l] as i16;
            }
            for l in 0..8 {
                aux32[l] += scale * aux16[l] as i32;
            }
            q8 += 8;
            a += 8;
        }
    }
    let d = h(xd) * y.d;
    for l in 0..8 {
        sums[l] += d * aux32[l] as f32;
    }
    let dmin = h(xdmin) * y.d;
    *sumf -= dmin * sumi as f32;
}

/// `ggml_vec_dot_q4_K_q8_K`.
pub fn vec_dot_q4_k_q8_k(n: usize, vx: &[u8], vy: &[u8]) -> f32 {
    let nb = n / QK_K;
    let x: Cow<[BlockQ4K]> = blocks(vx, nb);
    let y: Cow<[BlockQ8K]> = blocks(vy, nb);
    let mut aux8 = [0i8; QK_K];
    let mut sums = [0f32; 8];
    let mut sumf = 0f32;
    for i in 0..nb {
        let q4 = &x[i].qs;
        for j in 0..QK_K / 64 {
            for l in 0..32 {
                aux8[64 * j + l] = (q4[32 * j + l] & 0xF) as i8;
                aux8[64 * j + 32 + l] = (q4[32 * j + l] >> 4) as i8;
            }
        }
        k4_tail(
            &aux8,
            &x[i].scales,
            x[i].d,
            x[i].dmin,
            &y[i],
            &mut sums,
            &mut sumf,
        );
    }
    for s in sums {
        sumf += s;
    }
    sumf
}

/// `ggml_vec_dot_q5_K_q8_K`.
pub fn vec_dot_q5_k_q8_k(n: usize, vx: &[u8], vy: &[u8]) -> f32 {
    let nb = n / QK_K;
    let x: Cow<[BlockQ5K]> = blocks(vx, nb);
    let y: Cow<[BlockQ8K]> = blocks(vy, nb);
    let mut aux8 = [0i8; QK_K];
    let mut sums = [0f32; 8];
    let mut sumf = 0f32;
    for i in 0..nb {
        let q4 = &x[i].qs;
        let hm = &x[i].qh;
        let mut m = 1u8;
        for j in 0..QK_K / 64 {
            for l in 0..32 {
                let lo = (q4[32 * j + l] & 0xF) as i8 + if hm[l] & m != 0 { 16 } else { 0 };
                aux8[64 * j + l] = lo;
            }
            m <<= 1;
            for l in 0..32 {
                let hi = (q4[32 * j + l] >> 4) as i8 + if hm[l] & m != 0 { 16 } else { 0 };
                aux8[64 * j + 32 + l] = hi;
            }
            m = m.wrapping_shl(1);
        }
        k4_tail(
            &aux8,
            &x[i].scales,
            x[i].d,
            x[i].dmin,
            &y[i],
            &mut sums,
            &mut sumf,
        );
    }
    for s in sums {
        sumf += s;
    }
    sumf
}

/// `ggml_vec_dot_q6_K_q8_K`.
pub fn vec_dot_q6_k_q8_k(n: usize, vx: &[u8], vy: &[u8]) -> f32 {
    let nb = n / QK_K;
    let x: Cow<[BlockQ6K]> = blocks(vx, nb);
    let y: Cow<[BlockQ8K]> = blocks(vy, nb);
    let mut aux8 = [0i8; QK_K];
    let mut aux16 = [0i16; 8];
    let mut aux32;
    let mut sums = [0f32; 8];
    let mut sumf = 0f32;
    for i in 0..nb {
        let ql = &x[i].ql;
        let qh = &x[i].qh;
        for c in 0..QK_K / 128 {
            let (a, q4, qh) = (&mut aux8[128 * c..], &ql[64 * c..], &qh[32 * c..]);
            for l in 0..32 {
                a[l] = ((q4[l] & 0xF) | ((qh[l] & 3) << 4)) as i8 - 32;
                a[l + 32] = ((q4[l + 32] & 0xF) | (((qh[l] >> 2) & 3) << 4)) as i8 - 32;
                a[l + 64] = ((q4[l] >> 4) | (((qh[l] >> 4) & 3) << 4)) as i8 - 32;
                a[l + 96] = ((q4[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4)) as i8 - 32;
            }
        }
        aux32 = [0i32; 8];
        let mut a = 0usize;
        for j in 0..QK_K / 16 {
            let scale = x[i].scales[j] as i32;
            for _ in 0..2 {
                for l in 0..8 {
                    aux16[l] = y[i].qs[a + l] as i16 * aux8[a + l] as i16;
                }
                for l in 0..8 {
                    aux32[l] += scale * aux16[l] as i32;
                }
                a += 8;
            }
        }
        let d = h(x[i].d) * y[i].d;
        for l in 0..8 {
            sums[l] += d * aux32[l] as f32;
        }
    }
    for s in sums {
        sumf += s;
    }
    sumf
}

macro_rules! raw {
    ($($ty:ident => $f:ident),* $(,)?) => {
        /// The scalar kernel for weights `ty`, as a [`DotFn`].
        pub fn kernel(ty: GgmlType) -> Option<DotFn> {
            match ty {
                $(GgmlType::$ty => {
                    /// # Safety
                    /// See [`DotFn`].
                    unsafe fn k(n: usize, x: *const u8, y: *const u8) -> f32 {
                        let w = GgmlType::$ty;
                        let a = act_type(w).unwrap();
                        // SAFETY: the caller guarantees these many readable bytes.
                        let (xs, ys) = unsafe {
                            (
                                std::slice::from_raw_parts(x, row_bytes(w, n)),
                                std::slice::from_raw_parts(y, row_bytes(a, n)),
                            )
                        };
                        $f(n, xs, ys)
                    }
                    Some(k as DotFn)
                })*
                _ => None,
            }
        }
    };
}

raw! {
    F32 => vec_dot_f32,
    F16 => vec_dot_f16,
    BF16 => vec_dot_bf16,
    Q8_0 => vec_dot_q8_0_q8_0,
    Q4_0 => vec_dot_q4_0_q8_0,
    Q4_1 => vec_dot_q4_1_q8_1,
    Q5_0 => vec_dot_q5_0_q8_0,
    Q5_1 => vec_dot_q5_1_q8_1,
    Q4_K => vec_dot_q4_k_q8_k,
    Q5_K => vec_dot_q5_k_q8_k,
    Q6_K => vec_dot_q6_k_q8_k,
}
