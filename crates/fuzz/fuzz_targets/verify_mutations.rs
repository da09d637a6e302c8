//! Random mutations of a valid signed bundle: verification must refuse every changed bundle and
//! never panic.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    slmpack_manifest::fuzzing::verify_mutations(data);
});
