//! Arbitrary bytes as a GGUF file: the reader and `inspect` must return, never panic or
//! allocate without bound.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = slmpack_convert::fuzz::gguf_read(data);
});
