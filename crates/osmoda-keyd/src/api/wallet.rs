//! `/wallet/create`, `/wallet/list`, `/wallet/delete` (behind an approval ticket) and `/health`.

use std::sync::Arc;

use axum::extract::{ConnectInfo, State};
use osmoda_config::Chain;
use osmoda_daemon::server::PeerCred;
use serde::Deserialize;
use serde_json::{json, Value};
use zeroize::Zeroizing;

use super::{caller, ApiError, Json};
use crate::error::KeydError;
use crate::keys::{import, Wallet};
use crate::AppState;

/// A wallet as the API shows it (never key material).
pub fn view(w: &Wallet) -> Value {
    json!({
        "id": w.id,
        "label": w.label,
        "chain": w.chain.as_str(),
        "address": w.address,
        "created_at": w.created_at,
    })
}

/// `GET /health`
pub async fn health(State(st): State<Arc<AppState>>) -> Result<axum::Json<Value>, ApiError> {
    let st2 = Arc::clone(&st);
    let wallets = tokio::task::spawn_blocking(move || st2.store.list())
        .await
        .map_err(KeydError::internal)??
        .len();
    let policy = match st.policy() {
        Ok(p) => {
            json!({ "loaded": true, "chains": p.chains.keys().map(|c| c.as_str()).collect::<Vec<_>>() })
        }
        Err(e) => json!({ "loaded": false, "error": e.to_string() }),
    };
    Ok(axum::Json(json!({
        "status": "ok",
        "wallets": wallets,
        "backend": "local",
        "policy": policy,
        "broadcasts": false,
    })))
}

/// `GET /wallet/list`
pub async fn list(State(st): State<Arc<AppState>>) -> Result<axum::Json<Value>, ApiError> {
    let wallets = tokio::task::spawn_blocking(move || st.store.list())
        .await
        .map_err(KeydError::internal)??;
    Ok(axum::Json(
        json!({ "wallets": wallets.iter().map(view).collect::<Vec<_>>() }),
    ))
}

/// Body of `POST /wallet/create`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateBody {
    /// `ethereum` or `solana`.
    pub chain: Chain,
    /// Unique label, 1–64 of `[A-Za-z0-9._-]` (the policy's `wallets.<label>`).
    pub label: String,
    /// Import an existing key instead of generating one.
    #[serde(default)]
    pub import: Option<ImportBody>,
}

/// A key to import.
#[derive(Deserialize)]
#[serde(deny_unknown_fields, tag = "format", rename_all = "snake_case")]
pub enum ImportBody {
    /// Ethereum keystore v3 JSON and its password.
    KeystoreV3 {
        /// The keystore file's JSON.
        keystore: Value,
        /// Its password.
        password: Zeroizing<String>,
    },
    /// A Solana keypair JSON array (64 numbers).
    SolanaKeypair {
        /// The array.
        keypair: Vec<Value>,
    },
}

impl std::fmt::Debug for ImportBody {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ImportBody(<secret>)")
    }
}

fn valid_label(l: &str) -> bool {
    !l.is_empty()
        && l.len() <= 64
        && l.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
}

fn new_id() -> Result<String, KeydError> {
    let mut raw = [0u8; 8];
    getrandom::fill(&mut raw).map_err(KeydError::internal)?;
    Ok(format!("w_{}", hex::encode(raw)))
}

