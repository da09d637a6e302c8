//! Every manifest-crate parser (manifest, signature file, rotation statement, device state,
//! build.json, device profile, public key, paths) on arbitrary bytes: no panic, and whatever
//! parses round-trips.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    slmpack_manifest::fuzzing::manifest_parse(data);
});
