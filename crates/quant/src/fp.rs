//! Scalar float conversions, as ggml does them (`ggml-impl.h`).

/// `GGML_FP32_TO_FP16`: round to nearest even; every NaN becomes the quiet NaN `0x7e00` with the
/// input's sign (ggml's `ggml_compute_fp32_to_fp16` drops NaN payloads).
#[inline]
pub fn fp32_to_fp16(f: f32) -> half::f16 {
    if f.is_nan() {
        let sign = ((f.to_bits() >> 16) & 0x8000) as u16;
        return half::f16::from_bits(sign | 0x7e00);
    }
    half::f16::from_f32(f)
}

/// `GGML_FP16_TO_FP32` (exact).
#[inline]
pub fn fp16_to_fp32(h: half::f16) -> f32 {
    h.to_f32()
}

/// `ggml_compute_fp32_to_bf16`: NaN is forced quiet (upper 16 bits kept, bit 6 set), everything
/// else rounds to nearest even (overflowing to infinity).
#[inline]
pub fn fp32_to_bf16(f: f32) -> half::bf16 {
    let u = f.to_bits();
    if (u & 0x7fff_ffff) > 0x7f80_0000 {
        return half::bf16::from_bits(((u >> 16) | 64) as u16);
    }
    half::bf16::from_bits((u.wrapping_add(0x7fff + ((u >> 16) & 1)) >> 16) as u16)
}

/// `ggml_compute_bf16_to_fp32` (exact).
#[inline]
pub fn bf16_to_fp32(h: half::bf16) -> f32 {
    f32::from_bits((h.to_bits() as u32) << 16)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bf16_matches_half_crate_on_sampled_bits() {
        // half's bf16::from_f32 is also round-to-nearest-even with quiet NaNs; the two must
        // agree everywhere except NaN payload details, which we check separately.
        let mut x: u32 = 0x1234_5678;
        for _ in 0..2_000_000 {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            let f = f32::from_bits(x);
            if f.is_nan() {
                continue;
            }
            assert_eq!(
                fp32_to_bf16(f).to_bits(),
                half::bf16::from_f32(f).to_bits(),
                "{x:#x}"
            );
        }
    }

    #[test]
    fn bf16_rounding_cases() {
        // exact tie rounds to even: 1.0 + 2^-8 (0x3f808000) -> 0x3f80; 0x3f818000 -> 0x3f82
        assert_eq!(fp32_to_bf16(f32::from_bits(0x3f80_8000)).to_bits(), 0x3f80);
        assert_eq!(fp32_to_bf16(f32::from_bits(0x3f81_8000)).to_bits(), 0x3f82);
        assert_eq!(fp32_to_bf16(f32::from_bits(0x3f80_8001)).to_bits(), 0x3f81);
        // largest finite rounds up to infinity
        assert_eq!(fp32_to_bf16(f32::MAX).to_bits(), 0x7f80);
        assert_eq!(fp32_to_bf16(f32::INFINITY).to_bits(), 0x7f80);
        assert_eq!(fp32_to_bf16(f32::NEG_INFINITY).to_bits(), 0xff80);
        // signalling NaN with low payload becomes quiet, sign kept
        assert_eq!(fp32_to_bf16(f32::from_bits(0xff80_0001)).to_bits(), 0xffc0);
        assert_eq!(fp32_to_bf16(f32::from_bits(0x7fc0_0000)).to_bits(), 0x7fc0);
        assert_eq!(bf16_to_fp32(half::bf16::from_bits(0x3f80)), 1.0);
    }

    #[test]
    fn fp16_rounding_cases() {
        // 1 + 2^-11 is a tie between 1.0 and 1+2^-10: even wins
        assert_eq!(fp32_to_fp16(1.0 + f32::powi(2.0, -11)).to_bits(), 0x3c00);
        assert_eq!(
            fp32_to_fp16(1.0 + 3.0 * f32::powi(2.0, -11)).to_bits(),
            0x3c02
        );
        assert_eq!(fp32_to_fp16(65520.0).to_bits(), 0x7c00); // rounds to inf
        assert_eq!(fp32_to_fp16(65519.0).to_bits(), 0x7bff);
        assert_eq!(fp32_to_fp16(f32::from_bits(0x7f80_0001)).to_bits(), 0x7e00);
        assert_eq!(fp32_to_fp16(f32::from_bits(0xffc1_2345)).to_bits(), 0xfe00);
        // smallest subnormal and the tie below it
        assert_eq!(fp32_to_fp16(f32::powi(2.0, -24)).to_bits(), 0x0001);
        assert_eq!(fp32_to_fp16(f32::powi(2.0, -25)).to_bits(), 0x0000);
        assert_eq!(fp32_to_fp16(1.5 * f32::powi(2.0, -24)).to_bits(), 0x0002);
    }
}
