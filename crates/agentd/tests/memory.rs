//! `/memory/*` and `/agent/card` through agentd's socket: the real memory crate, the real
//! embedding model (fetched like CI does), the ledger events they leave.

mod common;

use std::path::PathBuf;

use common::Daemon;
use serde_json::{json, Value};

fn model_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("OSMODA_MEMORY_MODEL_DIR") {
        return PathBuf::from(d);
    }
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../scripts/fetch-memory-model");
    let out = std::process::Command::new(&script)
        .output()
        .expect("run fetch-memory-model");
    assert!(
        out.status.success(),
        "fetching the model failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    PathBuf::from(String::from_utf8_lossy(&out.stdout).trim())
}

async fn post(d: &Daemon, path: &str, body: Value) -> (u16, Value) {
    let r = d.agent().post(path, &body).await.expect("request");
    (r.status, r.body)
}

fn files(dir: &std::path::Path) -> Vec<(PathBuf, Vec<u8>)> {
    let mut out = Vec::new();
    if let Ok(rd) = std::fs::read_dir(dir) {
        for e in rd.flatten() {
            let p = e.path();
            if p.is_dir() {
                out.extend(files(&p));
            } else if !p.to_string_lossy().contains(".index.sqlite") {
                out.push((p.clone(), std::fs::read(&p).expect("read")));
            }
        }
    }
    out.sort();
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn store_recall_ingest_with_the_model() {
    let mut settings = agentd::Settings::default();
    settings.memory.model_dir = Some(model_dir());
    let d = Daemon::start_with(settings).await;
    // The first memory call opens it: the model's load took 34 s in a debug build at load 21
    // (its SHA-256 and tokenizer unoptimized), past the client's 30 s.
    let (s, h) = (
        d.agent()
            .with_timeout(std::time::Duration::from_secs(300))
            .get("/memory/health")
            .await
            .expect("health")
            .status,
        d.agent().get("/memory/health").await.expect("health").body,
    );
    assert_eq!(s, 200, "{h}");
    assert_eq!(h["model_status"], "ready", "{h}");
    // The in-process model's measured threshold.
    assert!(
        h["min_similarity"]
            .as_f64()
            .is_some_and(|t| (t - 0.35).abs() < 1e-6),
        "{h}"
    );

    let (s, r) = post(&d, "/memory/store", json!({"summary": "nginx TLS certificate expired on web-1", "detail": "renewed with certbot, reloaded nginx", "category": "incident", "tags": ["nginx"]})).await;
    assert_eq!(s, 200, "{r}");
    assert!(
        r["path"].as_str().expect("path").starts_with("memory/"),
        "{r}"
    );
    let (s, _) = post(
        &d,
        "/memory/store",
        json!({"summary": "The owner prefers metric units", "durable": true}),
    )
    .await;
    assert_eq!(s, 200);
    let (s, r) = post(&d, "/memory/ingest", json!({"event": {"id": 9, "type": "service.restart", "actor": "agent", "ts": "2026-11-29T10:00:00Z", "unit": "postgresql.service", "payload": {"reason": "too many clients already", "by": "pgbouncer rollout"}, "hash": "ab", "prev_hash": "cd"}})).await;
    assert_eq!(s, 200, "{r}");
    assert_eq!(r["path"], "memory/2026-11-29.md");

    // A paraphrase with no word in common with the note: only the vectors find it.
    let (s, r) = post(
        &d,
        "/memory/recall",
        json!({"query": "why did the website's security certificate break", "max_results": 1}),
    )
    .await;
    assert_eq!(s, 200, "{r}");
    assert_eq!(r["mode"], "hybrid");
    assert!(
        r["results"][0]["text"]
            .as_str()
            .expect("text")
            .contains("certbot"),
        "{r}"
    );
    let (_, r) = post(&d, "/memory/recall", json!({"query": "postgresql clients", "timeframe": "2026-11-29T00:00:00Z..2026-11-29T23:59:59Z"})).await;
    assert!(
        r["results"][0]["text"]
            .as_str()
            .expect("text")
            .contains("unit: postgresql.service"),
        "{r}"
    );
    let (_, r) = post(
        &d,
        "/memory/recall",
        json!({"query": "postgresql clients", "timeframe": "2026-11-30T00:00:00Z.."}),
    )
    .await;
    assert!(
        r["results"]
            .as_array()
            .expect("results")
            .iter()
            .all(|h| !h["text"].as_str().unwrap_or("").contains("postgresql")),
        "{r}"
    );

    // Every write is a ledger event, without the note's body.
    let log = d
        .agent()
        .get("/events/log?type=memory.stored")
        .await
        .expect("log")
        .body;
    let text = log.to_string();
    assert!(
        text.contains("nginx TLS certificate expired") && !text.contains("certbot"),
        "{log}"
    );
    let (s, r) = post(&d, "/memory/reindex", json!({})).await;
    assert_eq!(s, 200, "{r}");
    assert_eq!(r["files_changed"], 3, "{r}");
    d.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keyword_only_without_a_model_and_bad_input_writes_nothing() {
    let d = Daemon::start().await;
    let (_, h) = (
        0,
        d.agent().get("/memory/health").await.expect("health").body,
    );
    assert!(
        h["model_status"]
            .as_str()
            .expect("status")
            .starts_with("error: no embedding model"),
        "{h}"
    );
    let mem = d.dir.path().join("state/memory");
    let (s, _) = post(
        &d,
        "/memory/store",
        json!({"summary": "backup runs at 02:00", "detail": "restic to B2"}),
    )
    .await;
    assert_eq!(s, 200);
    let before = files(&mem);
    for (path, body) in [
        ("/memory/store", json!({"summary": "", "detail": "x"})),
        (
            "/memory/store",
            json!({"summary": "s", "detail": "x".repeat(17 * 1024)}),
        ),
        ("/memory/store", json!({"summary": "s", "detial": "typo"})),
        ("/memory/store", json!({"summary": "s", "tags": ["a b"]})),
        ("/memory/recall", json!({"query": ""})),
        (
            "/memory/recall",
            json!({"query": "x", "timeframe": "last tuesday"}),
        ),
        ("/memory/recall", json!({"query": "x", "max_results": 0})),
        // Ending in a multi-byte character: a 400, not a panic and a 500.
        ("/memory/recall", json!({"query": "x", "timeframe": "5日"})),
        ("/memory/recall", json!({"query": "x", "timeframe": "é"})),
        (
            "/memory/ingest",
            json!({"event": {"type": "memory.stored", "text": "loop"}}),
        ),
        (
            "/memory/ingest",
            json!({"event": {"type": " memory.stored", "text": "loop"}}),
        ),
        (
            "/memory/ingest",
            json!({"event": {"type": "memory.stored\t", "text": "loop"}}),
        ),
        ("/memory/ingest", json!({"event": {"type": "x"}})),
        (
            "/memory/ingest",
            json!({"event": {"type": "x", "text": "t", "ts": "yesterday"}}),
        ),
        (
            "/agent/card/generate",
            json!({"name": "", "description": "d"}),
        ),
        (
            "/agent/card/generate",
            json!({"name": "n", "description": "d", "supported_trust": ["vibes"]}),
        ),
        // A caller's service passing for the machine's own identities, an unbounded version.
        (
            "/agent/card/generate",
            json!({"name": "n", "description": "d", "services": [{"name": "agentWallet", "endpoint": "eip155:1:0x00000000000000000000000000000000000000aa"}]}),
        ),
        (
            "/agent/card/generate",
            json!({"name": "n", "description": "d", "services": [{"name": "DID", "endpoint": "did:key:z6MkhaXgBZDvotDkL5257faiztiGiC2QtKLGpbnnEGta2doK"}]}),
        ),
        (
            "/agent/card/generate",
            json!({"name": "n", "description": "d", "services": [{"name": "web", "endpoint": "https://x", "version": "v".repeat(65)}]}),
        ),
    ] {
        let (s, r) = post(&d, path, body.clone()).await;
        // 422: agentd's answer to a body of the wrong shape (an unknown field).
        assert!(s == 400 || s == 422, "{path} {body}: {s} {r}");
        assert!(r["error"].as_str().is_some_and(|e| !e.is_empty()), "{r}");
    }
    assert_eq!(before, files(&mem), "a refused request changed a note");
    let (s, r) = post(
        &d,
        "/memory/recall",
        json!({"query": "when does the restic backup run"}),
    )
    .await;
    assert_eq!(s, 200, "{r}");
    assert_eq!(r["mode"], "keyword");
    assert!(r["warning"].as_str().is_some(), "{r}");
    assert!(
        r["results"][0]["text"]
            .as_str()
            .expect("hit")
            .contains("restic"),
        "{r}"
    );
    // No card yet.
    assert_eq!(
        d.agent().get("/agent/card").await.expect("card").status,
        404
    );
    d.stop().await;
}

/// A stand-in for osmoda-mesh and osmoda-keyd on Unix sockets (their identity endpoints only).
async fn identity_server(sock: PathBuf) {
    use axum::routing::get;
    let app = axum::Router::new()
        .route("/identity", get(|| async { axum::Json(json!({"name": "heron", "public_keys": {"ed25519": "Lm/M42cB3HkUiODQsXRcweM6TByfzEHGO9ND274JcOY="}, "fingerprint": "f"})) }))
        .route("/wallet/list", get(|| async { axum::Json(json!({"wallets": [
            {"id": "w1", "label": "ops", "chain": "ethereum", "address": "0x52908400098527886E0F7030069857D2E4169EE7"},
            {"id": "w2", "label": "sol", "chain": "solana", "address": "7EcDhSYGxXyscszYEp35KHN8vvw3svAuLKTzXwCFLtV"}]})) }));
    let l = tokio::net::UnixListener::bind(&sock).expect("bind");
    tokio::spawn(async move { axum::serve(l, app).await.expect("serve") });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agent_card_is_eip8004_with_the_machine_identities() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let sock = tmp.path().join("ids.sock");
    identity_server(sock.clone()).await;
    let mut settings = agentd::Settings::default();
    settings.agent_card = agentd::api::agent_card::CardSettings {
        keyd: Some(sock.clone()),
        mesh: Some(sock),
    };
    let d = Daemon::start_with(settings).await;
    let (s, r) = post(&d, "/agent/card/generate", json!({"name": "heron", "description": "Operates heron.example.org", "services": [{"name": "web", "endpoint": "https://heron.example.org/"}], "chain_id": 8453})).await;
    assert_eq!(s, 200, "{r}");
    let card = &r["card"];
    assert_eq!(
        card["type"],
        "https://eips.ethereum.org/EIPS/eip-8004#registration-v1"
    );
    assert_eq!(card["supportedTrust"], json!(["reputation"]));
    assert_eq!(card["registrations"], json!([]));
    assert_eq!(
        card["services"],
        json!([
            {"name": "web", "endpoint": "https://heron.example.org/"},
            {"name": "DID", "endpoint": "did:key:z6MkhaXgBZDvotDkL5257faiztiGiC2QtKLGpbnnEGta2doK", "version": "v1"},
            {"name": "agentWallet", "endpoint": "eip155:8453:0x52908400098527886E0F7030069857D2E4169EE7"},
            {"name": "agentWallet", "endpoint": "solana:5eykt4UsFv8P8NJdTREpY1vzqKqZKvdp:7EcDhSYGxXyscszYEp35KHN8vvw3svAuLKTzXwCFLtV"},
        ])
    );
    assert!(card.get("image").is_none());
    assert_eq!(r["missing"], json!([]));
    let stored = d.agent().get("/agent/card").await.expect("card").body;
    assert_eq!(&stored, card);
    assert!(d.dir.path().join("state/agent-card.json").is_file());
    d.stop().await;
}

/// The small rules of issue 17's review finding 12 and 4, through the socket: each route's 405
/// names the one method it takes; `/memory/reindex` takes no body or `{}` and refuses
/// anything else; a `MEMORY.md` that is a directory is a 409 naming it (no 500), nothing
/// written or recorded; an event is filed under its UTC day and a year-9999 one refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn routes_say_what_they_take_and_odd_places_are_refused() {
    use axum::http::Method;
    let d = Daemon::start().await;
    for (method, path, takes) in [
        (Method::GET, "/memory/recall", "POST"),
        (Method::PUT, "/memory/recall", "POST"),
        (Method::DELETE, "/memory/store", "POST"),
        (Method::HEAD, "/memory/ingest", "POST"),
        (Method::POST, "/memory/health", "GET"),
        (Method::PUT, "/memory/reindex", "POST"),
    ] {
        let r = d
            .agent()
            .request(method.clone(), path, None)
            .await
            .expect("request");
        assert_eq!(r.status, 405, "{method} {path}: {}", r.body);
        if method != Method::HEAD {
            let e = r.body["error"].as_str().expect("error");
            assert_eq!(
                e,
                format!("{method} is not allowed on {path}; this route takes {takes} only")
            );
        }
    }
    for body in [json!({"full": true}), json!([1]), json!("x")] {
        let (s, r) = post(&d, "/memory/reindex", body.clone()).await;
        assert!(s == 400 || s == 422, "{body}: {s} {r}");
    }
    let r = d
        .agent()
        .request(Method::POST, "/memory/reindex", None)
        .await
        .expect("request");
    assert_eq!(r.status, 200, "{}", r.body);
    let (s, _) = post(&d, "/memory/reindex", json!({})).await;
    assert_eq!(s, 200);

    let mem = d.dir.path().join("state/memory");
    std::fs::create_dir_all(mem.join("MEMORY.md")).expect("mkdir");
    let before = files(&mem);
    let (s, r) = post(
        &d,
        "/memory/store",
        json!({"summary": "a durable fact", "durable": true}),
    )
    .await;
    assert_eq!(s, 409, "{r}");
    let e = r["error"].as_str().expect("error");
    assert!(e.starts_with("MEMORY.md: not a regular file"), "{e}");
    assert_eq!(before, files(&mem));
    let log = d
        .agent()
        .get("/events/log?type=memory.*")
        .await
        .expect("log")
        .body;
    assert_eq!(log.as_array().map(Vec::len), Some(0), "{log}");
    assert!(
        std::fs::read_dir(d.dir.path().join("state/memory-journal"))
            .map(|rd| rd.count() == 0)
            .unwrap_or(true),
        "a refused store left its journal entry"
    );

    let (s, r) = post(&d, "/memory/ingest", json!({"event": {"type": "service.restart", "text": "late in New York", "ts": "2026-11-28T23:30:00-05:00"}})).await;
    assert_eq!(s, 200, "{r}");
    assert_eq!(r["path"], "memory/2026-11-29.md");
    assert_eq!(r["at"], "2026-11-29T04:30:00Z");
    let (s, r) = post(
        &d,
        "/memory/ingest",
        json!({"event": {"type": "x", "text": "t", "ts": "9999-12-31T23:59:59Z"}}),
    )
    .await;
    assert_eq!(s, 400, "{r}");
    d.stop().await;
}

/// Issue 17 review finding 5: the relevance threshold is the one configured for the model in
/// use (`memory.relevance_thresholds`, by the endpoint's model name); an endpoint model with
/// none has none (recall then goes by the keyword vote and says so), whatever MiniLM's is.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_relevance_threshold_is_the_one_configured_for_the_model() {
    // A loopback `/v1/embeddings` answering a fixed unit vector per text.
    let app = axum::Router::new().route(
        "/v1/embeddings",
        axum::routing::post(|axum::Json(req): axum::Json<Value>| async move {
            let n = req["input"].as_array().map_or(0, Vec::len);
            let data: Vec<Value> = (0..n)
                .map(|i| json!({"index": i, "embedding": [1.0, 0.0, 0.0, 0.0]}))
                .collect();
            axum::Json(json!({ "data": data }))
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let url = format!(
        "http://{}/v1/embeddings",
        listener.local_addr().expect("addr")
    );
    tokio::spawn(async move { axum::serve(listener, app).await.expect("serve") });
    for (thresholds, want) in [
        (json!({}), Value::Null),
        (json!({"nomic-embed-text-v2-moe": 0.5}), json!(0.5)),
        (json!({"all-MiniLM-L6-v2": 0.5}), Value::Null),
    ] {
        let config: osmoda_config::MemoryConfig = serde_json::from_value(json!({
            "embedding_endpoint": url, "embedding_model": "nomic-embed-text-v2-moe",
            "max_injected_tokens": 1500, "relevance_thresholds": thresholds,
        }))
        .expect("config");
        let mut settings = agentd::Settings::default();
        settings.memory = agentd::api::memory::MemorySettings::from_config(&config);
        let d = Daemon::start_with(settings).await;
        let h = d.agent().get("/memory/health").await.expect("health").body;
        assert_eq!(h["model_status"], "ready", "{h}");
        assert_eq!(h["min_similarity"], want, "{thresholds}: {h}");
    }
}
