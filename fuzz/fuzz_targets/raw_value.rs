//! Fuzz target: an arbitrary raw Nix value (repeated into deep or long expressions) and an
//! arbitrary attribute path never make the editor panic, overflow its stack or return a file that
//! does not parse. Run with `cargo +nightly fuzz run raw_value` from the repo root.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    osmoda_nix::fuzz_raw(data);
});
