//! A weight matrix that stays in its GGUF type, borrowed from the memory-mapped file.

use std::sync::Arc;

use slmpack_gguf::GgmlType;
use slmpack_kernels::packed::Packed;

/// A 2-D weight in ggml layout: `rows` rows of `cols` elements, each row `row_bytes` bytes of
/// blocks of type `ty`. `data` points into the memory-mapped GGUF (no copy); `packed` is the
/// copy the model made at load time, in the kernels' 8-row interleaved layout or (a type
/// without one) as it is, on huge pages (matrix products then use it; row lookups still read
/// `data`).
#[derive(Debug, Clone)]
pub struct QTensor<'a> {
    pub name: &'a str,
    pub ty: GgmlType,
    pub cols: usize,
    pub rows: usize,
    pub row_bytes: usize,
    pub data: &'a [u8],
    pub packed: Option<Arc<Packed>>,
}

impl<'a> QTensor<'a> {
    /// The bytes of row `r`.
    #[inline]
    pub fn row(&self, r: usize) -> &'a [u8] {
        &self.data[r * self.row_bytes..(r + 1) * self.row_bytes]
    }
}
