use slmpack_gguf::{GgmlType, GgufError, GgufFile, GgufWriter, Value, ValueType};
use std::io::Write;

fn sample(dir: &std::path::Path) -> std::path::PathBuf {
    let mut w = GgufWriter::new();
    w.set("general.architecture", "llama");
    w.set("llama.block_count", 2u32);
    w.set("llama.rope.freq_base", 10000.0f32);
    w.set("tokenizer.ggml.tokens", Value::strings(["<s>", "a", "b"]));
    w.set(
        "tokenizer.ggml.token_type",
        Value::array(
            ValueType::I32,
            vec![Value::I32(3), Value::I32(1), Value::I32(1)],
        ),
    );
    w.add_tensor("a", vec![32, 3], GgmlType::Q8_0).unwrap();
    w.add_tensor("b", vec![5], GgmlType::F32).unwrap();
    let p = dir.join("x.gguf");
    w.write(&p, |i, t, out: &mut dyn Write| {
        out.write_all(&vec![i as u8 + 1; t.n_bytes() as usize])
    })
    .unwrap();
    p
}

#[test]
fn write_then_read() {
    let d = tempfile::tempdir().unwrap();
    let p = sample(d.path());
    let f = GgufFile::open(&p).unwrap();
    assert_eq!(f.version, 3);
    assert_eq!(f.architecture(), Some("llama"));
    assert_eq!(f.get_u64("llama.block_count"), Some(2));
    assert_eq!(f.get_u64("general.alignment"), Some(32));
    let (t, data) = f.tensor_bytes("a").unwrap();
    assert_eq!(t.dims, vec![32, 3]);
    assert_eq!(data.len(), 34 * 3);
    assert!(data.iter().all(|&b| b == 1));
    let (t, data) = f.tensor_bytes("b").unwrap();
    assert_eq!(t.offset % 32, 0);
    assert_eq!(data, &[2u8; 20][..]);
    // no temp file left behind
    assert_eq!(std::fs::read_dir(d.path()).unwrap().count(), 1);
}

#[test]
fn every_truncation_is_an_error_not_a_panic() {
    let d = tempfile::tempdir().unwrap();
    let p = sample(d.path());
    let bytes = std::fs::read(&p).unwrap();
    let f = GgufFile::open(&p).unwrap();
    let end = f.data_offset + f.tensor("b").unwrap().offset + 20;
    drop(f);
    // only the trailing alignment padding may be cut
    for cut in 0..end as usize {
        let q = d.path().join("cut.gguf");
        std::fs::write(&q, &bytes[..cut]).unwrap();
        let r = GgufFile::open(&q);
        assert!(
            r.is_err(),
            "a file cut at {cut} of {} was accepted",
            bytes.len()
        );
    }
}

#[test]
fn hostile_counts_are_capped_before_allocating() {
    let d = tempfile::tempdir().unwrap();
    let q = d.path().join("h.gguf");
    let mut b = b"GGUF".to_vec();
    b.extend(3u32.to_le_bytes());
    b.extend(0u64.to_le_bytes());
    b.extend(1u64.to_le_bytes());
    // key "k", array of u64::MAX strings
    b.extend(1u64.to_le_bytes());
    b.extend(b"k");
    b.extend(9u32.to_le_bytes());
    b.extend(8u32.to_le_bytes());
    b.extend(u64::MAX.to_le_bytes());
    std::fs::write(&q, &b).unwrap();
    let e = GgufFile::open(&q).unwrap_err();
    assert!(matches!(e, GgufError::Malformed { .. }), "{e}");

    let mut b = b"GGUF".to_vec();
    b.extend(3u32.to_le_bytes());
    b.extend(u64::MAX.to_le_bytes());
    b.extend(0u64.to_le_bytes());
    std::fs::write(&q, &b).unwrap();
    assert!(GgufFile::open(&q).is_err());

    std::fs::write(&q, b"GGML\x03\0\0\0").unwrap();
    let e = GgufFile::open(&q).unwrap_err();
    assert!(matches!(e, GgufError::BadMagic { .. }));
    assert!(e.to_string().contains("hint:"));
}

