//! `/agent/card/generate` with the machine's real identities: a real osmoda-mesh (its Ed25519
//! identity becomes a `did:key` service) and a real osmoda-keyd (its wallets become CAIP-10
//! `agentWallet` services), both served in-process on Unix sockets by the `serve` their
//! binaries call. `memory.rs` holds the same card against stand-in endpoints.

mod common;

use std::sync::Arc;

use common::Daemon;
use serde_json::{json, Value};

async fn post(c: &osmoda_client::Client, path: &str, body: Value) -> (u16, Value) {
    let r = c.post(path, &body).await.expect("request");
    (r.status, r.body)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agent_card_names_the_real_mesh_key_and_keyd_wallets() {
    let _ = osmoda_daemon::raise_fd_limit();
    let tmp = tempfile::tempdir().expect("tempdir");
    let d = tmp.path();
    let (keyd_sock, mesh_sock) = (d.join("keyd.sock"), d.join("mesh.sock"));
    let mut settings = agentd::Settings {
        keyd_uid: Some(nix::unistd::getuid().as_raw()),
        ..Default::default()
    };
    settings.agent_card = agentd::api::agent_card::CardSettings {
        keyd: Some(keyd_sock.clone()),
        mesh: Some(mesh_sock.clone()),
    };
    let agentd = Daemon::start_with(settings).await;

    let mesh = osmoda_mesh::AppState::open(osmoda_mesh::Options {
        config: d.join("mesh.json"),
        state_dir: d.join("mesh"),
        agentd_socket: agentd.socket.clone(),
        watch_socket: d.join("watch.sock"),
        key_file: None,
        name: "heron".into(),
        tuning: osmoda_mesh::Tuning::default(),
    })
    .expect("mesh");
    let l = osmoda_daemon::bind_unix(&mesh_sock, 0o600).expect("bind mesh");
    let tcp = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("tcp");
    let (_mesh_stop, shutdown) = osmoda_mesh::shutdown::channel();
    tokio::spawn(osmoda_mesh::serve(l, tcp, mesh, shutdown));

    std::fs::write(
        d.join("keyd.json"),
        serde_json::to_vec(&json!({ "secret_file": null, "policy": {
            "chains": { "ethereum": { "chain_ids": [8453], "per_tx_max": "1", "daily_limit": "1",
                "approval_threshold": null, "recipient_allowlist": null } },
            "wallets": {} } }))
        .expect("json"),
    )
    .expect("keyd.json");
    let keyd = osmoda_keyd::AppState::open(osmoda_keyd::Options {
        config: d.join("keyd.json"),
        state_dir: d.join("keyd"),
        agentd_socket: agentd.socket.clone(),
        clock: Arc::new(time::OffsetDateTime::now_utc),
    })
    .expect("keyd");
    let l = tokio::net::UnixListener::bind(&keyd_sock).expect("bind keyd");
    let (keyd_stop, shutdown) = osmoda_keyd::shutdown::channel();
    let keyd_task = tokio::spawn(osmoda_keyd::serve(l, keyd, shutdown));

    let kc = osmoda_client::Client::new(&keyd_sock);
    let (s, eth) = post(
        &kc,
        "/wallet/create",
        json!({"chain": "ethereum", "label": "ops"}),
    )
    .await;
    assert_eq!(s, 200, "{eth}");
    let (s, sol) = post(
        &kc,
        "/wallet/create",
        json!({"chain": "solana", "label": "sol"}),
    )
    .await;
    assert_eq!(s, 200, "{sol}");
    let id = osmoda_client::Client::new(&mesh_sock)
        .get("/identity")
        .await
        .expect("identity")
        .body;
    use base64::Engine as _;
    let ed = base64::engine::general_purpose::STANDARD
        .decode(id["public_keys"]["ed25519"].as_str().expect("ed25519"))
        .expect("base64");
    // did:key = "z" + base58btc(0xed 0x01 ‖ key), the multicodec prefix of Ed25519 keys.
    let did = format!(
        "did:key:z{}",
        bs58::encode([&[0xed, 0x01][..], &ed].concat()).into_string()
    );

    let body =
        json!({"name": "heron", "description": "Operates heron.example.org", "chain_id": 8453});
    let (s, r) = post(&agentd.agent(), "/agent/card/generate", body.clone()).await;
    assert_eq!(s, 200, "{r}");
    assert_eq!(r["missing"], json!([]), "{r}");
    assert_eq!(
        r["card"]["services"],
        json!([
            {"name": "DID", "endpoint": did, "version": "v1"},
            {"name": "agentWallet", "endpoint": format!("eip155:8453:{}", eth["address"].as_str().expect("address"))},
            {"name": "agentWallet", "endpoint": format!("solana:5eykt4UsFv8P8NJdTREpY1vzqKqZKvdp:{}", sol["address"].as_str().expect("address"))},
        ]),
        "{r}"
    );
    // Only public identities: no key material of either daemon in the card.
    let card = r["card"].to_string();
    assert!(
        !card.contains("secret") && !card.contains("private"),
        "{card}"
    );

    // keyd gone: the card is still written, and says what it left out.
    keyd_stop.fire();
    keyd_task.await.expect("join").expect("keyd stopped");
    let (s, r) = post(&agentd.agent(), "/agent/card/generate", body).await;
    assert_eq!(s, 200, "{r}");
    assert_eq!(
        r["missing"],
        json!(["wallets (osmoda-keyd not reachable)"]),
        "{r}"
    );
    assert_eq!(
        r["card"]["services"].as_array().map(Vec::len),
        Some(1),
        "{r}"
    );
    let stored = agentd.agent().get("/agent/card").await.expect("card").body;
    assert_eq!(stored, r["card"]);
    agentd.stop().await;
}
