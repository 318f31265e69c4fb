//! Fuzz target: arbitrary bytes as the JSON body of every POST endpoint of agentd's real routers
//! (real ledger in a temp dir) never panic a handler, never answer 5xx, and every 4xx carries
//! the JSON error body. Run with `cargo +nightly fuzz run agentd_json` from the repo root.
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;

fn target() -> &'static agentd::fuzz::Target {
    static T: OnceLock<(tempfile::TempDir, agentd::fuzz::Target)> = OnceLock::new();
    let (_, t) = T.get_or_init(|| {
        let dir = tempfile::tempdir().expect("tempdir");
        let t = agentd::fuzz::Target::open(dir.path());
        (dir, t)
    });
    t
}

fuzz_target!(|data: &[u8]| {
    target().run(data);
});
