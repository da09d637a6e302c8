//! TEMPORARY placeholder for branch `quant` (replaced at merge): F32/F16/BF16/Q8_0 only.
use rayon::prelude::*;
use slmpack_gguf::GgmlType;

#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct QuantError(pub String);

pub fn can_quantize(ty: GgmlType) -> bool {
    matches!(ty, GgmlType::F32 | GgmlType::F16 | GgmlType::BF16 | GgmlType::Q8_0)
}
pub fn can_dequantize(ty: GgmlType) -> bool {
    can_quantize(ty)
}

pub fn quantize_row(ty: GgmlType, src: &[f32], dst: &mut [u8]) -> Result<(), QuantError> {
    match ty {
        GgmlType::F32 => {
            for (d, s) in dst.chunks_exact_mut(4).zip(src) {
                d.copy_from_slice(&s.to_le_bytes());
            }
        }
        GgmlType::F16 => {
            for (d, s) in dst.chunks_exact_mut(2).zip(src) {
                d.copy_from_slice(&half::f16::from_f32(*s).to_le_bytes());
            }
        }
        GgmlType::BF16 => {
            for (d, s) in dst.chunks_exact_mut(2).zip(src) {
                d.copy_from_slice(&half::bf16::from_f32(*s).to_le_bytes());
            }
        }
        GgmlType::Q8_0 => {
            for (b, x) in dst.chunks_exact_mut(34).zip(src.chunks_exact(32)) {
                let amax = x.iter().fold(0f32, |m, v| m.max(v.abs()));
                let d = amax / 127.0;
                let id = if d != 0.0 { 1.0 / d } else { 0.0 };
                b[..2].copy_from_slice(&half::f16::from_f32(d).to_le_bytes());
                for j in 0..32 {
                    b[2 + j] = (x[j] * id).round() as i8 as u8;
                }
            }
        }
        _ => return Err(QuantError(format!("{ty} not supported yet"))),
    }
    Ok(())
}

pub fn dequantize_row(ty: GgmlType, src: &[u8], dst: &mut [f32]) -> Result<(), QuantError> {
    match ty {
        GgmlType::F32 => {
            for (d, s) in dst.iter_mut().zip(src.chunks_exact(4)) {
                *d = f32::from_le_bytes([s[0], s[1], s[2], s[3]]);
            }
        }
        GgmlType::F16 => {
            for (d, s) in dst.iter_mut().zip(src.chunks_exact(2)) {
                *d = half::f16::from_le_bytes([s[0], s[1]]).to_f32();
            }
        }
        GgmlType::BF16 => {
            for (d, s) in dst.iter_mut().zip(src.chunks_exact(2)) {
                *d = half::bf16::from_le_bytes([s[0], s[1]]).to_f32();
            }
        }
        GgmlType::Q8_0 => {
            for (b, y) in src.chunks_exact(34).zip(dst.chunks_exact_mut(32)) {
                let d = half::f16::from_le_bytes([b[0], b[1]]).to_f32();
                for j in 0..32 {
                    y[j] = b[2 + j] as i8 as f32 * d;
                }
            }
        }
        _ => return Err(QuantError(format!("{ty} not supported yet"))),
    }
    Ok(())
}

pub fn quantize(ty: GgmlType, src: &[f32], row_len: usize, dst: &mut [u8]) -> Result<(), QuantError> {
    let rb = ty.row_bytes(row_len as u64).unwrap() as usize;
    src.par_chunks(row_len)
        .zip(dst.par_chunks_mut(rb))
        .try_for_each(|(s, d)| quantize_row(ty, s, d))
}

pub fn dequantize(ty: GgmlType, src: &[u8], dst: &mut [f32]) -> Result<(), QuantError> {
    dequantize_row(ty, src, dst)
}
