//! Spooling: events reported while agentd is down arrive after it comes back, in order, once.

mod common;

use common::Process;
use serde_json::{json, Value};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_spooled_while_agentd_is_down_arrive_in_order_exactly_once() {
    let dir = tempfile::tempdir().expect("tempdir");
    let socket = dir.path().join("agentd.sock");
    let spool = dir.path().join("spool");
    {
        let reporter =
            osmoda_client::Reporter::open(&socket, &spool, "spool-test").expect("reporter");
        for i in 0..25 {
            reporter
                .report("switch.test", json!({ "i": i }))
                .await
                .expect("spooled");
        }
        assert_eq!(reporter.pending().expect("pending"), 25);
        assert!(reporter.flush().await.is_err() || reporter.pending().expect("pending") == 25);
    } // the reporter (and its process, as far as the spool knows) goes away

    let agentd = Process::spawn(dir.path());
    let reporter = osmoda_client::Reporter::open(&socket, &spool, "spool-test").expect("reporter");
    reporter
        .report("switch.test", json!({ "i": 25 }))
        .await
        .expect("spooled");
    reporter.flush().await.expect("flush");
    assert_eq!(reporter.pending().expect("pending"), 0);
    // A second flush has nothing to send and sends nothing twice.
    reporter.flush().await.expect("flush again");

    let client = osmoda_client::Client::new(&agentd.socket);
    let log = client
        .get("/events/log?type=switch.test&limit=1000")
        .await
        .expect("log")
        .ok_json()
        .expect("200");
    let seen: Vec<i64> = log
        .as_array()
        .expect("array")
        .iter()
        .map(|e| {
            serde_json::from_str::<Value>(e["payload"].as_str().expect("payload")).expect("json")
                ["i"]
                .as_i64()
                .expect("i")
        })
        .collect();
    assert_eq!(
        seen,
        (0..26).collect::<Vec<_>>(),
        "in order, no gaps, no duplicates"
    );
    assert!(log[0]["actor"]
        .as_str()
        .expect("actor")
        .starts_with("spool-test[uid="));
}
