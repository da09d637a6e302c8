//! A weight matrix that stays in its GGUF type, borrowed from the memory-mapped file.

use slmpack_gguf::GgmlType;

/// A 2-D weight in ggml layout: `rows` rows of `cols` elements, each row `row_bytes` bytes of
/// blocks of type `ty`. `data` points into the memory-mapped GGUF (no copy).
#[derive(Debug, Clone, Copy)]
pub struct QTensor<'a> {
    pub name: &'a str,
    pub ty: GgmlType,
    pub cols: usize,
    pub rows: usize,
    pub row_bytes: usize,
    pub data: &'a [u8],
}

impl<'a> QTensor<'a> {
    /// The bytes of row `r`.
    #[inline]
    pub fn row(&self, r: usize) -> &'a [u8] {
        &self.data[r * self.row_bytes..(r + 1) * self.row_bytes]
    }
}
