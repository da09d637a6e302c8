//! Block formats and quantizers, byte for byte as ggml defines them.
//!
//! Every quantizer is a line-by-line port of ggml's reference code (`quantize_row_*_ref` in
//! `ggml-quants.c`, and `quantize_iq4_nl` without an importance matrix), with the same float
//! operations in the same order, so a tensor quantized here is bit-identical to what
//! `llama-quantize` writes without `--imatrix`. Dequantizers port `dequantize_row_*`.
//!
//! The byte-level API ([`quantize_row`], [`dequantize_row`], [`quantize`], [`dequantize`]) takes
//! any byte slice: block structs are 2- or 4-aligned, and GGUF data is only aligned at tensor
//! starts, so misaligned buffers are handled by copying through a small aligned buffer (no
//! allocation, no unsafe code). Typed access for kernels lives in [`blocks`].
//!
//! NaN and infinity inputs never panic. ggml's C code leaves some of these cases undefined
//! (float-to-int casts of NaN and out-of-range values); slmpack defines them the way x86-64
//! builds of ggml behave (`cvttss2si`: `INT_MIN`, then truncation to 8 bits), so NaN, ±inf,
//! ±`f32::MAX` and subnormal inputs give the same bytes as llama.cpp's ggml (tested). The one
//! known exception: Q2_K/Q4_K/Q5_K blocks where a NaN carrying a payload meets the `inf * 0`
//! NaNs of an overflowed scale, because which NaN survives an addition depends on the
//! compiler's operand order (C's, and ours in vector code). F16 writes NaN as the quiet NaN
//! `0x7e00` (sign kept), as ggml does; BF16 keeps the upper payload bits and sets the quiet bit.
//!
//! On x86-64 CPUs with AVX2 (detected at run time) the 32-element formats and the K-quant
//! scale searches run vectorized code (`x86.rs`, the `avx2` module of `k_quants.rs`) that does
//! the scalar code's float operations in the same order per element or sub-block, so the bytes
//! do not depend on the CPU; the scalar ports remain the reference and the fallback.

pub mod blocks;
mod error;
mod fp;
mod k_quants;
mod legacy;
#[cfg(target_arch = "x86_64")]
mod x86;

use blocks::*;
pub use error::QuantError;
pub use fp::{bf16_to_fp32, fp16_to_fp32, fp32_to_bf16, fp32_to_fp16};
pub use k_quants::get_scale_min_k4;
use rayon::prelude::*;
pub use slmpack_gguf::GgmlType;

/// Calls `$body` with `$B` bound to the block struct of `$ty`, or evaluates `$none` if the type
/// has no block format here.
macro_rules! with_block {
    ($ty:expr, $B:ident => $body:expr, _ => $none:expr) => {
        match $ty {
            GgmlType::F32 => {
                type $B = f32;
                $body
            }
            GgmlType::F16 => {
                type $B = half::f16;
                $body
            }
            GgmlType::BF16 => {
                type $B = half::bf16;
                $body
            }
            GgmlType::Q4_0 => {
                type $B = BlockQ4_0;
                $body
            }
            GgmlType::Q4_1 => {
                type $B = BlockQ4_1;
                $body
            }
            GgmlType::Q5_0 => {
                type $B = BlockQ5_0;
                $body
            }
            GgmlType::Q5_1 => {
                type $B = BlockQ5_1;
                $body
            }
            GgmlType::Q8_0 => {
                type $B = BlockQ8_0;
                $body
            }
            GgmlType::Q8_1 => {
                type $B = BlockQ8_1;
                $body
            }
            GgmlType::Q2_K => {
                type $B = BlockQ2K;
                $body
            }
            GgmlType::Q3_K => {
                type $B = BlockQ3K;
                $body
            }
            GgmlType::Q4_K => {
                type $B = BlockQ4K;
                $body
            }
            GgmlType::Q5_K => {
                type $B = BlockQ5K;
                $body
            }
            GgmlType::Q6_K => {
                type $B = BlockQ6K;
                $body
            }
            GgmlType::Q8_K => {
                type $B = BlockQ8K;
                $body
            }
            GgmlType::IQ4_NL => {
                type $B = BlockIQ4NL;
                $body
            }
            _ => $none,
        }
    };
}

