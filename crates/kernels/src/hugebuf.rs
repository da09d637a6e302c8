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

impl HugeBuf {
    /// About how many bytes of this buffer the kernel backs with huge pages now: its mapping's
    /// `AnonHugePages` in `/proc/self/smaps` (Linux), at most the buffer's length (a huge page
    /// holding the buffer's last bytes counts whole). `None` where that cannot be read (other
    /// systems, no `/proc`). `Some(0)` means the buffer runs on small pages: transparent huge
    /// pages off (`/sys/kernel/mm/transparent_hugepage/enabled` is `never`), or none free.
    pub fn huge_bytes(&self) -> Option<usize> {
        let smaps = std::fs::read_to_string("/proc/self/smaps").ok()?;
        huge_bytes_in(&smaps, self.map.as_ptr() as usize).map(|h| h.min(self.len))
    }
}

/// The `AnonHugePages` (bytes) of the mapping holding address `at`, from the text of an
/// `smaps` file.
fn huge_bytes_in(smaps: &str, at: usize) -> Option<usize> {
    let mut inside = false;
    for line in smaps.lines() {
        let first = line.split_whitespace().next().unwrap_or("");
        if let Some((lo, hi)) = first.split_once('-') {
            if let (Ok(lo), Ok(hi)) = (usize::from_str_radix(lo, 16), usize::from_str_radix(hi, 16))
            {
                inside = (lo..hi).contains(&at);
                continue;
            }
        }
        if inside {
            if let Some(v) = line.strip_prefix("AnonHugePages:") {
                let kb: usize = v.trim().trim_end_matches("kB").trim().parse().ok()?;
                return Some(kb * 1024);
            }
        }
    }
    None
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
    fn huge_bytes_are_read_from_the_mapping_holding_the_buffer() {
        let smaps = "\
55d0c0a00000-55d0c0c00000 r--p 00000000 08:01 123   /usr/bin/slmpack
Size:               2048 kB
AnonHugePages:      4096 kB
7f1200000000-7f1206400000 rw-p 00000000 00:00 0
Size:             102400 kB
Rss:               98304 kB
AnonHugePages:     96256 kB
THPeligible:    1
7f1300000000-7f1300001000 rw-p 00000000 00:00 0
AnonHugePages:         0 kB
";
        assert_eq!(huge_bytes_in(smaps, 0x7f1200000000), Some(96256 * 1024));
        assert_eq!(huge_bytes_in(smaps, 0x7f12063fffff), Some(96256 * 1024));
        assert_eq!(huge_bytes_in(smaps, 0x7f1300000010), Some(0));
        assert_eq!(huge_bytes_in(smaps, 0x7f1206400000), None);
        assert_eq!(huge_bytes_in("", 0x1000), None);
        // the real file: a buffer of this process is found (huge pages or not)
        if std::path::Path::new("/proc/self/smaps").exists() {
            let mut b = HugeBuf::zeroed(4 * HUGE_PAGE).unwrap();
            b.prefault();
            let h = b.huge_bytes().expect("the buffer's mapping is in smaps");
            assert!(h <= 5 * HUGE_PAGE, "{h}");
        }
    }

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
