//! Keys at rest: imports land encrypted (no plaintext key bytes anywhere under the state dir,
//! as hex or base58), a tampered ciphertext, nonce or AAD input fails with a clear error, and
//! `check-config` judges keyd.json.
#![allow(clippy::unwrap_used)]

mod common;

use common::*;
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn imported_keys_never_reach_the_state_dir_in_clear() {
    let env = Env::new(eth_policy("1000", "5000", None)).await;
    let (s, w) = env
        .post("/wallet/create", json!({ "chain": "ethereum", "label": "imported",
            "import": { "format": "keystore_v3", "keystore": pbkdf2_keystore(), "password": "testpassword" } }))
        .await;
    assert_eq!(s, 200, "{w}");
    assert_eq!(w["address"], "0x008AeEda4D805471dF9b2A5B0f38A0C3bCBA786b");
    let keypair = rfc8032_keypair();
    let (s, w) = env
        .post("/wallet/create", json!({ "chain": "solana", "label": "sol", "import": { "format": "solana_keypair", "keypair": keypair } }))
        .await;
    assert_eq!(s, 200, "{w}");
    assert_eq!(w["address"], "FVen3X669xLzsi6N2V91DoiyzHzg1uAgqiT8jZ9nS96Z");
    // Signing works with the imported key.
    let (s, r) = env
        .post("/wallet/send", eth_send(w["id"].as_str().unwrap(), "1", 0))
        .await;
    assert_eq!(s, 400, "a Solana wallet cannot take an Ethereum send: {r}");

    let needles = key_needles();
    let files = files_under(&env.state_dir());
    assert!(files.iter().any(|f| f.ends_with("keyd.db")), "{files:?}");
    for f in &files {
        // A spool file may be delivered (and removed) while we scan.
        let Ok(bytes) = std::fs::read(f) else {
            continue;
        };
        for (what, needle) in &needles {
            assert!(!contains(&bytes, needle), "{what} found in {}", f.display());
        }
    }
    // Nor in the ledger.
    for e in env.receipts("wallet.create").await {
        let text = e.to_string();
        assert!(
            !text.contains(KEYSTORE_KEY) && !text.contains(RFC8032_SEED),
            "{text}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tampered_ciphertext_or_aad_fails_to_load_with_a_clear_error() {
    let mut policy = eth_policy("1000", "5000", None);
    policy["chains"]["solana"] = json!({ "chain_ids": [], "per_tx_max": "1", "daily_limit": "1",
        "approval_threshold": null, "recipient_allowlist": null });
    let env = Env::new(policy).await;
    let a = env.create("ethereum", "a").await["id"]
        .as_str()
        .unwrap()
        .to_string();
    let b = env.create("ethereum", "b").await["id"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(env.post("/wallet/send", eth_send(&a, "1", 0)).await.0, 200);
    let db = rusqlite::Connection::open(env.state_dir().join("keyd.db")).unwrap();
    let sign = |id: String| {
        let env = &env;
        async move {
            env.post(
                "/wallet/sign",
                json!({ "wallet_id": id, "payload": { "type": "personal_sign", "message": "x" } }),
            )
            .await
        }
    };
    // One flipped ciphertext bit.
    db.execute(
        "UPDATE wallets SET ciphertext = CAST(ciphertext AS BLOB) WHERE id = ?1",
        [&a],
    )
    .unwrap();
    let ct: Vec<u8> = db
        .query_row("SELECT ciphertext FROM wallets WHERE id = ?1", [&a], |r| {
            r.get(0)
        })
        .unwrap();
    let mut bad = ct.clone();
    bad[3] ^= 1;
    db.execute(
        "UPDATE wallets SET ciphertext = ?1 WHERE id = ?2",
        rusqlite::params![bad, a],
    )
    .unwrap();
    let (s, r) = sign(a.clone()).await;
    assert_eq!(
        (s, r["detail"]["kind"].as_str()),
        (500, Some("vault")),
        "{r}"
    );
    assert!(
        r["error"].as_str().unwrap().contains("does not decrypt"),
        "{r}"
    );
    db.execute(
        "UPDATE wallets SET ciphertext = ?1 WHERE id = ?2",
        rusqlite::params![ct, a],
    )
    .unwrap();
    assert_eq!(sign(a.clone()).await.0, 200, "restored");
    // The AAD binds the wallet id: b's sealed key copied into a does not open as a's.
    db.execute(
        "UPDATE wallets SET (nonce, ciphertext) = (SELECT nonce, ciphertext FROM wallets WHERE id = ?1) WHERE id = ?2",
        [&b, &a],
    )
    .unwrap();
    let (s, r) = sign(a.clone()).await;
    assert_eq!(s, 500, "{r}");
    assert!(
        r["error"].as_str().unwrap().contains("does not decrypt"),
        "{r}"
    );
    // And the chain: an Ethereum key relabelled Solana does not open.
    db.execute("UPDATE wallets SET chain = 'solana' WHERE id = ?1", [&b])
        .unwrap();
    let (s, r) = env
        .post(
            "/wallet/sign",
            json!({ "wallet_id": b, "payload": { "type": "offchain_message", "message": "x" } }),
        )
        .await;
    assert_eq!(
        (s, r["detail"]["kind"].as_str()),
        (500, Some("vault")),
        "{r}"
    );
    // Restored, it opens again.
    db.execute("UPDATE wallets SET chain = 'ethereum' WHERE id = ?1", [&b])
        .unwrap();
    assert_eq!(sign(b.clone()).await.0, 200);
    drop(db);
    // Nothing was charged by the failures.
    assert_eq!(env.spent("chain:ethereum:native"), 1);
}

/// The public key is recomputed from the opened key on every use: a wallet whose recorded
/// address is not its key's (a state dir edited, or restored half from another) signs nothing,
/// on either chain, and says which address the key belongs to.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_that_does_not_match_its_recorded_address_signs_nothing() {
    let mut policy = eth_policy("1000", "5000", None);
    policy["chains"]["solana"] = json!({ "chain_ids": [], "per_tx_max": "1", "daily_limit": "1",
        "approval_threshold": null, "recipient_allowlist": null });
    let env = Env::new(policy).await;
    let db = rusqlite::Connection::open(env.state_dir().join("keyd.db")).unwrap();
    // Another key's address on each chain (key 1; RFC 8032 test 1).
    for (chain, message, other) in [
        (
            "ethereum",
            "personal_sign",
            "0x7E5F4552091A69125d5DfCb7b8C2659029395Bdf",
        ),
        (
            "solana",
            "offchain_message",
            "FVen3X669xLzsi6N2V91DoiyzHzg1uAgqiT8jZ9nS96Z",
        ),
    ] {
        let w = env.create(chain, chain).await;
        let (id, address) = (w["id"].as_str().unwrap(), w["address"].as_str().unwrap());
        let sign = || {
            env.post(
                "/wallet/sign",
                json!({ "wallet_id": id, "payload": { "type": message, "message": "x" } }),
            )
        };
        db.execute("UPDATE wallets SET address = ?1 WHERE id = ?2", [other, id])
            .unwrap();
        let (s, r) = sign().await;
        assert_eq!(
            (s, r["detail"]["kind"].as_str()),
            (500, Some("vault")),
            "{chain}: {r}"
        );
        let e = r["error"].as_str().unwrap();
        assert!(
            e.contains(&format!(
                "belongs to {address}, not to its recorded address {other}"
            )),
            "{chain}: {e}"
        );
        db.execute(
            "UPDATE wallets SET address = ?1 WHERE id = ?2",
            [address, id],
        )
        .unwrap();
        assert_eq!(sign().await.0, 200, "{chain}: restored, it signs");
    }
    // Only the two signatures after the repair were made.
    assert_eq!(env.receipts("wallet.sign").await.len(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_secret_that_opens_none_of_the_keys_stops_keyd_from_starting() {
    let mut env = Env::new(eth_policy("1000", "5000", None)).await;
    let a = env.create("ethereum", "a").await["id"]
        .as_str()
        .unwrap()
        .to_string();
    env.stop_keyd().await;
    let secret = env.state_dir().join("secret");
    use std::os::unix::fs::PermissionsExt as _;
    assert_eq!(
        std::fs::metadata(&secret).unwrap().permissions().mode() & 0o777,
        0o600
    );
    let original = std::fs::read(&secret).unwrap();
    let refused = |env: &Env, what: &str, needle: &str| {
        let Err(e) = env.open_keyd() else {
            panic!("{what}: keyd started")
        };
        let e = e.to_string();
        assert!(
            e.contains(needle) && e.contains("does not start"),
            "{what}: {e}"
        );
    };
    // Another local secret.
    std::fs::write(&secret, "another secret of enough length").unwrap();
    refused(&env, "another local secret", "does not open the keys");
    // secret_file pointing at another file (an operator setting secretFile after local mode).
    let other = env.dir.path().join("other-secret");
    std::fs::write(&other, "yet another secret, 32 bytes long").unwrap();
    std::fs::set_permissions(&other, std::fs::Permissions::from_mode(0o600)).unwrap();
    std::fs::write(&secret, &original).unwrap();
    let cfg = |file: Option<&std::path::Path>| {
        json!({ "secret_file": file, "policy": eth_policy("1000", "5000", None) }).to_string()
    };
    std::fs::write(env.config(), cfg(Some(&other))).unwrap();
    refused(&env, "secret_file", "other-secret");
    // A missing local secret is never regenerated over existing wallets.
    std::fs::write(env.config(), cfg(None)).unwrap();
    std::fs::remove_file(&secret).unwrap();
    refused(&env, "missing secret", "is missing");
    assert!(!secret.exists(), "no new secret was written");
    // The right secret, in a secret_file, opens it again.
    std::fs::write(&other, &original).unwrap();
    std::fs::write(env.config(), cfg(Some(&other))).unwrap();
    env.start_keyd().await;
    let (s, r) = env
        .post(
            "/wallet/sign",
            json!({ "wallet_id": a, "payload": { "type": "personal_sign", "message": "x" } }),
        )
        .await;
    assert_eq!(s, 200, "{r}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deleted_wallets_sealed_key_is_in_no_state_file() {
    let policy = json!({ "chains": {}, "wallets": {} });
    let env = Env::new(policy).await;
    let id = env.create("solana", "todel").await["id"]
        .as_str()
        .unwrap()
        .to_string();
    env.create("solana", "keep").await;
    let db = rusqlite::Connection::open(env.state_dir().join("keyd.db")).unwrap();
    let ct: Vec<u8> = db
        .query_row("SELECT ciphertext FROM wallets WHERE id = ?1", [&id], |r| {
            r.get(0)
        })
        .unwrap();
    drop(db);
    let found = |ct: &[u8]| -> Vec<String> {
        files_under(&env.state_dir())
            .into_iter()
            .filter(|f| std::fs::read(f).is_ok_and(|b| contains(&b, ct)))
            .map(|f| f.display().to_string())
            .collect()
    };
    assert!(
        !found(&ct).is_empty(),
        "the sealed key is stored before the delete"
    );
    let (_, r) = env.post("/wallet/delete", json!({ "wallet_id": id })).await;
    let ticket = r["detail"]["ticket"]["id"].as_str().unwrap().to_string();
    env.human(&format!("/approval/{ticket}/approve")).await;
    let (s, r) = env
        .post(
            "/wallet/delete",
            json!({ "wallet_id": id, "approval": ticket }),
        )
        .await;
    assert_eq!(s, 200, "{r}");
    assert_eq!(found(&ct), Vec::<String>::new(), "db, WAL, spool, secret");
    let (s, r) = env.get("/wallet/list").await;
    assert_eq!((s, r["wallets"].as_array().unwrap().len()), (200, 1), "{r}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn import_errors_never_echo_a_secret() {
    let env = Env::new(eth_policy("1000", "5000", None)).await;
    let hex_key = "4c0883a69102937d6231471b5dbb6204fe5129617082792ae468d01a3f362318";
    let password = "987654321";
    let mut ks = pbkdf2_keystore();
    ks["crypto"]["kdfparams"]["salt"] = json!(987_654_321);
    let mut ks_type = pbkdf2_keystore();
    ks_type["version"] = json!(hex_key);
    // Every string and number of the keystore, pasted where a secret could land.
    let edited = |path: &[&str], v: serde_json::Value| {
        let mut k = pbkdf2_keystore();
        let mut at = &mut k;
        for p in path {
            at = &mut at[*p];
        }
        *at = v;
        json!({ "chain": "ethereum", "label": "a", "import": { "format": "keystore_v3", "keystore": k, "password": password } })
    };
    let cases = [
        json!({ "chain": "solana", "label": "a", "import": { "format": "solana_keypair", "keypair": hex_key } }),
        json!({ "chain": "solana", "label": "a", "import": hex_key }),
        json!({ "chain": "solana", "label": "a", "import": { "format": hex_key } }),
        json!({ "chain": "solana", "label": "a", "import": { "format": "solana_keypair", "keypair": [], hex_key: 1 } }),
        json!({ "chain": "ethereum", "label": "a", "import": { "format": "keystore_v3", "keystore": {}, "password": 987_654_321 } }),
        json!({ "chain": "ethereum", "label": "a", "import": { "format": "keystore_v3", "keystore": hex_key, "password": password } }),
        json!({ "chain": "ethereum", "label": "a", "import": { "format": "keystore_v3", "keystore": ks, "password": password } }),
        json!({ "chain": "ethereum", "label": "a", "import": { "format": "keystore_v3", "keystore": ks_type, "password": password } }),
    ];
    let cases = cases.into_iter().chain([
        edited(&["crypto", "cipher"], json!(hex_key)),
        edited(&["crypto", "kdf"], json!(hex_key)),
        edited(&["version"], json!(987_654_321)),
        edited(&["crypto", "kdfparams", "c"], json!(987_654_321)),
        edited(&["crypto", "kdfparams", "prf"], json!(hex_key)),
        edited(&["crypto", "kdfparams", "salt"], json!(hex_key[..63])),
        edited(&["crypto", "ciphertext"], json!(hex_key[..63])),
        edited(&["crypto", "cipherparams", "iv"], json!(hex_key)),
        edited(&["crypto", "mac"], json!(hex_key)),
    ]);
    for (i, body) in cases.enumerate() {
        let (s, r) = env.post("/wallet/create", body.clone()).await;
        assert_eq!(s, 400, "case {i}: {r}");
        let text = r.to_string();
        assert!(
            !text.contains(&hex_key[..16]) && !text.contains(password),
            "case {i}: {text}"
        );
        assert!(
            text.contains("import") || text.contains("keystore"),
            "case {i} names the field: {text}"
        );
    }
    let (_, list) = env.get("/wallet/list").await;
    assert_eq!(list["wallets"], json!([]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_key_import_at_a_time_and_the_kdf_work_is_capped() {
    let env = Env::new(eth_policy("1000", "5000", None)).await;
    let import = |label: &str, ks: serde_json::Value| {
        json!({ "chain": "ethereum", "label": label,
            "import": { "format": "keystore_v3", "keystore": ks, "password": "testpassword" } })
    };
    // While an import holds the KDF, another is answered 429 at once and nothing is done.
    let state = &env.keyd.as_ref().unwrap().state;
    let held = std::sync::Arc::clone(&state.imports)
        .try_acquire_owned()
        .unwrap();
    let (s, r) = env
        .post("/wallet/create", import("a", pbkdf2_keystore()))
        .await;
    assert_eq!(
        (s, r["detail"]["kind"].as_str()),
        (429, Some("busy")),
        "{r}"
    );
    // Creating without an import needs no KDF and is not held up.
    env.create("ethereum", "plain").await;
    drop(held);
    let (s, r) = env
        .post("/wallet/create", import("a", pbkdf2_keystore()))
        .await;
    assert_eq!(s, 200, "{r}");
    assert_eq!(
        state.imports.available_permits(),
        1,
        "released after the KDF"
    );
    // Parameters over the work cap are refused before any KDF runs: geth's standard
    // (n = 2^18, r = 8, p = 1) is the most; p = 2 at that n, or p = 16, is over.
    for (n, r, p) in [
        (1u64 << 18, 8, 2),
        (1 << 18, 8, 16),
        (1 << 17, 8, 3),
        (1 << 19, 1, 1),
    ] {
        let ks = json!({"version": 3, "crypto": {"cipher": "aes-128-ctr",
            "cipherparams": {"iv": "00".repeat(16)}, "ciphertext": "11".repeat(32), "kdf": "scrypt",
            "kdfparams": {"dklen": 32, "n": n, "r": r, "p": p, "salt": "22".repeat(32)},
            "mac": "33".repeat(32)}});
        let (s, body) = env.post("/wallet/create", import("b", ks)).await;
        assert_eq!(s, 400, "{body}");
        let e = body["error"].as_str().unwrap();
        assert!(
            e.contains("exceeds") || e.contains("power of two"),
            "n={n} r={r} p={p}: {e}"
        );
    }
}

#[test]
fn check_config_accepts_the_schema_and_names_what_is_wrong() {
    let dir = tempfile::tempdir().unwrap();
    let bin = env!("CARGO_BIN_EXE_osmoda-keyd");
    let good = dir.path().join("good.json");
    std::fs::write(
        &good,
        json!({ "secret_file": null, "policy": eth_policy("1", "2", None) }).to_string(),
    )
    .unwrap();
    let out = std::process::Command::new(bin)
        .arg("check-config")
        .arg(&good)
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let bad = dir.path().join("bad.json");
    std::fs::write(
        &bad,
        json!({ "secret_file": null, "policy": eth_policy("3", "2", None) }).to_string(),
    )
    .unwrap();
    let out = std::process::Command::new(bin)
        .arg("check-config")
        .arg(&bad)
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("exceeds daily_limit"),
        "{out:?}"
    );
    let typo = dir.path().join("typo.json");
    std::fs::write(
        &typo,
        r#"{"secret_file": null, "policy": {"chains": {}, "wallet": {}}}"#,
    )
    .unwrap();
    let out = std::process::Command::new(bin)
        .arg("check-config")
        .arg(&typo)
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("wallet"),
        "{out:?}"
    );
}
