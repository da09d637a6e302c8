//! Entry points shared by the cargo-fuzz targets (`crates/fuzz`) and the proptests: parse
//! arbitrary bytes as a safetensors header or a GGUF file. They must return, never panic.

use std::path::Path;

/// Parse `data` as a safetensors file and, when valid, touch every tensor's bytes.
pub fn safetensors_header(data: &[u8]) -> bool {
    match crate::input::read_safetensors_header(Path::new("fuzz.safetensors"), data) {
        Ok(ts) => {
            for t in &ts {
                let _ = &data[t.offset..t.offset + t.len];
            }
            true
        }
        Err(_) => false,
    }
}

/// Parse `data` as a GGUF file (through a temp file, as the reader maps files) and, when valid,
/// touch every tensor's bytes and inspect it.
pub fn gguf_read(data: &[u8]) -> bool {
    let Ok(mut tmp) = tempfile::NamedTempFile::new() else {
        return false;
    };
    if std::io::Write::write_all(&mut tmp, data).is_err() {
        return false;
    }
    match slmpack_gguf::GgufFile::open(tmp.path()) {
        Ok(f) => {
            for t in &f.tensors {
                let _ = f.tensor_data(t);
            }
            let _ = crate::inspect::inspect(tmp.path());
            true
        }
        Err(_) => false,
    }
}
