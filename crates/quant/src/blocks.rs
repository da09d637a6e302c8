//! ggml's block structs (`ggml-common.h`), `#[repr(C)]` and [`bytemuck::Pod`], and the
//! [`BlockFormat`] trait that every format implements.
//!
//! Field names follow ggml (`d`, `dmin`, `m`, `s`, `qh`, `qs`, `scales`, `ql`, `hmask`, `bsums`)
//! so the code reads side by side with `ggml-quants.c`. Multi-byte fields are little-endian in
//! files; like ggml, these structs assume a little-endian host.

use bytemuck::{Pod, Zeroable};
use half::f16;
use slmpack_gguf::GgmlType;

/// Super-block size of the K-quants.
pub const QK_K: usize = 256;
/// Size of the packed 6-bit scales/mins of Q4_K and Q5_K.
pub const K_SCALE_SIZE: usize = 12;
pub const QK4_0: usize = 32;
pub const QK4_1: usize = 32;
pub const QK5_0: usize = 32;
pub const QK5_1: usize = 32;
pub const QK8_0: usize = 32;
pub const QK8_1: usize = 32;
pub const QK4_NL: usize = 32;

/// A ggml storage format: `BLCK` elements packed into one `Self`.
///
/// Both functions work on whole blocks: `src`/`dst` hold `n * BLCK` floats for `n` blocks.
/// Extra floats or blocks past the shorter side are ignored (never a panic); the byte-level
/// functions of this crate check lengths and report mismatches as errors.
pub trait BlockFormat: Pod + Send + Sync {
    /// Elements per block (`blck_size`).
    const BLCK: usize;
    /// The ggml type stored in this block.
    const TYPE: GgmlType;
    /// False for the formats that are only read (none at present).
    const CAN_QUANTIZE: bool = true;
    /// Quantizes `src` into `dst`, as ggml's `quantize_row_*_ref` does.
    fn quantize_row(src: &[f32], dst: &mut [Self]);
    /// Expands `src` into `dst`, as ggml's `dequantize_row_*` does.
    fn dequantize_row(src: &[Self], dst: &mut [f32]);
}

