//! Anonymous memory on transparent huge pages, for data the kernels stream: repacked weights
//! ([`crate::packed::pack_many`]) and the runtime's KV cache.
//!
//! Why: one core reading a buffer front to back on this project's reference host (AMD EPYC,
//! Zen 4) reads 17-26 GB/s from 4 KiB pages and 29-33 GB/s from 2 MiB pages, depending on the
//! moment (`benches/stream.rs`; `docs/performance.md`). The hardware prefetchers stop at each
//! 4 KiB page and every page costs a TLB walk. One-thread decode, which streams ~100 MB of
//! weights a token, ran 33-45% faster with its repacked weights here.
//!
//! The mapping is over-allocated by one huge page and the buffer starts at the first 2 MiB
//! boundary inside it, so the kernel can back every whole 2 MiB of it with one page (it only
//! does so for aligned ranges). Where transparent huge pages are off (or on other systems) the
//! advice is refused and the buffer is plain anonymous memory: the same bytes, only slower.

use std::io;

/// The huge page size asked for (x86-64 and most aarch64 kernels).
pub const HUGE_PAGE: usize = 2 << 20;

/// A zeroed, writable buffer of anonymous memory with transparent huge pages asked for.
pub struct HugeBuf {
    map: memmap2::MmapMut,
    at: usize,
    len: usize,
}

impl HugeBuf {
    /// `len` zero bytes, 2 MiB-aligned when `len` is a huge page or more (4 KiB-aligned below
    /// that: a smaller buffer cannot fill a huge page, so it takes no padding). The pages are
    /// not touched: each is faulted in (and, where the kernel can, backed by a huge page) when
    /// first written or read; see [`HugeBuf::prefault`].
    ///
    /// # Errors
    /// If the system refuses the mapping (out of address space or memory).
    pub fn zeroed(len: usize) -> io::Result<HugeBuf> {
        let pad = if len >= HUGE_PAGE { HUGE_PAGE } else { 0 };
        let map = memmap2::MmapMut::map_anon((len + pad).max(1))?;
        let at = map
            .as_ptr()
            .align_offset(if pad > 0 { HUGE_PAGE } else { 1 });
        // best effort: a kernel without transparent huge pages refuses the advice
        #[cfg(target_os = "linux")]
        let _ = map.advise(memmap2::Advice::HugePage);
        Ok(HugeBuf { map, at, len })
    }

    /// Touches every page, so the page faults happen now (at load time) rather than in the
    /// first pass of the kernels over the buffer.
    pub fn prefault(&mut self) {
        for i in (0..self.len).step_by(4096) {
            // SAFETY: i < len, inside the buffer; a volatile write of the zero already there,
            // so the page is really touched
            unsafe { std::ptr::write_volatile(self.as_mut_ptr().add(i), 0) };
        }
    }
}

impl std::ops::Deref for HugeBuf {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        &self.map[self.at..self.at + self.len]
    }
}

impl std::ops::DerefMut for HugeBuf {
    fn deref_mut(&mut self) -> &mut [u8] {
        &mut self.map[self.at..self.at + self.len]
    }
}

impl std::fmt::Debug for HugeBuf {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "HugeBuf({} bytes at {:p})", self.len, self.as_ptr())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zeroed_aligned_and_writable() {
        for len in [
            0,
            1,
            4095,
            4096,
            HUGE_PAGE - 1,
            HUGE_PAGE,
            3 * HUGE_PAGE + 17,
        ] {
            let mut b = HugeBuf::zeroed(len).unwrap();
            assert_eq!(b.len(), len);
            assert!(b.iter().all(|&v| v == 0), "{len}");
            if len >= HUGE_PAGE {
                assert_eq!(b.as_ptr() as usize % HUGE_PAGE, 0, "{len}");
            } else {
                assert_eq!(b.as_ptr() as usize % 4096, 0, "{len}");
            }
            b.prefault();
            for (i, v) in b.iter_mut().enumerate() {
                *v = i as u8;
            }
            assert!(b.iter().enumerate().all(|(i, &v)| v == i as u8), "{len}");
        }
    }
}
