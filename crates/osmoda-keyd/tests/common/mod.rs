//! A real agentd (in process, on Unix sockets in a temp dir) and a real keyd served by the same
//! `serve` the binary calls, with an injected clock.
#![allow(dead_code, clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;

use serde_json::{json, Value};

pub struct Env {
    pub dir: tempfile::TempDir,
    pub agentd: Arc<agentd::AppState>,
    agentd_trigger: Option<agentd::Trigger>,
    pub keyd: Option<Keyd>,
    /// Seconds added to the real clock (to cross UTC midnight).
    pub shift: Arc<AtomicI64>,
}

pub struct Keyd {
    pub state: Arc<osmoda_keyd::AppState>,
    trigger: osmoda_keyd::shutdown::Trigger,
    task: tokio::task::JoinHandle<std::io::Result<()>>,
}

impl Env {
    /// agentd (knowing `keyd_uid`, default: ours) and keyd with `policy` as keyd.json.
    pub async fn new(policy: Value) -> Env {
        Env::with_keyd_uid(policy, Some(nix::unistd::getuid().as_raw())).await
    }

    pub async fn with_keyd_uid(policy: Value, keyd_uid: Option<u32>) -> Env {
        let _ = osmoda_daemon::raise_fd_limit();
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("admin")).unwrap();
        let settings = agentd::Settings {
            keyd_uid,
            ..Default::default()
        };
        let agentd = agentd::AppState::open(dir.path().join("agentd"), settings, None).unwrap();
        let agent = tokio::net::UnixListener::bind(dir.path().join("agentd.sock")).unwrap();
        let human = tokio::net::UnixListener::bind(dir.path().join("admin/approval.sock")).unwrap();
        let (trigger, shutdown) = agentd::shutdown_channel();
        tokio::spawn(agentd::serve(agent, human, agentd.clone(), shutdown));
        let mut env = Env {
            dir,
            agentd,
            agentd_trigger: Some(trigger),
            keyd: None,
            shift: Arc::default(),
        };
        env.write_policy(&policy);
        env.start_keyd().await;
        env
    }

    pub fn config(&self) -> PathBuf {
        self.dir.path().join("keyd.json")
    }

    pub fn state_dir(&self) -> PathBuf {
        self.dir.path().join("keyd")
    }

    pub fn socket(&self) -> PathBuf {
        self.dir.path().join("keyd.sock")
    }

    pub fn write_policy(&self, policy: &Value) {
        self.write_config(json!({ "secret_file": null, "policy": policy }));
    }

    /// Writes `cfg` as keyd.json (atomically, as NixOS activation does).
    pub fn write_config(&self, cfg: Value) {
        let tmp = self.dir.path().join("keyd.json.tmp");
        std::fs::write(&tmp, serde_json::to_vec_pretty(&cfg).unwrap()).unwrap();
        std::fs::rename(&tmp, self.config()).unwrap();
    }

    /// Opens keyd's state as the binary does at start (without serving).
    pub fn open_keyd(&self) -> Result<Arc<osmoda_keyd::AppState>, osmoda_keyd::KeydError> {
        let shift = Arc::clone(&self.shift);
        let clock: osmoda_keyd::Clock = Arc::new(move || {
            time::OffsetDateTime::now_utc() + time::Duration::seconds(shift.load(Ordering::SeqCst))
        });
        osmoda_keyd::AppState::open(osmoda_keyd::Options {
            config: self.config(),
            state_dir: self.state_dir(),
            agentd_socket: self.dir.path().join("agentd.sock"),
            clock,
        })
    }

    pub async fn start_keyd(&mut self) {
        let state = self.open_keyd().unwrap();
        let _ = std::fs::remove_file(self.socket());
        let listener = tokio::net::UnixListener::bind(self.socket()).unwrap();
        let (trigger, shutdown) = osmoda_keyd::shutdown::channel();
        let task = tokio::spawn(osmoda_keyd::serve(listener, state.clone(), shutdown));
        self.keyd = Some(Keyd {
            state,
            trigger,
            task,
        });
    }

    /// Stops keyd (as SIGTERM would) and waits for it to be gone.
    pub async fn stop_keyd(&mut self) {
        if let Some(k) = self.keyd.take() {
            k.trigger.fire();
            k.task.await.unwrap().unwrap();
        }
    }

    /// A client of keyd's socket. It waits up to two minutes: a keystore import is a second of
    /// a core, and the suite's tests run side by side on a shared machine (at load ~17 with
    /// eight of these tests at once, imports took longer than the default 30 s).
    pub fn client(&self) -> osmoda_client::Client {
        osmoda_client::Client::new(self.socket()).with_timeout(std::time::Duration::from_secs(120))
    }

    pub async fn post(&self, path: &str, body: Value) -> (u16, Value) {
        let r = self.client().post(path, &body).await.unwrap();
        (r.status, r.body)
    }

    pub async fn get(&self, path: &str) -> (u16, Value) {
        let r = self.client().get(path).await.unwrap();
        (r.status, r.body)
    }

    pub async fn human(&self, path: &str) -> (u16, Value) {
        let c = osmoda_client::Client::new(self.dir.path().join("admin/approval.sock"));
        let r = c.post(path, &json!({})).await.unwrap();
        (r.status, r.body)
    }

    /// Creates a wallet and returns its JSON.
    pub async fn create(&self, chain: &str, label: &str) -> Value {
        let (s, w) = self
            .post("/wallet/create", json!({ "chain": chain, "label": label }))
            .await;
        assert_eq!(s, 200, "{w}");
        w
    }

    /// Delivers keyd's spooled receipts and returns agentd's `receipt.<kind>` events.
    pub async fn receipts(&self, kind: &str) -> Vec<Value> {
        if let Some(k) = &self.keyd {
            k.state.flush().await.unwrap();
        }
        let q = osmoda_ledger::Query {
            kind: Some(format!("receipt.{kind}")),
            limit: Some(10_000),
            ..Default::default()
        };
        self.agentd
            .ledger
            .query(&q)
            .unwrap()
            .into_iter()
            .map(|e| serde_json::from_str(&e.payload).unwrap())
            .collect()
    }

    pub fn spent(&self, scope: &str) -> u128 {
        let k = self.keyd.as_ref().unwrap();
        k.state.store.spent(&k.state.day(), scope).unwrap()
    }
}