macro_rules! block {
    ($(#[$m:meta])* $name:ident ($ty:ident, $size:expr) { $($(#[$fm:meta])* $f:ident : $t:ty),* $(,)? }) => {
        $(#[$m])*
        #[allow(non_camel_case_types)]
        #[repr(C)]
        #[derive(Clone, Copy, Debug, PartialEq, Pod, Zeroable)]
        pub struct $name { $($(#[$fm])* pub $f: $t),* }
        const _: () = assert!(std::mem::size_of::<$name>() == $size);
        const _: () = assert!(GgmlType::$ty.type_size() == $size);
    };
}

block!(/// `block_q4_0`: 32 weights as 4-bit `q - 8`, times `d`.
    BlockQ4_0 (Q4_0, 18) { d: f16, /** nibbles: element j low, j+16 high */ qs: [u8; QK4_0 / 2] });
block!(/// `block_q4_1`: 32 weights as `d * q + m`, q 4-bit.
    BlockQ4_1 (Q4_1, 20) { d: f16, m: f16, qs: [u8; QK4_1 / 2] });
block!(/// `block_q5_0`: 32 weights as 5-bit `q - 16`, times `d`; bit 4 of each in `qh`.
    BlockQ5_0 (Q5_0, 22) { d: f16, qh: [u8; 4], qs: [u8; QK5_0 / 2] });
block!(/// `block_q5_1`: 32 weights as `d * q + m`, q 5-bit.
    BlockQ5_1 (Q5_1, 24) { d: f16, m: f16, qh: [u8; 4], qs: [u8; QK5_1 / 2] });
block!(/// `block_q8_0`: 32 weights as `d * qs`.
    BlockQ8_0 (Q8_0, 34) { d: f16, qs: [i8; QK8_0] });
block!(/// `block_q8_1`: like Q8_0 plus `s = d * sum(qs)` (an activation format).
    BlockQ8_1 (Q8_1, 36) { d: f16, s: f16, qs: [i8; QK8_1] });
block!(/// `block_q2_K`: 16 sub-blocks of 16, 2-bit quants, 4-bit scales and mins.
    BlockQ2K (Q2_K, 84) { scales: [u8; QK_K / 16], qs: [u8; QK_K / 4], d: f16, dmin: f16 });
block!(/// `block_q3_K`: 16 sub-blocks of 16, 3-bit quants (high bit in `hmask`), 6-bit scales.
    BlockQ3K (Q3_K, 110) { hmask: [u8; QK_K / 8], qs: [u8; QK_K / 4], scales: [u8; 12], d: f16 });
block!(/// `block_q4_K`: 8 sub-blocks of 32, 4-bit quants, 6-bit scales and mins.
    BlockQ4K (Q4_K, 144) { d: f16, dmin: f16, scales: [u8; K_SCALE_SIZE], qs: [u8; QK_K / 2] });
block!(/// `block_q5_K`: 8 sub-blocks of 32, 5-bit quants, 6-bit scales and mins.
    BlockQ5K (Q5_K, 176) { d: f16, dmin: f16, scales: [u8; K_SCALE_SIZE], qh: [u8; QK_K / 8], qs: [u8; QK_K / 2] });
block!(/// `block_q6_K`: 16 sub-blocks of 16, 6-bit quants, 8-bit scales.
    BlockQ6K (Q6_K, 210) { ql: [u8; QK_K / 2], qh: [u8; QK_K / 4], scales: [i8; QK_K / 16], d: f16 });
block!(/// `block_q8_K`: 256 8-bit quants with an f32 scale and sums of each 16 (activations).
    BlockQ8K (Q8_K, 292) { d: f32, qs: [i8; QK_K], bsums: [i16; QK_K / 16] });
block!(/// `block_iq4_nl`: 32 weights as `d * kvalues_iq4nl[q]`, q 4-bit.
    BlockIQ4NL (IQ4_NL, 18) { d: f16, qs: [u8; QK4_NL / 2] });

impl BlockFormat for f32 {
    const BLCK: usize = 1;
    const TYPE: GgmlType = GgmlType::F32;
    fn quantize_row(src: &[f32], dst: &mut [Self]) {
        let n = src.len().min(dst.len());
        dst[..n].copy_from_slice(&src[..n]);
    }
    fn dequantize_row(src: &[Self], dst: &mut [f32]) {
        let n = src.len().min(dst.len());
        dst[..n].copy_from_slice(&src[..n]);
    }
}

impl BlockFormat for f16 {
    const BLCK: usize = 1;
    const TYPE: GgmlType = GgmlType::F16;
    fn quantize_row(src: &[f32], dst: &mut [Self]) {
        for (d, &s) in dst.iter_mut().zip(src) {
            *d = crate::fp32_to_fp16(s);
        }
    }
    fn dequantize_row(src: &[Self], dst: &mut [f32]) {
        for (d, &s) in dst.iter_mut().zip(src) {
            *d = crate::fp16_to_fp32(s);
        }
    }
}

impl BlockFormat for half::bf16 {
    const BLCK: usize = 1;
    const TYPE: GgmlType = GgmlType::BF16;
    fn quantize_row(src: &[f32], dst: &mut [Self]) {
        for (d, &s) in dst.iter_mut().zip(src) {
            *d = crate::fp32_to_bf16(s);
        }
    }
    fn dequantize_row(src: &[Self], dst: &mut [f32]) {
        for (d, &s) in dst.iter_mut().zip(src) {
            *d = crate::bf16_to_fp32(s);
        }
    }
}

/// `kvalues_iq4nl`: the 16 non-linear levels of IQ4_NL (and IQ4_XS).
pub const KVALUES_IQ4NL: [i8; 16] = [
    -127, -104, -83, -65, -49, -35, -22, -10, 1, 13, 25, 38, 53, 69, 89, 113,
];