/// [`sample`] with tensor `b`'s offset (the last 8 bytes of the header before padding) set to
/// `offset`, written next to it.
fn sample_with_offset_of_b(dir: &std::path::Path, offset: u64) -> std::path::PathBuf {
    let p = sample(dir);
    let mut bytes = std::fs::read(&p).unwrap();
    let needle = GgufFile::open(&p)
        .unwrap()
        .tensor("b")
        .unwrap()
        .offset
        .to_le_bytes();
    let pos = bytes.windows(8).rposition(|w| w == needle).unwrap();
    bytes[pos..pos + 8].copy_from_slice(&offset.to_le_bytes());
    let q = dir.join("o.gguf");
    std::fs::write(&q, &bytes).unwrap();
    q
}

#[test]
fn overlapping_tensors_are_rejected() {
    let d = tempfile::tempdir().unwrap();
    let q = sample_with_offset_of_b(d.path(), 32);
    let e = GgufFile::open(&q).unwrap_err().to_string();
    assert!(e.contains("overlaps"), "{e}");
}

#[test]
fn a_tensor_offset_near_the_top_of_u64_is_an_error_not_a_panic() {
    // found by `mutated_gguf_never_panics`: an (aligned) offset whose end fits in u64 but
    // whose position in the file (after the header) does not
    let d = tempfile::tempdir().unwrap();
    let q = sample_with_offset_of_b(d.path(), u64::MAX - 63);
    let e = GgufFile::open(&q).unwrap_err();
    assert!(matches!(e, GgufError::Truncated { .. }), "{e}");
    assert!(e.to_string().contains("`b`"), "{e}");
}

#[test]
fn failed_producer_leaves_nothing() {
    let d = tempfile::tempdir().unwrap();
    let mut w = GgufWriter::new();
    w.add_tensor("a", vec![4], GgmlType::F32).unwrap();
    let p = d.path().join("y.gguf");
    let r = w.write(&p, |_, _, out: &mut dyn Write| out.write_all(&[0u8; 3]));
    assert!(matches!(r, Err(GgufError::DataSize { .. })));
    assert_eq!(std::fs::read_dir(d.path()).unwrap().count(), 0);
}

/// Resident kB of this process's map of `path` (Linux: `/proc/self/smaps`).
#[cfg(target_os = "linux")]
fn mapped_rss_kb(path: &std::path::Path) -> u64 {
    let smaps = std::fs::read_to_string("/proc/self/smaps").unwrap();
    let name = path.canonicalize().unwrap();
    let mut inside = false;
    let mut kb = 0;
    for line in smaps.lines() {
        let first = line.split_whitespace().next().unwrap_or("");
        let header = first.split_once('-').is_some_and(|(a, b)| {
            [a, b]
                .iter()
                .all(|h| !h.is_empty() && h.chars().all(|c| c.is_ascii_hexdigit()))
        });
        if header {
            inside = line.ends_with(name.to_str().unwrap());
        } else if inside {
            if let Some(v) = line.strip_prefix("Rss:") {
                kb += v
                    .trim()
                    .trim_end_matches("kB")
                    .trim()
                    .parse::<u64>()
                    .unwrap();
            }
        }
    }
    kb
}

#[cfg(target_os = "linux")]
#[test]
fn released_tensor_pages_leave_resident_memory_and_read_back_unchanged() {
    let d = tempfile::tempdir().unwrap();
    let mut w = GgufWriter::new();
    w.set("general.architecture", "llama");
    w.add_tensor("small", vec![8], GgmlType::F32).unwrap();
    w.add_tensor("big", vec![1024, 1024], GgmlType::F32)
        .unwrap();
    let p = d.path().join("big.gguf");
    w.write(&p, |i, t, out: &mut dyn Write| {
        let bytes: Vec<u8> = (0..t.n_bytes()).map(|k| (k as u8) ^ (i as u8)).collect();
        out.write_all(&bytes)
    })
    .unwrap();
    let f = GgufFile::open_populated(&p).unwrap();
    let (_, big) = f.tensor_bytes("big").unwrap();
    let want: Vec<u8> = big.to_vec();
    let before = mapped_rss_kb(&p);
    assert!(before >= 4096, "populated map resident: {before} kB");
    f.release(big);
    let after = mapped_rss_kb(&p);
    assert!(
        before - after >= 4096 - 8,
        "released 4 MiB of pages: {before} -> {after} kB"
    );
    // the neighbour's bytes and the released ones read back as they were
    let (_, small) = f.tensor_bytes("small").unwrap();
    assert!(small.iter().enumerate().all(|(k, &b)| b == k as u8));
    assert_eq!(big, &want[..]);
    // a slice that is not part of the map is ignored
    f.release(&want);
}