impl Drop for Env {
    fn drop(&mut self) {
        if let Some(k) = self.keyd.take() {
            k.trigger.fire();
        }
        if let Some(t) = self.agentd_trigger.take() {
            t.fire();
        }
    }
}

/// Ethereum on chain 1 with the given limits (decimal strings) and no allowlist.
pub fn eth_policy(per_tx: &str, daily: &str, threshold: Option<&str>) -> Value {
    json!({
        "chains": { "ethereum": {
            "chain_ids": [1], "per_tx_max": per_tx, "daily_limit": daily,
            "approval_threshold": threshold, "recipient_allowlist": null,
        }},
        "wallets": {},
    })
}

pub const BOB: &str = "0x3535353535353535353535353535353535353535";

/// An EIP-1559 send body with fee 0 (`max_fee_per_gas` 0), so that the counters see exactly
/// `amount`; `paid_eth_send` has a real fee.
pub fn eth_send(wallet: &str, amount: &str, nonce: u64) -> Value {
    let mut b = paid_eth_send(wallet, amount, nonce);
    b["max_fee_per_gas"] = json!("0");
    b["max_priority_fee_per_gas"] = json!("0");
    b
}

/// An EIP-1559 send body with a real fee: at most 21,000 gas × 30 gwei = 630,000 gwei
/// (`ETH_SEND_FEE` wei).
pub fn paid_eth_send(wallet: &str, amount: &str, nonce: u64) -> Value {
    json!({
        "wallet_id": wallet, "to": BOB, "amount": amount, "nonce": nonce, "gas_limit": 21000,
        "max_fee_per_gas": "30000000000", "max_priority_fee_per_gas": "1000000000",
    })
}

