//! Fixtures shared by the kernel test binaries.

#![allow(dead_code)] // each test binary uses its own subset

use slmpack_kernels::{vec, Isa};

/// `n` pseudo-random values in `[-scale, scale)`, the same for the same seed.
pub fn values(n: usize, seed: u64, scale: f32) -> Vec<f32> {
    let mut s = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    (0..n)
        .map(|_| {
            s = s
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((s >> 40) as f32 / (1u64 << 24) as f32 - 0.5) * 2.0 * scale
        })
        .collect()
}

/// `x` rounded to f16 bits by the portable reference.
pub fn f16s(x: &[f32]) -> Vec<u16> {
    let mut h = vec![0u16; x.len()];
    vec::to_f16_isa(Isa::Scalar, x, &mut h);
    h
}
