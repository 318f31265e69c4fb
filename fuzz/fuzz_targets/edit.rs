//! Fuzz target: an arbitrary file and an arbitrary operation never make the editor panic or
//! return a file that does not parse. Run with `cargo +nightly fuzz run edit` from the repo root.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    osmoda_nix::fuzz_one(data);
});
