use super::*;

const TYPES: &[GgmlType] = &[
    GgmlType::F32,
    GgmlType::F16,
    GgmlType::BF16,
    GgmlType::Q4_0,
    GgmlType::Q4_1,
    GgmlType::Q5_0,
    GgmlType::Q5_1,
    GgmlType::Q8_0,
    GgmlType::Q8_1,
    GgmlType::Q2_K,
    GgmlType::Q3_K,
    GgmlType::Q4_K,
    GgmlType::Q5_K,
    GgmlType::Q6_K,
    GgmlType::Q8_K,
    GgmlType::IQ4_NL,
];

fn quant(ty: GgmlType, x: &[f32]) -> Vec<u8> {
    let mut out = vec![0u8; ty.row_bytes(x.len() as u64).unwrap() as usize];
    quantize_row(ty, x, &mut out).unwrap();
    out
}

fn dequant(ty: GgmlType, b: &[u8]) -> Vec<f32> {
    let mut out = vec![0f32; b.len() / ty.type_size() * ty.block_size()];
    dequantize_row(ty, b, &mut out).unwrap();
    out
}

#[test]
fn q8_0_hand_checked_block() {
    // x = i - 16 for i in 0..32: amax 16, d = 16/127, q = round(x * 127/16)
    let x: Vec<f32> = (0..32).map(|i| i as f32 - 16.0).collect();
    let b = quant(GgmlType::Q8_0, &x);
    assert_eq!(b.len(), 34);
    let d = half::f16::from_f32(16.0 / 127.0);
    assert_eq!(&b[..2], &d.to_bits().to_le_bytes());
    let q: Vec<i8> = b[2..].iter().map(|&v| v as i8).collect();
    assert_eq!(q[0], -127); // -16 * 7.9375 = -127
    assert_eq!(q[16], 0);
    assert_eq!(q[31], 119); // 15 * 7.9375 = 119.06
    assert_eq!(q[17], 8); // 7.9375 -> 8
    assert_eq!(q[18], 16); // 15.875 -> 16
    assert_eq!(q[20], 32); // 31.75 -> 32
    let y = dequant(GgmlType::Q8_0, &b);
    assert_eq!(y[0], -127.0 * d.to_f32());
    assert_eq!(y[16], 0.0);
}

#[test]
fn zero_block_encodes_the_zero_point() {
    let x = [0f32; 32];
    for ty in [GgmlType::Q8_0, GgmlType::Q4_0, GgmlType::Q5_0] {
        let b = quant(ty, &x);
        // d = 0 (q4_0/q5_0: max / -8 = -0.0, as in ggml); quants are the zero point
        // (q8_0: 0, q4_0: 8 in both nibbles, q5_0: 16)
        let d = if ty == GgmlType::Q8_0 {
            [0, 0]
        } else {
            [0, 0x80]
        };
        assert_eq!(&b[..2], &d, "{ty}");
        let y = dequant(ty, &b);
        assert!(y.iter().all(|&v| v == 0.0), "{ty}");
    }
    let b = quant(GgmlType::Q4_0, &x);
    assert!(b[2..].iter().all(|&v| v == 0x88));
    let b = quant(GgmlType::Q5_0, &x);
    assert_eq!(&b[2..6], &[0xff; 4]); // bit 4 of 16 set for all 32
    assert!(b[6..].iter().all(|&v| v == 0x00));
}

#[test]
fn constant_block_is_exact() {
    // a constant block is reproduced exactly by every format (d or m carry the value)
    let x = [0.75f32; 256];
    for &ty in TYPES {
        let y = dequant(ty, &quant(ty, &x));
        for &v in &y {
            assert!((v - 0.75).abs() < 1e-3, "{ty}: {v}");
        }
    }
    // q4_1: d = 0, m = 0.75 exactly
    let b = quant(GgmlType::Q4_1, &x);
    assert_eq!(&b[..2], &[0, 0]);
    assert_eq!(half::f16::from_le_bytes([b[2], b[3]]).to_f32(), 0.75);
}

#[test]
fn misaligned_buffers_give_the_same_bytes() {
    let x: Vec<f32> = (0..256 * 3)
        .map(|i| ((i * 37 % 101) as f32 - 50.0) * 0.013)
        .collect();
    for &ty in TYPES {
        let n = ty.row_bytes(x.len() as u64).unwrap() as usize;
        let aligned = quant(ty, &x);
        let mut backing = vec![0u64; n / 8 + 2];
        let bytes: &mut [u8] = bytemuck::cast_slice_mut(&mut backing);
        let odd = &mut bytes[1..1 + n];
        quantize_row(ty, &x, odd).unwrap();
        assert_eq!(odd, &aligned[..], "{ty}");
        let mut y1 = vec![0f32; x.len()];
        let mut y2 = vec![0f32; x.len()];
        dequantize_row(ty, odd, &mut y1).unwrap();
        dequantize_row(ty, &aligned, &mut y2).unwrap();
        assert_eq!(y1, y2, "{ty}");
    }
}

