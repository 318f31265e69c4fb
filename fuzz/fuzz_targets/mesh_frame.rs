//! Fuzz target: arbitrary bytes, fed in arbitrary pieces, through osmoda-mesh's frame decoder
//! never panic, never buffer more than one frame, and the frames it returns re-encode to the
//! bytes consumed. Run with `cargo +nightly fuzz run mesh_frame` from the repo root.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    osmoda_mesh::frame::fuzz_one(data);
});