/// The maximum fee of `paid_eth_send`, in wei.
pub const ETH_SEND_FEE: u128 = 21_000 * 30_000_000_000;

/// The fee keyd counts for a Solana transfer (one signature), in lamports.
pub const SOL_FEE: u128 = 5_000;

pub fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            out.extend(files_under(&p));
        } else {
            out.push(p);
        }
    }
    out
}

/// The key of the Web3 keystore v3 test vectors ([`pbkdf2_keystore`]).
pub const KEYSTORE_KEY: &str = "7a28b5ba57c53603b0b07b56bba752f7784bf506fa95edc395f5cf6c7514fe9d";
/// RFC 8032 test 1's secret (a Solana seed; address `FVen3X669xLzsi6N2V91DoiyzHzg1uAgqiT8jZ9nS96Z`).
pub const RFC8032_SEED: &str = "9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60";

/// The Web3 keystore v3 pbkdf2 test vector (password "testpassword", key [`KEYSTORE_KEY`]).
pub fn pbkdf2_keystore() -> Value {
    json!({"crypto":{"cipher":"aes-128-ctr","cipherparams":{"iv":"6087dab2f9fdbbfaddc31a909735c1e6"},"ciphertext":"5318b4d5bcd28de64ee5559e671353e16f075ecae9f99c7a79a38af5f869aa46","kdf":"pbkdf2","kdfparams":{"c":262144,"dklen":32,"prf":"hmac-sha256","salt":"ae3cd4e7013836a3df6bd7241b12db061dbe2c6785853cce422d148a624ce0bd"},"mac":"517ead924a9d0dc3124507e3393d175ce3ff7c1e96529c6c555ce9e51205e9b2"},"id":"3198bc9c-6672-5ab3-d995-4942343ae5b6","version":3})
}

/// The Solana keypair JSON bytes (seed, then public key) of [`RFC8032_SEED`].
pub fn rfc8032_keypair() -> Vec<u8> {
    let seed = hex::decode(RFC8032_SEED).unwrap();
    let public = ed25519_dalek::SigningKey::from_bytes(&seed.clone().try_into().unwrap())
        .verifying_key()
        .to_bytes();
    let mut keypair = seed;
    keypair.extend_from_slice(&public);
    keypair
}

/// Every form in which the two imported keys could leak: raw, hex (both cases), base58, and
/// the Solana keypair as base58 and as its JSON list.
pub fn key_needles() -> Vec<(String, Vec<u8>)> {
    let eth_key = hex::decode(KEYSTORE_KEY).unwrap();
    let seed = hex::decode(RFC8032_SEED).unwrap();
    let keypair = rfc8032_keypair();
    vec![
        ("eth raw".into(), eth_key.clone()),
        ("eth hex".into(), KEYSTORE_KEY.as_bytes().to_vec()),
        ("eth HEX".into(), KEYSTORE_KEY.to_uppercase().into_bytes()),
        (
            "eth base58".into(),
            bs58::encode(&eth_key).into_string().into_bytes(),
        ),
        ("sol seed raw".into(), seed.clone()),
        ("sol seed hex".into(), RFC8032_SEED.as_bytes().to_vec()),
        (
            "sol seed base58".into(),
            bs58::encode(&seed).into_string().into_bytes(),
        ),
        (
            "sol keypair base58".into(),
            bs58::encode(&keypair).into_string().into_bytes(),
        ),
        (
            "sol keypair JSON".into(),
            json!(&keypair[..32])
                .to_string()
                .trim_end_matches(']')
                .as_bytes()
                .to_vec(),
        ),
    ]
}

/// Whether `needle` occurs in `hay`.
pub fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}
