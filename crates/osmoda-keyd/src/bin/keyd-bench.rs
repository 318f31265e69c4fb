//! Benchmark (a separate command, never part of the tests): policy-checked Ethereum signatures
//! per second through keyd's socket (judge, signature, then the charge and its receipt in a
//! group-committed SQLite transaction, `synchronous=FULL`) versus raw alloy signing in
//! process, in the same run.
//!
//!     cargo run --release -p osmoda-keyd --bin keyd-bench [-- SENDS CONCURRENCY]

use std::sync::Arc;
use std::time::Instant;

use osmoda_keyd::chains::eth::{EthKey, TxRequest};
use serde_json::json;

fn send_body(wallet: &str, nonce: u64) -> serde_json::Value {
    json!({
        "wallet_id": wallet, "to": "0x3535353535353535353535353535353535353535", "amount": "1",
        "nonce": nonce, "gas_limit": 21000, "max_fee_per_gas": "30000000000",
        "max_priority_fee_per_gas": "1000000000",
    })
}

#[tokio::main(flavor = "multi_thread")]
async fn main() -> anyhow::Result<()> {
    let args: Vec<u64> = std::env::args()
        .skip(1)
        .filter_map(|a| a.parse().ok())
        .collect();
    let sends = args.first().copied().unwrap_or(5000);
    let conc = args.get(1).copied().unwrap_or(8);
    let _ = osmoda_daemon::raise_fd_limit();
    let dir = tempfile::tempdir()?;
    let cfg = json!({ "secret_file": null, "policy": { "chains": { "ethereum": {
        "chain_ids": [1], "per_tx_max": "1000000000000000", "daily_limit": "1000000000000000000000000",
        "approval_threshold": null, "recipient_allowlist": null } }, "wallets": {} } });
    std::fs::write(dir.path().join("keyd.json"), cfg.to_string())?;
    // No agentd: receipts wait in the outbox (written with their charges), as they would while
    // agentd is busy.
    let state = osmoda_keyd::AppState::open(osmoda_keyd::Options {
        config: dir.path().join("keyd.json"),
        state_dir: dir.path().join("keyd"),
        agentd_socket: dir.path().join("no-agentd.sock"),
        clock: osmoda_keyd::system_clock(),
    })?;
    let socket = dir.path().join("keyd.sock");
    let listener = tokio::net::UnixListener::bind(&socket)?;
    let (trigger, shutdown) = osmoda_keyd::shutdown::channel();
    let server = tokio::spawn(osmoda_keyd::serve(listener, Arc::clone(&state), shutdown));
    let client = osmoda_client::Client::new(&socket);
    let w = client
        .post(
            "/wallet/create",
            &json!({ "chain": "ethereum", "label": "bench" }),
        )
        .await?
        .ok_json()?;
    let id = w["id"].as_str().unwrap_or_default().to_string();

    // Through the socket.
    let t0 = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for c in 0..conc {
        let client = osmoda_client::Client::new(&socket);
        let id = id.clone();
        tasks.spawn(async move {
            let mut lat = Vec::new();
            let mut n = c;
            while n < sends {
                let t = Instant::now();
                let r = client.post("/wallet/send", &send_body(&id, n)).await?;
                anyhow::ensure!(r.status == 200, "send answered {}: {}", r.status, r.body);
                lat.push(t.elapsed().as_secs_f64() * 1000.0);
                n += conc;
            }
            anyhow::Ok(lat)
        });
    }
    let mut lat = Vec::new();
    while let Some(r) = tasks.join_next().await {
        lat.extend(r??);
    }
    let socket_secs = t0.elapsed().as_secs_f64();
    lat.sort_by(f64::total_cmp);
    let pct = |p: f64| lat[((lat.len() as f64 * p) as usize).min(lat.len() - 1)];

    // Raw alloy signing of the same transaction in process.
    let key = zeroize::Zeroizing::new([0x46u8; 32]);
    let k = EthKey::from_secret(&key)?;
    let t1 = Instant::now();
    for n in 0..sends {
        let req: TxRequest = serde_json::from_value(
            send_body("", n)
                .as_object()
                .map(|o| {
                    let mut o = o.clone();
                    o.remove("wallet_id");
                    o.remove("amount");
                    o.insert("value".into(), json!("1"));
                    o.insert("chain_id".into(), json!(1));
                    serde_json::Value::Object(o)
                })
                .unwrap_or_default(),
        )?;
        let tx = req.build(None)?;
        std::hint::black_box(k.sign_tx(&tx)?);
    }
    let raw_secs = t1.elapsed().as_secs_f64();
    println!(
        "{sends} policy-checked sends through the socket, {conc} concurrent: {:.0}/s (p50 {:.2} ms, p99 {:.2} ms)",
        sends as f64 / socket_secs,
        pct(0.5),
        pct(0.99)
    );
    println!(
        "raw alloy signing in process (build + sign + encode): {:.0}/s",
        sends as f64 / raw_secs
    );
    let (batches, charges) = state.store.commit_stats();
    println!(
        "group commit: {charges} charges in {batches} transactions (mean batch {:.1}); load average {}",
        charges as f64 / batches.max(1) as f64,
        std::fs::read_to_string("/proc/loadavg").unwrap_or_default().trim()
    );
    println!(
        "spent today: {}",
        state.store.spent(&state.day(), "chain:ethereum:native")?
    );
    trigger.fire();
    server.await??;
    Ok(())
}