/// True if [`quantize_row`] / [`quantize`] can produce `ty`.
pub fn can_quantize(ty: GgmlType) -> bool {
    with_block!(ty, B => B::CAN_QUANTIZE, _ => false)
}

/// True if [`dequantize_row`] / [`dequantize`] can read `ty`.
pub fn can_dequantize(ty: GgmlType) -> bool {
    with_block!(ty, B => { let _ = B::BLCK; true }, _ => false)
}

/// Widens F16 values to f32 (exactly, as `GGML_FP16_TO_FP32`) and tells whether all of them
/// are finite, in one pass (F16C/AVX2 when the CPU has them). Converts
/// `min(src.len(), dst.len())` values.
pub fn f16_to_f32_finite(src: &[half::f16], dst: &mut [f32]) -> bool {
    #[cfg(target_arch = "x86_64")]
    if x86::has_avx2() && std::arch::is_x86_feature_detected!("f16c") {
        // SAFETY: the CPU has AVX2 and F16C (checked just above).
        return unsafe { x86::f16_to_f32_finite(src, dst) };
    }
    let mut all = true;
    for (d, s) in dst.iter_mut().zip(src) {
        *d = s.to_f32();
        all &= d.is_finite();
    }
    all
}

/// Quantizes `src` (a row, or several rows back to back) to `ty`.
///
/// `src.len()` must be a multiple of `ty.block_size()` and `dst.len()` must equal
/// `ty.row_bytes(src.len())`.
pub fn quantize_row(ty: GgmlType, src: &[f32], dst: &mut [u8]) -> Result<(), QuantError> {
    check_quantize(ty, src.len(), src.len(), dst.len())?;
    with_block!(ty, B => quantize_bytes::<B>(src, dst), _ => unreachable!("checked above"));
    Ok(())
}

/// Dequantizes `src` (whole blocks of `ty`) into `dst`, which must hold exactly the number of
/// elements `src` encodes.
pub fn dequantize_row(ty: GgmlType, src: &[u8], dst: &mut [f32]) -> Result<(), QuantError> {
    check_dequantize(ty, src.len(), dst.len())?;
    with_block!(ty, B => dequantize_bytes::<B>(src, dst), _ => unreachable!("checked above"));
    Ok(())
}

/// Quantizes a whole tensor of rows of `row_len` elements, in parallel over rows (rayon).
///
/// Rows are independent in every ggml format, so the bytes equal [`quantize_row`] on the whole
/// buffer; the row structure only decides how work is split.
pub fn quantize(
    ty: GgmlType,
    src: &[f32],
    row_len: usize,
    dst: &mut [u8],
) -> Result<(), QuantError> {
    check_quantize(ty, src.len(), row_len, dst.len())?;
    if src.is_empty() {
        return Ok(());
    }
    let row_bytes = row_len / ty.block_size() * ty.type_size();
    // Group rows so that each task has at least ~64 KiB of input: tiny rows (norm weights,
    // 1-D tensors) would otherwise drown in scheduling overhead.
    let rows_per_task = (16384 / row_len).max(1);
    with_block!(ty, B => {
        src.par_chunks(row_len * rows_per_task)
            .zip(dst.par_chunks_mut(row_bytes * rows_per_task))
            .for_each(|(s, d)| quantize_bytes::<B>(s, d))
    }, _ => unreachable!("checked above"));
    Ok(())
}