/// `POST /wallet/create`: generates (or imports) a key, seals it and records the wallet.
pub async fn create(
    State(st): State<Arc<AppState>>,
    ConnectInfo(peer): ConnectInfo<PeerCred>,
    Json(body): Json<CreateBody>,
) -> Result<axum::Json<Value>, ApiError> {
    if !valid_label(&body.label) {
        return Err(KeydError::BadRequest(format!(
            "label {:?} must be 1 to 64 characters of [A-Za-z0-9._-]",
            body.label.chars().take(80).collect::<String>()
        ))
        .into());
    }
    let imported = body.import.is_some();
    // One import at a time: a keystore KDF may use up to 256 MiB.
    let _permit = match &body.import {
        Some(_) => Some(st.imports.acquire().await.map_err(KeydError::internal)?),
        None => None,
    };
    let st2 = Arc::clone(&st);
    let wallet = tokio::task::spawn_blocking(move || -> Result<Wallet, KeydError> {
        let secret = match &body.import {
            None => None,
            Some(ImportBody::KeystoreV3 { keystore, password }) if body.chain == Chain::Ethereum => {
                Some(import::keystore_v3(keystore, password.as_str())?)
            }
            Some(ImportBody::SolanaKeypair { keypair }) if body.chain == Chain::Solana => {
                Some(import::solana_keypair(&Value::Array(keypair.clone()))?)
            }
            Some(_) => {
                return Err(KeydError::BadRequest(format!(
                    "this import format does not belong to chain {} (keystore_v3 is Ethereum, solana_keypair is Solana)",
                    body.chain.as_str()
                )))
            }
        };
        let id = new_id()?;
        let (address, sealed) = st2.backend.create(&id, body.chain, secret)?;
        let w = Wallet {
            id,
            label: body.label,
            chain: body.chain,
            address,
            created_at: st2.now_rfc3339(),
            sealed,
        };
        st2.store.insert(&w)?;
        Ok(w)
    })
    .await
    .map_err(KeydError::internal)??;
    st.agentd
        .receipt(
            "wallet.create",
            json!({ "wallet_id": wallet.id, "label": wallet.label, "chain": wallet.chain.as_str(),
                    "address": wallet.address, "imported": imported, "caller": caller(&peer) }),
        )
        .await;
    Ok(axum::Json(view(&wallet)))
}

/// Body of `POST /wallet/delete`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeleteBody {
    /// The wallet.
    pub wallet_id: String,
    /// An approved ticket for this deletion.
    #[serde(default)]
    pub approval: Option<String>,
}

/// `POST /wallet/delete`: always behind a human approval ticket from agentd.
pub async fn delete(
    State(st): State<Arc<AppState>>,
    ConnectInfo(peer): ConnectInfo<PeerCred>,
    Json(body): Json<DeleteBody>,
) -> Result<axum::Json<Value>, ApiError> {
    let st2 = Arc::clone(&st);
    let id = body.wallet_id.clone();
    let w = tokio::task::spawn_blocking(move || st2.store.get(&id))
        .await
        .map_err(KeydError::internal)??;
    let operation = json!({
        "daemon": "keyd", "op": "wallet.delete", "wallet": w.id, "label": w.label,
        "chain": w.chain.as_str(), "address": w.address,
    });
    let Some(ticket) = body.approval else {
        let effect = vec![format!(
            "delete {} wallet {:?} ({}, {}): its key is destroyed for good",
            w.chain.as_str(),
            w.label,
            w.id,
            w.address
        )];
        let t = st.agentd.open_ticket(&operation, &effect).await?;
        st.denied("approval_required", &json!({ "op": "wallet.delete", "wallet_id": w.id, "ticket": t.get("id"), "caller": caller(&peer) }))
            .await;
        return Err(KeydError::ApprovalRequired {
            message: format!("deleting wallet {} needs a human approval", w.id),
            ticket: t,
        }
        .into());
    };
    st.agentd.consume_ticket(&ticket, &operation).await?;
    let st2 = Arc::clone(&st);
    let id = w.id.clone();
    tokio::task::spawn_blocking(move || st2.store.delete(&id))
        .await
        .map_err(KeydError::internal)??;
    st.agentd
        .receipt(
            "wallet.delete",
            json!({ "wallet_id": w.id, "label": w.label, "chain": w.chain.as_str(), "address": w.address,
                    "approval": ticket, "caller": caller(&peer) }),
        )
        .await;
    Ok(axum::Json(json!({ "deleted": w.id })))
}
