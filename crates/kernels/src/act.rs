//! Activation quantization to Q8_0 / Q8_1 as ggml's CPU backend does it at run time.
//!
//! ggml-cpu does not quantize activations with the reference code of `ggml-quants.c`
//! (`quantize_row_q8_0_ref`: `id = 1/d`, `roundf`, ties away from zero). Its per-architecture
//! `quantize_row_q8_0` / `quantize_row_q8_1` (in `ggml-cpu/arch/*/quants.c`) round to nearest
//! *even*, and the x86 version (AVX/AVX2) also computes the inverse scale as `127/amax` instead
//! of `1/(amax/127)`. Both differences change an int8 now and then (a product within an ulp of a
//! `.5`), and one changed int8 moves everything downstream, so llama.cpp's logits are only
//! reproduced when activations are quantized the same way:
//!
//! * x86_64: `d = amax/127`, `id = 127/amax`, round half to even ([`Rounding::X86`]);
//! * aarch64 (NEON): `d = amax/127`, `id = 1/d`, round half to even ([`Rounding::Neon`]);
//! * elsewhere ggml falls back to the reference code ([`Rounding::Reference`]).
//!
//! These are scalar loops: the rounding matters here, not the speed (activations are a few
//! thousand floats per matrix product).

/// How an activation block is scaled and rounded (see the module documentation).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Rounding {
    /// ggml-quants.c `quantize_row_q8_{0,1}_ref`: `id = 1/d`, ties away from zero.
    Reference,
    /// ggml-cpu on x86 (AVX/AVX2): `id = 127/amax`, ties to even.
    X86,
    /// ggml-cpu on aarch64 (NEON): `id = 1/d`, ties to even.
    Neon,
}

impl Rounding {
    /// What ggml-cpu uses on the architecture this is compiled for.
    pub const NATIVE: Rounding = if cfg!(target_arch = "x86_64") {
        Rounding::X86
    } else if cfg!(target_arch = "aarch64") {
        Rounding::Neon
    } else {
        Rounding::Reference
    };
}

/// Round half to even for `|x| <= 128` (here `|x * id| <= 127` up to an ulp) without a libm call:
/// adding and subtracting 1.5 * 2^23 leaves no fraction bits, and the FPU rounds to even.
#[inline(always)]
fn round_even(x: f32) -> f32 {
    const MAGIC: f32 = 12_582_912.0; // 1.5 * 2^23
    (x + MAGIC) - MAGIC
}

/// Quantize one block of 32: returns `(d, qs, sum of qs)`.
#[inline]
fn block(x: &[f32], r: Rounding) -> (f32, [i8; 32], i32) {
    let amax = x.iter().fold(0f32, |m, v| m.max(v.abs()));
    let d = amax / 127.0;
    let id = match r {
        Rounding::X86 => {
            if amax != 0.0 {
                127.0 / amax
            } else {
                0.0
            }
        }
        Rounding::Reference | Rounding::Neon => {
            if d != 0.0 {
                1.0 / d
            } else {
                0.0
            }
        }
    };
    let mut qs = [0i8; 32];
    let mut sum = 0i32;
    for (q, &v) in qs.iter_mut().zip(x) {
        let p = v * id;
        let i = match r {
            Rounding::Reference => p.round(),
            Rounding::X86 | Rounding::Neon => round_even(p),
        } as i32;
        let i = i.clamp(-128, 127);
        *q = i as i8;
        sum += i;
    }
    (d, qs, sum)
}

/// `quantize_row_q8_0`: `x.len()` a multiple of 32, `dst.len() == x.len() / 32 * 34`.
pub fn quantize_row_q8_0(x: &[f32], dst: &mut [u8], r: Rounding) {
    assert_eq!(x.len() % 32, 0, "row length is a multiple of 32");
    assert_eq!(dst.len(), x.len() / 32 * 34, "Q8_0 buffer size");
    for (xb, yb) in x.chunks_exact(32).zip(dst.chunks_exact_mut(34)) {
        let (d, qs, _) = block(xb, r);
        yb[..2].copy_from_slice(&slmpack_quant::fp32_to_fp16(d).to_bits().to_le_bytes());
        yb[2..].copy_from_slice(bytemuck::cast_slice(&qs));
    }
}

/// `quantize_row_q8_1`: `x.len()` a multiple of 32, `dst.len() == x.len() / 32 * 36`; `s` is
/// `d * sum(qs)`.
pub fn quantize_row_q8_1(x: &[f32], dst: &mut [u8], r: Rounding) {
    assert_eq!(x.len() % 32, 0, "row length is a multiple of 32");
    assert_eq!(dst.len(), x.len() / 32 * 36, "Q8_1 buffer size");
    for (xb, yb) in x.chunks_exact(32).zip(dst.chunks_exact_mut(36)) {
        let (d, qs, sum) = block(xb, r);
        yb[..2].copy_from_slice(&slmpack_quant::fp32_to_fp16(d).to_bits().to_le_bytes());
        yb[2..4].copy_from_slice(
            &slmpack_quant::fp32_to_fp16(d * sum as f32)
                .to_bits()
                .to_le_bytes(),
        );
        yb[4..].copy_from_slice(bytemuck::cast_slice(&qs));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_even_matches_round_ties_even() {
        for i in -300_000..=300_000 {
            let x = i as f32 / 2048.0; // every half and many near-halves in [-146, 146]
            assert_eq!(round_even(x), x.round_ties_even(), "{x}");
        }
        assert_eq!(round_even(2.5), 2.0);
        assert_eq!(round_even(-3.5), -4.0);
    }

    #[test]
    fn roundings_differ_only_where_documented() {
        // a tie: reference rounds away from zero, ggml-cpu's SIMD code to even
        let mut x = [0f32; 32];
        x[0] = 127.0;
        x[1] = 2.5;
        let (mut r, mut v) = ([0u8; 34], [0u8; 34]);
        quantize_row_q8_0(&x, &mut r, Rounding::Reference);
        quantize_row_q8_0(&x, &mut v, Rounding::X86);
        assert_eq!((r[3] as i8, v[3] as i8), (3, 2));
        let mut q1 = [0u8; 36];
        quantize_row_q8_1(&x, &mut q1, Rounding::Neon);
        assert_eq!(q1[5] as i8, 2);
        // s = d * sum(qs) = 1 * (127 + 2)
        assert_eq!(half::f16::from_le_bytes([q1[2], q1[3]]).to_f32(), 129.0);
    }
}
