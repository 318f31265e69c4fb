//! A model swapped behind the same endpoint URL (issue 17 review finding 9): the id
//! (`endpoint:<model>@<url>`) stays, the vectors change. Every batch sent to an endpoint
//! carries a fixed probe text; when its vector is no longer the recorded one, every vector
//! is dropped and made again by the new model, so the index never mixes two models — whether
//! the swap is seen by a write, a recall or the next start.

mod common;

use std::sync::atomic::{AtomicI32, Ordering};
use std::sync::Arc;

use axum::routing::post;
use axum::{Json, Router};
use osmoda_memory::{HttpEmbedder, Memory, Options, RecallRequest, StoreRequest};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

/// A loopback `/v1/embeddings` serving "model" `sign`: the first component is `sign` × 3
/// (so every vector says which model made it), the others come from the text's SHA-256.
async fn serve(sign: Arc<AtomicI32>) -> String {
    let app = Router::new().route(
        "/v1/embeddings",
        post(move |Json(req): Json<Value>| {
            let sign = sign.load(Ordering::SeqCst) as f32;
            async move {
                let input: Vec<String> =
                    serde_json::from_value(req["input"].clone()).expect("input");
                let data: Vec<Value> = input
                    .iter()
                    .enumerate()
                    .map(|(i, t)| {
                        let h = Sha256::digest(t.as_bytes());
                        let v: Vec<f32> = std::iter::once(sign * 3.0)
                            .chain(h[..7].iter().map(|b| f32::from(*b) / 255.0 - 0.5))
                            .collect();
                        json!({"index": i, "embedding": v})
                    })
                    .collect();
                Json(json!({"data": data}))
            }
        }),
    );
    common::serve_loopback(app).await
}

fn open(dir: &std::path::Path, url: &str) -> Memory {
    let e: Arc<dyn osmoda_memory::Embedder> =
        Arc::new(HttpEmbedder::new(url, "nomic-embed-text-v2-moe").expect("client"));
    Memory::open(Options::new(dir), Some(e), None).expect("open")
}

/// The sign of the first component of every stored vector, and how many chunks lack one.
fn signs(dir: &std::path::Path) -> (Vec<i32>, i64) {
    let c = rusqlite::Connection::open(dir.join(".index.sqlite")).expect("open");
    let mut stmt = c
        .prepare("SELECT vec FROM chunks WHERE vec IS NOT NULL")
        .expect("prepare");
    let signs = stmt
        .query_map([], |r| r.get::<_, Vec<u8>>(0))
        .expect("query")
        .map(|b| {
            let b = b.expect("row");
            f32::from_le_bytes([b[0], b[1], b[2], b[3]]).signum() as i32
        })
        .collect();
    let pending = c
        .query_row("SELECT count(*) FROM chunks WHERE vec IS NULL", [], |r| {
            r.get(0)
        })
        .expect("count");
    (signs, pending)
}

