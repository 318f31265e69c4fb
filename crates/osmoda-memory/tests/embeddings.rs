//! The in-process model against golden vectors, and the HTTP backend in a real exchange.

mod common;

use std::sync::Arc;

use axum::{routing::post, Json, Router};
use osmoda_memory::embed::dot;
use osmoda_memory::{Embedder, HttpEmbedder, MemoryError};
use serde_json::{json, Value};

#[derive(serde::Deserialize)]
struct Golden {
    sentences: Vec<Sentence>,
}
#[derive(serde::Deserialize)]
struct Sentence {
    text: String,
    embedding: Vec<f32>,
}

fn golden() -> Golden {
    serde_json::from_str(include_str!("data/golden.json")).expect("golden.json")
}

#[test]
fn local_model_matches_the_reference_vectors() {
    let g = golden();
    let model = common::model();
    let texts: Vec<String> = g.sentences.iter().map(|s| s.text.clone()).collect();
    // As a batch (padded) and one by one: padding must not change a vector.
    let batch = model.embed(&texts).expect("embed");
    for (s, v) in g.sentences.iter().zip(&batch) {
        assert_eq!(v.len(), 384);
        let cos = dot(v, &s.embedding);
        assert!(cos >= 0.999, "{:?}: cosine {cos} to the reference", s.text);
        let single = &model.embed(std::slice::from_ref(&s.text)).expect("embed")[0];
        assert!(dot(single, v) >= 0.9999, "batching changed {:?}", s.text);
    }
    // The reference vectors differ from each other: a constant output cannot pass.
    assert!(dot(&g.sentences[0].embedding, &g.sentences[1].embedding) < 0.5);
}

/// An OpenAI-compatible `/v1/embeddings` server on loopback backed by the in-process model.
async fn serve(fail: bool) -> String {
    let model = common::model();
    let app = Router::new().route(
        "/v1/embeddings",
        post(move |Json(req): Json<Value>| {
            let model = model.clone();
            async move {
                if fail {
                    return (axum::http::StatusCode::SERVICE_UNAVAILABLE, Json(json!({"error": "loading"})));
                }
                assert_eq!(req["model"], "nomic-embed-text-v2-moe");
                let input: Vec<String> = serde_json::from_value(req["input"].clone()).expect("input");
                let vecs = tokio::task::spawn_blocking(move || model.embed(&input).expect("embed"))
                    .await
                    .expect("join");
                // Answer out of order, as the spec allows; the client sorts by index.
                let data: Vec<Value> = vecs
                    .iter()
                    .enumerate()
                    .rev()
                    .map(|(i, v)| json!({"object": "embedding", "index": i, "embedding": v.iter().map(|x| x * 3.0).collect::<Vec<_>>()}))
                    .collect();
                (axum::http::StatusCode::OK, Json(json!({"object": "list", "data": data})))
            }
        }),
    );
    common::serve_loopback(app).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_backend_speaks_openai_embeddings() {
    let url = serve(false).await;
    let g = golden();
    let texts: Vec<String> = g.sentences.iter().map(|s| s.text.clone()).collect();
    let http = HttpEmbedder::new(&url, "nomic-embed-text-v2-moe").expect("client");
    let got = tokio::task::spawn_blocking(move || http.embed(&texts))
        .await
        .expect("join")
        .expect("embed");
    for (s, v) in g.sentences.iter().zip(&got) {
        // Scaled by the server, normalised by the client.
        assert!(dot(v, &s.embedding) >= 0.999, "{:?}", s.text);
    }
    let http = HttpEmbedder::new(&url, "nomic-embed-text-v2-moe").expect("client");
    assert!(http.id().contains("nomic-embed-text-v2-moe"));
    assert_ne!(http.id(), common::model().id());

    let bad = serve(true).await;
    let http = HttpEmbedder::new(&bad, "nomic-embed-text-v2-moe").expect("client");
    let err = tokio::task::spawn_blocking(move || http.embed(&["x".into()]))
        .await
        .expect("join")
        .unwrap_err();
    assert!(
        matches!(&err, MemoryError::Embed(m) if m.contains("503")),
        "{err}"
    );
    // Nothing listens there.
    let closed = HttpEmbedder::new("http://127.0.0.1:9/v1/embeddings", "m").expect("client");
    let err = tokio::task::spawn_blocking(move || closed.embed(&["x".into()]))
        .await
        .expect("join")
        .unwrap_err();
    assert!(matches!(err, MemoryError::Embed(_)));
    assert!(matches!(
        HttpEmbedder::new("https://example.org/v1/embeddings", "m"),
        Err(MemoryError::Invalid(_))
    ));
    let _ = Arc::new(());
}