#[test]
fn parallel_equals_serial() {
    let x: Vec<f32> = (0..576 * 40)
        .map(|i| ((i * 7919 % 1009) as f32 - 504.0) * 0.001)
        .collect();
    for &ty in TYPES {
        let row = if ty.block_size() == 256 { 512 } else { 576 };
        let x = &x[..x.len() / row * row];
        let serial = quant(ty, x);
        let mut par = vec![0u8; serial.len()];
        quantize(ty, x, row, &mut par).unwrap();
        assert_eq!(serial, par, "{ty}");
        let mut y1 = vec![0f32; x.len()];
        dequantize(ty, &par, &mut y1).unwrap();
        assert_eq!(y1, dequant(ty, &serial), "{ty}");
    }
}

#[test]
fn wrong_lengths_are_errors() {
    let x = [0f32; 100];
    let mut out = vec![0u8; 1000];
    let e = quantize_row(GgmlType::Q4_0, &x, &mut out).unwrap_err();
    assert_eq!(
        e.to_string().lines().next().unwrap(),
        "row length 100 is not a multiple of `q4_0`'s block size 32"
    );
    let x = [0f32; 64];
    let e = quantize_row(GgmlType::Q4_0, &x, &mut out).unwrap_err();
    assert!(
        matches!(
            e,
            QuantError::OutputBytes {
                expected: 36,
                got: 1000,
                ..
            }
        ),
        "{e}"
    );
    let e = quantize(GgmlType::Q4_0, &x, 0, &mut out[..36]).unwrap_err();
    assert!(matches!(e, QuantError::RowLength { .. }), "{e}");
    let e = quantize(GgmlType::Q4_0, &x[..48], 32, &mut out[..27]).unwrap_err();
    assert!(
        matches!(e, QuantError::RowLength { .. } | QuantError::Ragged { .. }),
        "{e}"
    );
    let x = [0f32; 96];
    let e = quantize(GgmlType::Q4_0, &x, 64, &mut out[..54]).unwrap_err();
    assert!(
        matches!(
            e,
            QuantError::Ragged {
                len: 96,
                row_len: 64
            }
        ),
        "{e}"
    );
    let mut y = vec![0f32; 64];
    let e = dequantize_row(GgmlType::Q8_0, &[0u8; 35], &mut y).unwrap_err();
    assert!(
        matches!(
            e,
            QuantError::InputBytes {
                len: 35,
                size: 34,
                ..
            }
        ),
        "{e}"
    );
    let e = dequantize(GgmlType::Q8_0, &[0u8; 34], &mut y).unwrap_err();
    assert!(
        matches!(
            e,
            QuantError::OutputElements {
                expected: 32,
                got: 64,
                ..
            }
        ),
        "{e}"
    );
    let e = quantize_row(GgmlType::IQ2_XXS, &[0f32; 256], &mut out[..66]).unwrap_err();
    assert!(
        e.to_string()
            .starts_with("slmpack cannot quantize to `iq2_xxs`"),
        "{e}"
    );
    assert!(!can_dequantize(GgmlType::IQ2_XXS));
    // empty input is fine
    quantize(GgmlType::Q4_0, &[], 32, &mut []).unwrap();
    dequantize(GgmlType::Q4_0, &[], &mut []).unwrap();
}

#[test]
fn nan_and_inf_do_not_panic() {
    let mut x: Vec<f32> = (0..512).map(|i| (i as f32 * 0.37).sin()).collect();
    x[3] = f32::NAN;
    x[40] = f32::INFINITY;
    x[77] = f32::NEG_INFINITY;
    x[300] = f32::MAX;
    x[301] = -f32::MAX;
    x[400] = f32::MIN_POSITIVE / 4.0;
    for &ty in TYPES {
        let b = quant(ty, &x);
        let _ = dequant(ty, &b);
    }
    // F16/BF16 keep non-finite values
    let y = dequant(GgmlType::F16, &quant(GgmlType::F16, &x));
    assert!(y[3].is_nan() && y[40] == f32::INFINITY && y[77] == f32::NEG_INFINITY);
    assert!(y[300] == f32::INFINITY);
    let y = dequant(GgmlType::BF16, &quant(GgmlType::BF16, &x));
    assert!(y[3].is_nan() && y[40] == f32::INFINITY && y[77] == f32::NEG_INFINITY);
}