/// Dequantizes a whole tensor, in parallel (rayon). `dst.len()` must be the element count that
/// `src` encodes.
pub fn dequantize(ty: GgmlType, src: &[u8], dst: &mut [f32]) -> Result<(), QuantError> {
    check_dequantize(ty, src.len(), dst.len())?;
    if dst.is_empty() {
        return Ok(());
    }
    // ~16K elements per task, in whole blocks
    let blocks_per_task = (16384 / ty.block_size()).max(1);
    with_block!(ty, B => {
        src.par_chunks(blocks_per_task * ty.type_size())
            .zip(dst.par_chunks_mut(blocks_per_task * ty.block_size()))
            .for_each(|(s, d)| dequantize_bytes::<B>(s, d))
    }, _ => unreachable!("checked above"));
    Ok(())
}

fn check_quantize(
    ty: GgmlType,
    n: usize,
    row_len: usize,
    dst_len: usize,
) -> Result<(), QuantError> {
    if !can_quantize(ty) {
        return Err(QuantError::CannotQuantize { ty: ty.name() });
    }
    let blck = ty.block_size();
    if row_len == 0 && n != 0 {
        return Err(QuantError::RowLength {
            ty: ty.name(),
            len: 0,
            block: blck,
        });
    }
    if !row_len.is_multiple_of(blck) {
        return Err(QuantError::RowLength {
            ty: ty.name(),
            len: row_len,
            block: blck,
        });
    }
    if row_len != 0 && !n.is_multiple_of(row_len) {
        return Err(QuantError::Ragged { len: n, row_len });
    }
    let expected = n / blck * ty.type_size();
    if dst_len != expected {
        return Err(QuantError::OutputBytes {
            ty: ty.name(),
            elements: n,
            got: dst_len,
            expected,
        });
    }
    Ok(())
}

fn check_dequantize(ty: GgmlType, src_len: usize, dst_len: usize) -> Result<(), QuantError> {
    if !can_dequantize(ty) {
        return Err(QuantError::CannotDequantize { ty: ty.name() });
    }
    let size = ty.type_size();
    if !src_len.is_multiple_of(size) {
        return Err(QuantError::InputBytes {
            ty: ty.name(),
            len: src_len,
            size,
        });
    }
    let expected = src_len / size * ty.block_size();
    if dst_len != expected {
        return Err(QuantError::OutputElements {
            ty: ty.name(),
            bytes: src_len,
            got: dst_len,
            expected,
        });
    }
    Ok(())
}

/// Blocks staged per round when the byte buffer is not aligned for `B`.
const STAGE: usize = 8;

/// `src.len() == n * B::BLCK`, `dst.len() == n * size_of::<B>()` (checked by the callers).
fn quantize_bytes<B: BlockFormat>(src: &[f32], dst: &mut [u8]) {
    match bytemuck::try_cast_slice_mut::<u8, B>(dst) {
        Ok(blocks) => B::quantize_row(src, blocks),
        Err(_) => {
            let mut stage = [B::zeroed(); STAGE];
            let bs = std::mem::size_of::<B>();
            for (s, d) in src.chunks(STAGE * B::BLCK).zip(dst.chunks_mut(STAGE * bs)) {
                let n = s.len() / B::BLCK;
                B::quantize_row(s, &mut stage[..n]);
                d.copy_from_slice(bytemuck::cast_slice(&stage[..n]));
            }
        }
    }
}

/// `src.len() == n * size_of::<B>()`, `dst.len() == n * B::BLCK` (checked by the callers).
fn dequantize_bytes<B: BlockFormat>(src: &[u8], dst: &mut [f32]) {
    match bytemuck::try_cast_slice::<u8, B>(src) {
        Ok(blocks) => B::dequantize_row(blocks, dst),
        Err(_) => {
            let mut stage = [B::zeroed(); STAGE];
            let bs = std::mem::size_of::<B>();
            for (s, d) in src.chunks(STAGE * bs).zip(dst.chunks_mut(STAGE * B::BLCK)) {
                let n = s.len() / bs;
                for (blk, bytes) in stage.iter_mut().zip(s.chunks_exact(bs)) {
                    *blk = bytemuck::pod_read_unaligned(bytes);
                }
                B::dequantize_row(&stage[..n], d);
            }
        }
    }
}

#[cfg(test)]
mod tests;
