//! `GET /metrics` counts what an operator watches on mesh links: links up and closed, handshakes
//! by outcome (a stranger's refused, a silent connection), rekeys each way, sealed frames and
//! their bytes, messages by kind. One test in its own binary: the registry is per process, and
//! both hosts of the test live in this one.
#![allow(clippy::unwrap_used)]

mod common;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use common::{fast, pair, within, Host};
use osmoda_mesh::handshake::{self, Extra};
use osmoda_mesh::identity::{Identity, Keys};
use serde_json::json;
use tokio::io::AsyncWriteExt;

/// The samples of `GET /metrics` on `h`'s socket: `name{labels}` → value.
async fn metrics(h: &Host) -> HashMap<String, f64> {
    let r = h.client().get("/metrics").await.unwrap();
    assert_eq!(r.status, 200);
    let text = match &r.body {
        serde_json::Value::String(s) => s.clone(),
        other => other.to_string(),
    };
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let (k, v) = l.rsplit_once(' ')?;
            Some((k.to_string(), v.parse().ok()?))
        })
        .collect()
}

fn get(m: &HashMap<String, f64>, k: &str) -> f64 {
    m.get(k).copied().unwrap_or(0.0)
}

/// Waits until `pred` holds of the metrics (links and counters move asynchronously).
async fn wait_metrics(h: &Host, what: &str, pred: impl Fn(&HashMap<String, f64>) -> bool) {
    let start = Instant::now();
    loop {
        let m = metrics(h).await;
        if pred(&m) {
            return;
        }
        let mesh: Vec<_> = m
            .iter()
            .filter(|(k, _)| k.starts_with("osmoda_mesh"))
            .collect();
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "{what}: {mesh:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_count_links_handshakes_rekeys_frames_and_messages() {
    let mut t = fast();
    t.rekey_messages = 2;
    let mut a = Host::start("alpha", t.clone()).await;
    let b = Host::start("beta", t).await;
    pair(&a, &b).await;
    wait_metrics(&a, "both links up", |m| {
        get(m, "osmoda_mesh_links_open") == 2.0
    })
    .await;

    for i in 0..6 {
        let (s, v) = a
            .post("/peer/beta/send", json!({ "message": format!("a{i}") }))
            .await;
        assert_eq!(s, 200, "{v}");
        let (s, v) = b
            .post("/peer/alpha/send", json!({ "message": format!("b{i}") }))
            .await;
        assert_eq!(s, 200, "{v}");
    }
    b.wait_inbox("alpha", 6).await;
    a.wait_inbox("beta", 6).await;

    // A stranger's handshake is refused; a connection that never says message 1 is silent.
    let stranger = Identity::generate().unwrap();
    let (_, id) = a.get("/identity").await;
    let keys = Keys::decode(&serde_json::from_value(id["public_keys"].clone()).unwrap()).unwrap();
    let mut s = within("dial", tokio::net::TcpStream::connect(a.endpoint()))
        .await
        .unwrap();
    let extra = Extra {
        invite: None,
        name: Some("stranger".into()),
        endpoint: None,
        listen_port: None,
    };
    let _ = handshake::initiate(&mut s, &stranger, &keys, extra).await;
    let mut silent = within("dial", tokio::net::TcpStream::connect(a.endpoint()))
        .await
        .unwrap();
    silent.shutdown().await.unwrap();

    let m = metrics(&a).await;
    // Twelve texts, each sent once and received once (both hosts count into this process).
    assert_eq!(
        get(
            &m,
            r#"osmoda_mesh_messages_total{direction="sent",kind="text"}"#
        ),
        12.0
    );
    assert_eq!(
        get(
            &m,
            r#"osmoda_mesh_messages_total{direction="received",kind="text"}"#
        ),
        12.0
    );
    // Two messages per key: every direction of the link rekeyed at least twice.
    assert!(
        get(&m, r#"osmoda_mesh_rekeys_total{direction="send"}"#) >= 4.0,
        "{m:?}"
    );
    assert!(
        get(&m, r#"osmoda_mesh_rekeys_total{direction="receive"}"#) >= 4.0,
        "{m:?}"
    );
    let frames = get(&m, r#"osmoda_mesh_frames_total{direction="sent"}"#);
    let bytes = get(&m, r#"osmoda_mesh_frame_bytes_total{direction="sent"}"#);
    // 12 texts + their rekeys + pings; each frame carries at least the 16-byte tag.
    assert!(
        frames >= 20.0 && bytes >= frames * 17.0,
        "{frames} frames, {bytes} bytes"
    );
    assert!(get(&m, r#"osmoda_mesh_frames_total{direction="received"}"#) >= 20.0);
    assert!(get(&m, r#"osmoda_mesh_links_total{direction="outbound"}"#) >= 1.0);
    assert!(get(&m, r#"osmoda_mesh_links_total{direction="inbound"}"#) >= 1.0);
    assert!(
        get(
            &m,
            r#"osmoda_mesh_handshakes_total{direction="inbound",outcome="ok"}"#
        ) >= 1.0
    );
    assert!(
        get(
            &m,
            r#"osmoda_mesh_handshakes_total{direction="outbound",outcome="ok"}"#
        ) >= 1.0
    );
    wait_metrics(
        &a,
        "the stranger refused, the silent connection counted",
        |m| {
            get(
                m,
                r#"osmoda_mesh_handshakes_total{direction="inbound",outcome="refused"}"#,
            ) >= 1.0
                && get(
                    m,
                    r#"osmoda_mesh_handshakes_total{direction="inbound",outcome="silent"}"#,
                ) >= 1.0
        },
    )
    .await;

    // alpha stops: its link closes for shutdown, beta's because the connection closed.
    a.stop_mesh().await;
    wait_metrics(&b, "no link open", |m| {
        get(m, "osmoda_mesh_links_open") == 0.0
            && get(m, r#"osmoda_mesh_link_closes_total{reason="shutdown"}"#) >= 1.0
            && get(
                m,
                r#"osmoda_mesh_link_closes_total{reason="connection_closed"}"#,
            ) >= 1.0
    })
    .await;
    a.start_mesh().await;
    a.wait_connected("beta").await;
    wait_metrics(&b, "both links up again", |m| {
        get(m, "osmoda_mesh_links_open") == 2.0
    })
    .await;
}
