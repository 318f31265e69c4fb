//! Who owns what a peer's traffic leaves on this host: a reserved request topic belongs to its
//! daemon (`ledger.cosign`: agentd's uid, by `SO_PEERCRED`), an inbox to the identity behind
//! its name (whatever changed the name: the tree included), and a peer's share of this host's
//! ledger is a budget per window, recorded without holding up its link.
//! (Review of the other daemons, findings 10, 9 and 7.)
#![allow(clippy::unwrap_used)]

mod common;

use std::os::unix::fs::PermissionsExt as _;
use std::time::{Duration, Instant};

use common::{fast, within, Host};
use serde_json::{json, Value};

/// `other`'s public keys, as `GET /identity` publishes them.
async fn keys_of(other: &Host) -> Value {
    let (s, id) = other.get("/identity").await;
    assert_eq!(s, 200, "{id}");
    id["public_keys"].clone()
}

/// Rewrites `h`'s mesh.json with `peers` (name → (endpoint, keys)), as an activation would.
fn set_peers(h: &Host, peers: &[(&str, String, Value)]) {
    let mut cfg: Value =
        serde_json::from_str(&std::fs::read_to_string(h.mesh_json()).unwrap()).unwrap();
    cfg["peers"] = json!({});
    for (name, ep, keys) in peers {
        cfg["peers"][*name] = json!({ "endpoint": ep, "public_keys": keys });
    }
    // Written aside and renamed: the daemon never reads half a file.
    let tmp = h.mesh_json().with_extension("tmp");
    std::fs::write(&tmp, cfg.to_string()).unwrap();
    std::fs::rename(&tmp, h.mesh_json()).unwrap();
}

/// A and B declare each other in mesh.json (A names B `b_name`) and connect.
async fn link(a: &Host, b: &Host, b_name: &str) {
    set_peers(a, &[(b_name, b.endpoint(), keys_of(b).await)]);
    set_peers(b, &[("alpha", a.endpoint(), keys_of(a).await)]);
    a.wait_connected(b_name).await;
    b.wait_connected("alpha").await;
}

/// One request to `h`'s mesh socket made by a process running as uid 65534 (`nobody`):
/// (status, body).
async fn as_nobody(h: &Host, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
    // The socket and the way to it are open to that uid (the daemon's own check is the test).
    std::fs::set_permissions(h.dir.path(), std::fs::Permissions::from_mode(0o711)).unwrap();
    std::fs::set_permissions(h.socket(), std::fs::Permissions::from_mode(0o666)).unwrap();
    let (sock, url) = (h.socket(), format!("http://mesh{path}"));
    let method = method.to_string();
    let out = tokio::task::spawn_blocking(move || {
        use std::os::unix::process::CommandExt as _;
        let mut c = std::process::Command::new("curl");
        c.args(["-sS", "-m", "30", "-X", &method, "--unix-socket"])
            .arg(&sock)
            .args(["-w", "\n%{http_code}"]);
        if let Some(b) = body {
            c.args(["-H", "content-type: application/json", "-d", &b.to_string()]);
        }
        c.arg(&url).uid(65534).gid(65534).output().unwrap()
    })
    .await
    .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let (body, code) = text.rsplit_once('\n').unwrap_or(("", &text));
    assert!(
        out.status.success(),
        "curl as nobody: {text} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    (
        code.trim().parse().unwrap(),
        serde_json::from_str(body).unwrap_or(Value::Null),
    )
}

/// `b` asks alpha a request of `topic` (in the background, as its agentd would).
fn ask_alpha(
    b: &Host,
    topic: &str,
    body: Value,
) -> tokio::task::JoinHandle<osmoda_client::Response> {
    let (c, req) = (
        b.client(),
        json!({ "topic": topic, "body": body, "timeout_secs": 30 }),
    );
    tokio::spawn(async move { c.post("/peer/alpha/request", &req).await.unwrap() })
}

/// Uid 65534 answers request `id` on `a`.
async fn respond_as_nobody(a: &Host, id: u64, answer: Value) -> (u16, Value) {
    as_nobody(a, "POST", &format!("/requests/{id}/respond"), Some(answer)).await
}

