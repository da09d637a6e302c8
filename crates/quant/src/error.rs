/// Errors from the quantizers: unsupported types and buffers of the wrong size.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum QuantError {
    #[error("slmpack cannot quantize to `{ty}`\n  hint: slmpack quantizes to f32, f16, bf16, q8_0, q4_0, q4_1, q5_0, q5_1, q8_1, q2_K, q3_K, q4_K, q5_K, q6_K, q8_K and iq4_nl")]
    CannotQuantize { ty: &'static str },

    #[error("slmpack cannot read `{ty}` data\n  hint: slmpack reads f32, f16, bf16, q8_0, q4_0, q4_1, q5_0, q5_1, q8_1, q2_K, q3_K, q4_K, q5_K, q6_K, q8_K and iq4_nl")]
    CannotDequantize { ty: &'static str },

    #[error("row length {len} is not a multiple of `{ty}`'s block size {block}\n  hint: keep this tensor in a type with a smaller block (q8_0, f16), as llama-quantize does")]
    RowLength {
        ty: &'static str,
        len: usize,
        block: usize,
    },

    #[error("{len} elements do not split into rows of {row_len}")]
    Ragged { len: usize, row_len: usize },

    #[error(
        "`{ty}` output for {elements} elements needs {expected} bytes, but the buffer has {got}"
    )]
    OutputBytes {
        ty: &'static str,
        elements: usize,
        got: usize,
        expected: usize,
    },

    #[error("`{ty}` data of {len} bytes is not a whole number of {size}-byte blocks\n  hint: the tensor data is truncated or its type is wrong")]
    InputBytes {
        ty: &'static str,
        len: usize,
        size: usize,
    },

    #[error(
        "{bytes} bytes of `{ty}` data hold {expected} elements, but the output has room for {got}"
    )]
    OutputElements {
        ty: &'static str,
        bytes: usize,
        got: usize,
        expected: usize,
    },
}