/// ggml's tests/test-quantize-fns.cpp: `generate_data` (0.1 is a double there).
fn generate_data(offset: f32, n: usize) -> Vec<f32> {
    (0..n)
        .map(|i| (0.1f64 + (2.0f32 * (i as f32 + offset).cos()) as f64) as f32)
        .collect()
}

/// ggml's `array_rmse`: note it is sqrt(sum of squares) / n, not sqrt(mean).
fn array_rmse(a: &[f32], b: &[f32]) -> f32 {
    let mut sum = 0f64;
    for (&x, &y) in a.iter().zip(b) {
        let d = (x - y) as f64;
        sum += d * d;
    }
    (sum as f32).sqrt() / a.len() as f32
}

#[test]
fn total_quantization_error_within_ggml_thresholds() {
    // thresholds from test-quantize-fns.cpp (MAX_QUANTIZATION_TOTAL_ERROR{,_2BITS,_3BITS})
    let x = generate_data(0.0, 32 * 128);
    for &ty in TYPES {
        if ty == GgmlType::Q8_1 {
            continue; // ggml has no to_float for q8_1, so its test skips it too
        }
        let max = match ty {
            GgmlType::Q2_K => 0.0075,
            GgmlType::Q3_K => 0.0040,
            _ => 0.002,
        };
        let y = dequant(ty, &quant(ty, &x));
        let err = array_rmse(&x, &y);
        eprintln!("{ty:>6} total quantization error {err:.6} (max {max})");
        assert!(err < max, "{ty}: {err} >= {max}");
    }
    // and the error ordering makes sense: more bits, less error
    let e = |ty| array_rmse(&x, &dequant(ty, &quant(ty, &x)));
    assert!(e(GgmlType::Q8_0) < e(GgmlType::Q6_K));
    assert!(e(GgmlType::Q6_K) < e(GgmlType::Q5_K));
    assert!(e(GgmlType::Q5_K) < e(GgmlType::Q4_K));
    assert!(e(GgmlType::Q4_K) < e(GgmlType::Q3_K));
    assert!(e(GgmlType::Q3_K) < e(GgmlType::Q2_K));
}

#[test]
fn block_structs_cast_from_bytes() {
    let x = generate_data(1.0, 512);
    let bytes = quant(GgmlType::Q4_K, &x);
    let blocks: Vec<BlockQ4K> = bytes
        .chunks_exact(144)
        .map(bytemuck::pod_read_unaligned)
        .collect();
    let mut y = vec![0f32; 512];
    BlockQ4K::dequantize_row(&blocks, &mut y);
    assert_eq!(y, dequant(GgmlType::Q4_K, &bytes));
    assert_eq!(<BlockQ4K as BlockFormat>::TYPE, GgmlType::Q4_K);
    assert_eq!(BlockQ4K::BLCK, 256);
    assert_eq!(std::mem::size_of::<BlockQ8K>(), 292);
    for &ty in TYPES {
        assert!(can_quantize(ty) && can_dequantize(ty), "{ty}");
    }
}

/// splitmix64, for the SIMD-versus-scalar comparisons.
struct Mix(u64);

impl Mix {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    fn unit(&mut self) -> f32 {
        (self.next() >> 40) as f32 / (1u64 << 24) as f32
    }
}