/// Finding 10: `ledger.cosign` is sent, taken and answered only by agentd's uid (the uid
/// serving agentd's socket; in this test, the test's own). Another uid gets a 403 naming the
/// topic, is never handed such a request by an any-topic poll, and cannot answer one agentd
/// took; topics nobody reserved stay open to it.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_reserved_topic_is_served_only_to_its_daemon() {
    let a = Host::start("alpha", fast()).await;
    let b = Host::start("beta", fast()).await;
    link(&a, &b, "beta").await;

    let (s, v) = as_nobody(
        &a,
        "GET",
        "/requests/next?topic=ledger.cosign&wait_secs=0",
        None,
    )
    .await;
    assert_eq!(s, 403, "{v}");
    let e = v["error"].as_str().unwrap();
    assert!(
        e.contains("\"ledger.cosign\" belongs to agentd") && e.contains("uid 65534"),
        "{v}"
    );
    assert_eq!(v["detail"]["kind"], "forbidden", "{v}");
    let (s, v) = as_nobody(
        &a,
        "POST",
        "/peer/beta/request",
        Some(json!({ "topic": "ledger.cosign", "body": {}, "timeout_secs": 1 })),
    )
    .await;
    assert_eq!(s, 403, "{v}");

    // B's agentd (the test, as its uid) asks A's witness; a poll for any topic by another
    // uid is not handed the request.
    let asked = ask_alpha(&b, "ledger.cosign", json!({ "note": "n" }));
    let start = Instant::now();
    while a.mesh().state.requests.waiting() == 0 {
        assert!(start.elapsed() < common::STEP, "the request never arrived");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let (s, v) = as_nobody(&a, "GET", "/requests/next?wait_secs=1", None).await;
    assert_eq!((s, &v["request"]), (200, &Value::Null), "{v}");
    let (s, v) = a
        .get("/requests/next?topic=ledger.cosign&wait_secs=5")
        .await;
    assert_eq!(s, 200, "{v}");
    let id = v["request"]["id"].as_u64().unwrap();
    let (s, v) = respond_as_nobody(
        &a,
        id,
        json!({ "ok": false, "body": { "refused": "forged" } }),
    )
    .await;
    assert_eq!(s, 403, "{v}");
    assert!(
        v["error"]
            .as_str()
            .unwrap()
            .contains("taken by another caller"),
        "{v}"
    );
    let (s, v) = a
        .post(
            &format!("/requests/{id}/respond"),
            json!({ "body": { "cosignature": "by agentd" } }),
        )
        .await;
    assert_eq!(s, 200, "{v}");
    let r = within("B's request to be answered", asked).await.unwrap();
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(
        (&r.body["ok"], &r.body["body"]),
        (&json!(true), &json!({ "cosignature": "by agentd" }))
    );

    // A topic nobody reserved: any caller sends, takes and answers it.
    let asked = ask_alpha(&b, "canary.verdict", json!(1));
    let (s, v) = as_nobody(
        &a,
        "GET",
        "/requests/next?topic=canary.verdict&wait_secs=20",
        None,
    )
    .await;
    assert_eq!(s, 200, "{v}");
    let id = v["request"]["id"].as_u64().unwrap();
    let (s, v) = respond_as_nobody(&a, id, json!({ "body": "go" })).await;
    assert_eq!(s, 200, "{v}");
    let r = within("the canary request to be answered", asked)
        .await
        .unwrap();
    assert_eq!(r.body["body"], "go", "{}", r.body);
}

/// Finding 9: an inbox belongs to the identity behind a name. When mesh.json (the tree's
/// rendering, no API involved) gives the name to another identity, or drops it, the messages
/// the old identity left under it are gone, from the database too.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_inbox_follows_the_identity_behind_its_name() {
    let a = Host::start("alpha", fast()).await;
    let b = Host::start("beta", fast()).await;
    link(&a, &b, "hostb").await;
    for i in 0..5 {
        let (s, v) = b
            .post("/peer/alpha/send", json!({ "message": format!("m{i}") }))
            .await;
        assert_eq!(s, 200, "{v}");
    }
    a.wait_inbox("hostb", 5).await;
    let stored = |name: &str| a.mesh().state.store.inbox_len(name).unwrap();
    let settled = |name: &'static str| async move {
        let start = Instant::now();
        while stored(name) != 0 {
            assert!(start.elapsed() < common::STEP, "{name}'s inbox was kept");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    };

    // The tree gives `hostb` to a third identity: B's words leave with B (no API call made).
    let c = osmoda_mesh::identity::Identity::generate()
        .unwrap()
        .keys()
        .encode();
    set_peers(
        &a,
        &[(
            "hostb",
            "127.0.0.1:9".into(),
            serde_json::to_value(&c).unwrap(),
        )],
    );
    settled("hostb").await;
    let (_, v) = a.get("/peer/hostb").await;
    assert_eq!(
        (&v["declared"], &v["inbox"]),
        (&json!(true), &json!(0)),
        "{v}"
    );
    assert!(a.inbox("hostb").await.is_empty());

    // Back to B, new words; then the name is dropped (B is renamed `hostc`): nothing stays
    // under `hostb`, and B's words from now on are under `hostc`.
    set_peers(&a, &[("hostb", b.endpoint(), keys_of(&b).await)]);
    a.wait_connected("hostb").await;
    send_until_received(&a, &b, "hostb", "again").await;
    set_peers(&a, &[("hostc", b.endpoint(), keys_of(&b).await)]);
    settled("hostb").await;
    a.wait_connected("hostc").await;
    let got = send_until_received(&a, &b, "hostc", "as c").await;
    assert!(got.iter().all(|m| m["body"] == "as c"), "{got:?}");
    let (s, v) = a.get("/peer/hostb/inbox").await;
    assert_eq!((s, &v["messages"]), (200, &json!([])), "{v}");
}

