//! What keyd refuses by shape before any policy, against the real daemon: typed data whose
//! type graph would make the EIP-712 encoder recurse without bound (a chain of hundreds of
//! struct types once overflowed a worker's stack and aborted keyd), and `personal_sign`
//! payloads that are not text (a 32-byte message is what contracts accept as a signed hash).
#![allow(clippy::unwrap_used)]

mod common;

use common::*;
use serde_json::{json, Map, Value};

const CC: &str = "0xcccccccccccccccccccccccccccccccccccccccc";

fn name(i: usize) -> String {
    format!("T{i:04}")
}

/// A chain of `n` struct types `T0000 {T0001<dims> a}`, …, the last `{uint256 x}`, with a
/// message that fills every level (`dims` arrays of one element each).
fn chain(n: usize, dims: usize) -> Value {
    let mut types = Map::new();
    types.insert(
        "EIP712Domain".into(),
        json!([{"name": "chainId", "type": "uint256"}, {"name": "verifyingContract", "type": "address"}]),
    );
    for i in 0..n - 1 {
        let ty = format!("{}{}", name(i + 1), "[]".repeat(dims));
        types.insert(name(i), json!([{ "name": "a", "type": ty }]));
    }
    types.insert(name(n - 1), json!([{"name": "x", "type": "uint256"}]));
    let mut message = json!({ "x": 7 });
    for _ in 0..n - 1 {
        let mut v = message;
        for _ in 0..dims {
            v = json!([v]);
        }
        message = json!({ "a": v });
    }
    json!({ "types": types, "primaryType": name(0),
        "domain": { "chainId": 1, "verifyingContract": CC }, "message": message })
}

