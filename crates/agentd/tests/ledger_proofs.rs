//! The ledger's Merkle tree through the real daemon: head, inclusion and consistency proofs that
//! verify on the client side, and clear 4xx for every bad request.

mod common;

use common::{ClientExt, Daemon};
use osmoda_ledger::{verify_consistency, verify_inclusion, ConsistencyProof, InclusionProof};
use serde_json::json;

#[tokio::test]
async fn proofs_served_by_agentd_verify_and_bad_requests_get_4xx() {
    let d = Daemon::start().await;
    let c = d.agent();
    for i in 0..9 {
        c.post_ok(
            "/events/append",
            &json!({ "type": "test.note", "daemon": "tester", "payload": { "i": i } }),
        )
        .await;
    }
    let head = c.get_ok("/ledger/head").await;
    let size = head["size"].as_u64().expect("size");
    assert_eq!(size, d.state.ledger.head().expect("head").events);
    assert_eq!(
        head["root"],
        json!(d.state.ledger.tree_head().expect("t").root)
    );

    // Checkpoints are off in this daemon: the endpoint says so rather than failing.
    assert_eq!(
        c.get_ok("/ledger/checkpoint").await,
        json!({ "checkpoint": null, "vkey": null })
    );
    let p: InclusionProof =
        serde_json::from_value(c.get_ok("/ledger/proof/inclusion?id=3").await).expect("shape");
    assert_eq!((p.id, p.tree_size), (3, size));
    assert_eq!(p.root, head["root"].as_str().expect("root"));
    verify_inclusion(&p).expect("inclusion verifies");
    let p: InclusionProof =
        serde_json::from_value(c.get_ok("/ledger/proof/inclusion?id=2&size=4").await)
            .expect("shape");
    verify_inclusion(&p).expect("inclusion in an older tree verifies");

    let proof: ConsistencyProof =
        serde_json::from_value(c.get_ok("/ledger/proof/consistency?from=4").await).expect("shape");
    assert_eq!((proof.from, proof.to), (4, size));
    verify_consistency(&proof).expect("consistency verifies");
    let proof: ConsistencyProof =
        serde_json::from_value(c.get_ok("/ledger/proof/consistency?from=0&to=5").await)
            .expect("shape");
    verify_consistency(&proof).expect("from the empty tree");

    for (path, status, says) in [
        ("/ledger/proof/inclusion?id=0", 400, "1..="),
        (
            &format!("/ledger/proof/inclusion?id={}", size + 1),
            400,
            "1..=",
        ),
        (
            "/ledger/proof/inclusion?id=2&size=999",
            400,
            "larger than the tree",
        ),
        ("/ledger/proof/inclusion", 400, "invalid query"),
        ("/ledger/proof/inclusion?id=x", 400, "invalid query"),
        ("/ledger/proof/inclusion?id=1&bogus=1", 400, "invalid query"),
        (
            "/ledger/proof/consistency?from=5&to=2",
            400,
            "larger than to",
        ),
        (
            "/ledger/proof/consistency?from=1&to=999",
            400,
            "larger than the tree",
        ),
        ("/ledger/proof/consistency?from=-1", 400, "invalid query"),
    ] {
        let r = c.get(path).await.expect("get");
        assert_eq!(r.status, status, "{path}: {}", r.body);
        let error = r.body["error"].as_str().expect("error string");
        assert!(error.contains(says), "{path}: {error}");
    }
    // A deleted row: the tree covers it, the event is gone.
    rusqlite::Connection::open(d.state.ledger.path())
        .expect("sqlite")
        .execute("DELETE FROM events WHERE id = 2", [])
        .expect("delete");
    let r = c.get("/ledger/proof/inclusion?id=2").await.expect("get");
    assert_eq!(r.status, 404, "{}", r.body);
    d.stop().await;
}