/// Blocks of `n` floats in many regimes: weight-like values, exact ties (small multiples of
/// 0.5 and of 1/16, so that `x * id` lands on .5), constant blocks, zeros of both signs,
/// subnormals, huge values, infinities and NaNs sprinkled in at varying rates.
pub(crate) fn awkward_blocks(seed: u64, blocks: usize, n: usize) -> Vec<f32> {
    let mut r = Mix(seed);
    let mut out = Vec::with_capacity(blocks * n);
    for _ in 0..blocks {
        let regime = r.next() % 10;
        let scale = [1e-3f32, 0.05, 1.0, 300.0, 1e-40, 1e30][(r.next() % 6) as usize];
        let special_rate = [0u64, 0, 0, 2, 10, 50][(r.next() % 6) as usize];
        let constant = (r.unit() - 0.5) * scale;
        for _ in 0..n {
            let mut v = match regime {
                0..=3 => (r.unit() + r.unit() + r.unit() - 1.5) * scale,
                4 => ((r.next() % 33) as f32 - 16.0) * 0.5,
                5 => ((r.next() % 257) as f32 - 128.0) / 16.0,
                6 => constant,
                7 => f32::from_bits((r.next() as u32) & 0x807f_ffff), // subnormals and zeros
                8 => f32::from_bits(r.next() as u32),                 // any bit pattern
                _ => ((r.next() % 5) as f32 - 2.0) * scale,           // few levels, zeros
            };
            if special_rate > 0 && r.next() % 100 < special_rate {
                v = [
                    0.0,
                    -0.0,
                    f32::NAN,
                    -f32::NAN,
                    f32::INFINITY,
                    f32::NEG_INFINITY,
                    f32::MAX,
                    -f32::MAX,
                    f32::MIN_POSITIVE,
                    1e-45,
                    -1e-45,
                    2147483648.0,
                    -2147483520.0,
                ][(r.next() % 13) as usize];
            }
            out.push(v);
        }
    }
    out
}

#[cfg(target_arch = "x86_64")]
fn simd_matches_scalar<B: BlockFormat>(
    simd: unsafe fn(&[f32], &mut [B]),
    scalar: fn(&[f32], &mut [B]),
) {
    if !x86::has_avx2() {
        eprintln!("no AVX2 on this CPU: only the scalar path runs here");
        return;
    }
    for seed in 0..40u64 {
        let x = awkward_blocks(seed, 5000, B::BLCK);
        let n = x.len() / B::BLCK;
        let mut a = vec![B::zeroed(); n];
        let mut b = vec![B::zeroed(); n];
        // SAFETY: AVX2 checked above.
        unsafe { simd(&x, &mut a) };
        scalar(&x, &mut b);
        for i in 0..n {
            assert_eq!(
                bytemuck::bytes_of(&a[i]),
                bytemuck::bytes_of(&b[i]),
                "{}: seed {seed} block {i}: {:?}",
                B::TYPE,
                &x[i * B::BLCK..(i + 1) * B::BLCK]
            );
        }
    }
}

#[cfg(target_arch = "x86_64")]
#[test]
fn simd_matches_scalar_q8_0() {
    simd_matches_scalar(x86::quantize_q8_0, legacy::quantize_row_q8_0_ref);
}

#[cfg(target_arch = "x86_64")]
#[test]
fn simd_matches_scalar_q4_0() {
    simd_matches_scalar(x86::quantize_q4_0, legacy::quantize_row_q4_0_ref);
}

#[cfg(target_arch = "x86_64")]
#[test]
fn simd_matches_scalar_q4_1() {
    simd_matches_scalar(x86::quantize_q4_1, legacy::quantize_row_q4_1_ref);
}

#[cfg(target_arch = "x86_64")]
#[test]
fn simd_matches_scalar_q5_0() {
    simd_matches_scalar(x86::quantize_q5_0, legacy::quantize_row_q5_0_ref);
}

#[cfg(target_arch = "x86_64")]
#[test]
fn simd_matches_scalar_q5_1() {
    simd_matches_scalar(x86::quantize_q5_1, legacy::quantize_row_q5_1_ref);
}

#[test]
fn f16_to_f32_finite_is_exact_on_every_f16() {
    let all: Vec<half::f16> = (0..=u16::MAX).map(half::f16::from_bits).collect();
    let mut out = vec![0f32; all.len()];
    assert!(!f16_to_f32_finite(&all, &mut out)); // holds infinities and NaNs
    for (h, &f) in all.iter().zip(&out) {
        let want = h.to_f32();
        assert!(
            f.to_bits() == want.to_bits() || (f.is_nan() && want.is_nan()),
            "{:#06x}",
            h.to_bits()
        );
    }
    // the finite flag, wherever the one non-finite value sits (vector body or tail)
    for len in [1usize, 7, 8, 9, 16, 23, 64, 576] {
        let mut x: Vec<half::f16> = (0..len)
            .map(|i| half::f16::from_f32(i as f32 * 0.25 - 3.0))
            .collect();
        let mut y = vec![0f32; len];
        assert!(f16_to_f32_finite(&x, &mut y), "{len}");
        for bad in [half::f16::INFINITY, half::f16::NEG_INFINITY, half::f16::NAN] {
            for pos in [0, len / 2, len - 1] {
                let keep = x[pos];
                x[pos] = bad;
                assert!(!f16_to_f32_finite(&x, &mut y), "{len} {pos}");
                x[pos] = keep;
            }
        }
    }
}