/// B sends `text` to A until A's inbox of `name` has it (B's link may be the one A is
/// closing); returns that inbox.
async fn send_until_received(a: &Host, b: &Host, name: &str, text: &str) -> Vec<Value> {
    within(&format!("{text:?} to reach {name}'s inbox"), async {
        loop {
            let _ = b.post("/peer/alpha/send", json!({ "message": text })).await;
            tokio::time::sleep(Duration::from_millis(200)).await;
            let got = a.inbox(name).await;
            if !got.is_empty() {
                return got;
            }
        }
    })
    .await
}

/// Blocks every append to a spool (its temp file is a FIFO nobody reads) until dropped.
struct BlockedSpool(std::path::PathBuf);

impl BlockedSpool {
    fn new(spool: &std::path::Path) -> BlockedSpool {
        let fifo = spool.join(".next_seq.tmp");
        let st = std::process::Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .unwrap();
        assert!(st.success());
        BlockedSpool(fifo)
    }
}

impl Drop for BlockedSpool {
    fn drop(&mut self) {
        use std::os::unix::fs::OpenOptionsExt as _;
        // A reader lets the blocked appends through (they fail: a FIFO cannot be synced);
        // once it is gone, appends write real files again.
        let r = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(0o4000) // O_NONBLOCK
            .open(&self.0);
        std::thread::sleep(Duration::from_millis(300));
        let _ = std::fs::remove_file(&self.0);
        std::thread::sleep(Duration::from_millis(300));
        drop(r);
    }
}

/// Finding 7: a peer's messages cost this host's ledger a budget per window, not one event
/// each: the rest are counted into one `mesh.receive.over_budget`; and the link's reader never
/// waits for the ledger: with every append to mesh's spool blocked, a peer's messages still
/// reach the inbox.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_peer_has_an_event_budget_and_its_link_never_waits_for_the_ledger() {
    let mut t = fast();
    t.event_window = Duration::from_secs(8);
    let a = Host::start("alpha", t).await;
    let b = Host::start("beta", fast()).await;
    link(&a, &b, "beta").await;
    const N: usize = 150;
    for _ in 0..N {
        let (s, v) = b.post("/peer/alpha/send", json!({ "message": "x" })).await;
        assert_eq!(s, 200, "{v}");
    }
    let host_a = &a;
    let stored = |n: usize| async move {
        within(&format!("{n} messages in A's inbox"), async {
            while (host_a.mesh().state.store.inbox_len("beta").unwrap() as usize) < n {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
        .await;
    };
    stored(N).await;
    // Every message is in A's ledger once: one by one, or counted in a window's summary
    // (recorded when its window ends; the one-by-one events by tasks of their own).
    let (one_by_one, summaries) = within("every message to be in the ledger", async {
        loop {
            let summaries = a.events("receive.over_budget").await;
            let one_by_one = a.events("message.receive").await.len();
            let counted: u64 = summaries
                .iter()
                .map(|s| s["messages"].as_u64().unwrap())
                .sum();
            assert!(one_by_one as u64 + counted <= N as u64, "{summaries:?}");
            if one_by_one as u64 + counted == N as u64 && !summaries.is_empty() {
                return (one_by_one, summaries);
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    })
    .await;
    let counted = N - one_by_one;
    assert!(
        one_by_one <= 2 * osmoda_mesh::peer_events::PER_WINDOW as usize,
        "{one_by_one} events one by one"
    );
    let s = &summaries[0];
    assert_eq!(s["peer"], "beta", "{s}");
    assert!(
        s["bytes"].as_u64().unwrap() >= s["messages"].as_u64().unwrap(),
        "{s}"
    );
    assert!(counted > 0);

    // Every append to A's spool blocks: B's next messages reach A's inbox all the same.
    let blocked = BlockedSpool::new(&a.dir.path().join("mesh/spool"));
    for i in 0..20 {
        let (s, v) = b
            .post(
                "/peer/alpha/send",
                json!({ "message": format!("while blocked {i}") }),
            )
            .await;
        assert_eq!(s, 200, "{v}");
    }
    stored(N + 20).await;
    drop(blocked);
}
