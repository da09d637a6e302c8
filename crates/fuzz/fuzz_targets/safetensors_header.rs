//! Arbitrary bytes as a safetensors file: header parsing and validation must return, never
//! panic or allocate without bound.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = slmpack_convert::fuzz::safetensors_header(data);
});
