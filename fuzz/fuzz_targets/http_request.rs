//! Fuzz target: arbitrary client bytes through the real listener code (gate, hyper, a router)
//! never panic or hang it, and every error answer carries the JSON error body. Run with
//! `cargo +nightly fuzz run http_request` from the repo root.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    osmoda_daemon::fuzz::fuzz_one(data);
});