fn typed(wallet: &str, data: Value) -> Value {
    json!({ "wallet_id": wallet, "payload": { "type": "typed_data", "data": data } })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn typed_data_type_graphs_are_bounded_before_they_are_encoded() {
    let mut p = eth_policy("1000", "5000", None);
    p["chains"]["ethereum"]["typed_data"] =
        json!([{ "chain_id": 1, "verifying_contract": CC, "primary_types": null }]);
    let env = Env::new(p).await;
    let id = env.create("ethereum", "ops").await["id"]
        .as_str()
        .unwrap()
        .to_string();
    // The deepest graph allowed, every level filled, is encoded and signed (off the runtime's
    // worker threads, on the blocking pool).
    let (s, r) = env.post("/wallet/sign", typed(&id, chain(16, 4))).await;
    assert_eq!(s, 200, "{r}");
    assert!(r["digest"].as_str().unwrap().starts_with("0x"), "{r}");
    // Past each bound: 400 naming it, nothing signed or recorded. The review's case (600
    // types, 25 KB) aborted keyd before.
    let mut many = chain(2, 0);
    for i in 0..64 {
        many["types"][format!("U{i}")] = json!([{"name": "x", "type": "uint256"}]);
    }
    let mut wide = chain(2, 0);
    wide["types"][name(1)] = Value::Array(
        (0..65)
            .map(|i| json!({"name": format!("f{i}"), "type": "uint256"}))
            .collect(),
    );
    // The review's shape: an empty array keeps the message one level deep.
    let mut long = chain(600, 1);
    long["message"] = json!({ "a": [] });
    // More struct values than the bound (each is hashed with its type's whole graph).
    let mut crowd = chain(2, 0);
    crowd["types"][name(0)] = json!([{"name": "a", "type": format!("{}[]", name(1))}]);
    crowd["message"] = json!({ "a": vec![json!({ "x": 1 }); 256] });
    let mut cycle = chain(3, 1);
    cycle["types"][name(2)] = json!([{"name": "back", "type": format!("{}[]", name(0))}]);
    let mut own = chain(2, 0);
    own["types"][name(1)] = json!([{"name": "me", "type": format!("{}[]", name(1))}]);
    for (i, (data, words)) in [
        (chain(17, 0), "chain of 17 struct types; at most 16"),
        (long, "601 struct types; at most 64"),
        (chain(3, 5), "5 array dimensions; at most 4"),
        (many, "67 struct types; at most 64"),
        (wide, "has 65 fields; at most 64"),
        (crowd, "holds 257 objects; at most 256"),
        (cycle, "refers to itself"),
        (own, "\"T0001\" refers to itself"),
    ]
    .into_iter()
    .enumerate()
    {
        let (s, r) = env.post("/wallet/sign", typed(&id, data)).await;
        assert_eq!(s, 400, "case {i}: {r}");
        let e = r["error"].as_str().unwrap();
        assert!(
            e.contains("`payload.data.") && e.contains(words),
            "case {i}: {e}"
        );
    }
    let (s, h) = env.get("/health").await;
    assert_eq!((s, h["status"].as_str()), (200, Some("ok")), "{h}");
    assert_eq!(env.receipts("wallet.sign").await.len(), 1);
    assert!(env.receipts("wallet.deny").await.is_empty());
}

fn personal(wallet: &str, payload: Value) -> Value {
    let mut p = payload;
    p["type"] = json!("personal_sign");
    json!({ "wallet_id": wallet, "payload": p })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn personal_sign_signs_text_never_a_32_byte_hash() {
    let env = Env::new(eth_policy("1000", "5000", None)).await;
    let id = env.create("ethereum", "ops").await["id"]
        .as_str()
        .unwrap()
        .to_string();
    let text = |n: usize| "x".repeat(n);
    for m in [text(1), text(31), text(33), "I agree: ünïcode".to_string()] {
        let (s, r) = env
            .post("/wallet/sign", personal(&id, json!({ "message": m })))
            .await;
        assert_eq!(s, 200, "{} bytes: {r}", m.len());
    }
    // Text given as hex (how dApps pass personal_sign) is the same signature.
    let (_, a) = env
        .post("/wallet/sign", personal(&id, json!({ "message": "hello" })))
        .await;
    let (s, b) = env
        .post(
            "/wallet/sign",
            personal(&id, json!({ "message_hex": "0x68656c6c6f" })),
        )
        .await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(a["signature"], b["signature"]);
    let signed = env.receipts("wallet.sign").await.len();
    let hash = format!("0x{}", "ab".repeat(32));
    for (i, (payload, words)) in [
        (json!({ "message_hex": hash }), "32-byte"),
        (json!({ "message": text(32) }), "32-byte"),
        (
            json!({ "message_hex": format!("0x{}", hex::encode(text(32))) }),
            "32-byte",
        ),
        (json!({ "message_hex": "0xff00" }), "not UTF-8"),
    ]
    .into_iter()
    .enumerate()
    {
        let (s, r) = env.post("/wallet/sign", personal(&id, payload)).await;
        assert_eq!(
            (s, r["detail"]["reason"].as_str()),
            (403, Some("personal_sign")),
            "case {i}: {r}"
        );
        assert!(
            r["error"].as_str().unwrap().contains(words),
            "case {i}: {r}"
        );
    }
    let denials = env.receipts("wallet.deny").await;
    assert_eq!(denials.len(), 4);
    assert!(denials.iter().all(|d| d["reason"] == "personal_sign"));
    assert_eq!(env.receipts("wallet.sign").await.len(), signed);
}

/// The review's ladder: `Root {L1[] f0 … f<fields-1>}`, `L1 {L2[] f0 …}`, …, the last level
/// `{uint256 x}`; every array empty, so the message holds one object whatever the graph.
fn ladder(levels: usize, fields: usize) -> Value {
    let mut types = chain(2, 0)["types"].as_object().unwrap().clone();
    types.retain(|k, _| k == "EIP712Domain");
    let level = |l: usize| {
        if l == 0 {
            "Root".to_string()
        } else {
            format!("L{l}")
        }
    };
    for l in 0..levels - 1 {
        let f: Vec<Value> = (0..fields)
            .map(|j| json!({"name": format!("f{j}"), "type": format!("{}[]", level(l + 1))}))
            .collect();
        types.insert(level(l), Value::Array(f));
    }
    types.insert(level(levels - 1), json!([{"name": "x", "type": "uint256"}]));
    let message: Map<String, Value> = (0..fields).map(|j| (format!("f{j}"), json!([]))).collect();
    json!({ "types": types, "primaryType": "Root",
        "domain": { "chainId": 1, "verifyingContract": CC }, "message": message })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn typed_data_whose_resolved_type_explodes_is_refused_at_once() {
    let mut p = eth_policy("1000", "5000", None);
    p["chains"]["ethereum"]["typed_data"] =
        json!([{ "chain_id": 1, "verifying_contract": CC, "primary_types": null }]);
    let env = Env::new(p).await;
    let id = env.create("ethereum", "ops").await["id"]
        .as_str()
        .unwrap()
        .to_string();
    // A fan-out under the bound (1,681 nodes resolved) signs.
    let (s, r) = env.post("/wallet/sign", typed(&id, ladder(4, 8))).await;
    assert_eq!(s, 200, "{r}");
    // Each level names the next through two fields: 2^15 nodes from 16 small types.
    let mut diamond = chain(16, 0);
    for i in 0..15 {
        diamond["types"][name(i)] = json!([
            {"name": "a", "type": name(i + 1)}, {"name": "b", "type": name(i + 1)}
        ]);
    }
    // Behind the domain's type instead of the primary type's: every other type is under
    // the bound, `EIP712Domain` naming `Root` (1,681) three times is not.
    let mut domain = ladder(4, 8);
    for k in 0..3 {
        domain["types"]["EIP712Domain"]
            .as_array_mut()
            .unwrap()
            .push(json!({"name": format!("r{k}"), "type": "Root[]"}));
    }
    domain["primaryType"] = json!("L3");
    domain["message"] = json!({ "x": 1 });
    // Before the bound: 0.6 s, 10 s and 19.5 s with 1.3 GB kept; the last one (33 KB)
    // aborted keyd.
    let started = std::time::Instant::now();
    for (i, data) in [
        ladder(5, 16),
        ladder(6, 16),
        ladder(8, 8),
        ladder(16, 64),
        diamond,
        domain,
    ]
    .into_iter()
    .enumerate()
    {
        let (s, r) = env.post("/wallet/sign", typed(&id, data)).await;
        assert_eq!(s, 400, "case {i}: {r}");
        let e = r["error"].as_str().unwrap();
        assert!(
            e.starts_with("`payload.data.types`: ")
                && e.contains("nodes once its struct types are resolved")
                && e.contains("at most 4096"),
            "case {i}: {e}"
        );
        assert!(
            i != 5 || e.contains("\"EIP712Domain\" expands to 5049 nodes"),
            "{e}"
        );
    }
    let took = started.elapsed();
    assert!(took < std::time::Duration::from_secs(5), "{took:?}");
    let (s, h) = env.get("/health").await;
    assert_eq!((s, h["status"].as_str()), (200, Some("ok")), "{h}");
    assert_eq!(env.receipts("wallet.sign").await.len(), 1);
    assert!(env.receipts("wallet.deny").await.is_empty());
}