fn store(m: &Memory, summary: &str) {
    m.store(&StoreRequest {
        summary: summary.into(),
        detail: "details".into(),
        category: None,
        tags: vec![],
        durable: true,
    })
    .expect("store");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_model_swapped_behind_the_endpoint_is_noticed_and_never_mixed() {
    let sign = Arc::new(AtomicI32::new(1));
    let url = serve(sign.clone()).await;
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().to_path_buf();
    tokio::task::spawn_blocking(move || {
        let m = open(&dir, &url);
        for s in [
            "nginx certificate expired",
            "disk full on /var",
            "owner likes metric",
        ] {
            store(&m, s);
        }
        assert_eq!(signs(&dir), (vec![1, 1, 1], 0));
        assert!(m.health().expect("health").index_rebuilt.is_none());

        // Swapped, then seen by a write: every vector is made again by the new model.
        sign.store(-1, Ordering::SeqCst);
        store(&m, "redis evicted sessions");
        assert_eq!(signs(&dir), (vec![-1; 4], 0));
        let why = m.health().expect("health").index_rebuilt.expect("rebuilt");
        assert!(why.contains("changed"), "{why}");

        // Swapped back, then seen by a recall: the old vectors are dropped at once (the
        // recall says the chunks wait for their vectors), and embedded again.
        sign.store(1, Ordering::SeqCst);
        let r = m
            .recall(&RecallRequest {
                query: "what happened to nginx".into(),
                max_results: None,
                timeframe: None,
            })
            .expect("recall");
        assert!(
            r.warning
                .as_deref()
                .is_some_and(|w| w.contains("not embedded yet")),
            "{r:?}"
        );
        assert_eq!(signs(&dir), (vec![], 4));
        assert!(m.wants_embedding());
        assert_eq!(m.embed_pending().expect("embed"), 4);
        assert_eq!(signs(&dir), (vec![1; 4], 0));
        assert!(!m.wants_embedding());
        drop(m);

        // Swapped while closed: noticed when it opens, before any recall.
        sign.store(-1, Ordering::SeqCst);
        let m = open(&dir, &url);
        assert_eq!(signs(&dir), (vec![-1; 4], 0));
        assert!(m.health().expect("health").index_rebuilt.is_some());
        // The same model again: nothing is embedded again.
        drop(m);
        let m = open(&dir, &url);
        assert!(m.health().expect("health").index_rebuilt.is_none());
    })
    .await
    .expect("join");
}

/// Issue 17 review finding 5: a relevance threshold belongs to the model it was measured
/// with. This endpoint's "model" makes every two texts nearly parallel (cosine about 0.9,
/// the way some models score unrelated texts high): MiniLM's 0.35 let every note through for
/// any query. A model without a measured or configured threshold recalls only notes sharing
/// the query's words, and says so; a configured threshold is the one in force.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_threshold_belongs_to_its_model() {
    let url = serve(Arc::new(AtomicI32::new(1))).await;
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().to_path_buf();
    tokio::task::spawn_blocking(move || {
        let recall = |m: &Memory, q: &str| {
            m.recall(&RecallRequest {
                query: q.into(),
                max_results: None,
                timeframe: None,
            })
            .expect("recall")
        };
        let m = open(&dir, &url);
        store(&m, "nginx certificate expired");
        store(&m, "disk full on /var");
        assert_eq!(m.health().expect("health").min_similarity, None);
        let r = recall(&m, "quarterly tax filing deadline");
        assert!(r.results.is_empty(), "nonsense recalled: {r:?}");
        assert!(
            r.warning.as_deref().is_some_and(
                |w| w.contains("no relevance threshold") && w.contains("relevanceThresholds")
            ),
            "{r:?}"
        );
        // The keyword vote still recalls, ranked with the vectors.
        let r = recall(&m, "nginx certificate");
        assert_eq!(r.results.len(), 1, "{r:?}");
        assert_eq!(r.mode, "hybrid");
        drop(m);

        // A threshold configured for this model is the one in force.
        for (least, hits) in [(0.5, 2), (0.999, 0)] {
            let e: Arc<dyn osmoda_memory::Embedder> =
                Arc::new(HttpEmbedder::new(&url, "nomic-embed-text-v2-moe").expect("client"));
            let mut opts = Options::new(&dir);
            opts.min_similarity = Some(least);
            let m = Memory::open(opts, Some(e), None).expect("open");
            assert_eq!(m.health().expect("health").min_similarity, Some(least));
            let r = recall(&m, "quarterly tax filing deadline");
            assert_eq!(r.results.len(), hits, "{least}: {r:?}");
            assert!(r.warning.is_none(), "{r:?}");
        }
    })
    .await
    .expect("join");

    // Measured thresholds go by model name: only all-MiniLM-L6-v2 has one.
    use osmoda_memory::Embedder;
    for (name, want) in [
        ("all-MiniLM-L6-v2", Some(osmoda_memory::MIN_SIMILARITY)),
        (
            "sentence-transformers/all-MiniLM-L6-v2",
            Some(osmoda_memory::MIN_SIMILARITY),
        ),
        ("nomic-embed-text-v2-moe", None),
        ("all-MiniLM-L12-v2", None),
    ] {
        let e = HttpEmbedder::new("http://127.0.0.1:9/v1/embeddings", name).expect("client");
        assert_eq!(e.min_similarity(), want, "{name}");
    }
}
