//! `/wallet/create`, `/wallet/list`, `/wallet/delete` (behind an approval ticket) and `/health`.

use std::sync::Arc;

use axum::extract::{ConnectInfo, Query, State};
use axum::http::HeaderValue;
use axum::response::IntoResponse;
use osmoda_config::Chain;
use osmoda_daemon::server::PeerCred;
use serde::Deserialize;
use serde_json::{json, Value};
use zeroize::Zeroizing;

use super::{caller, ApiError, Json};
use crate::error::KeydError;
use crate::keys::{import, Wallet};
use crate::store::Receipt;
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
    let wallets = tokio::task::spawn_blocking(move || st2.store.count())
        .await
        .map_err(KeydError::internal)??;
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

/// Most wallets on one page of `/wallet/list` (and its default): as many as the default cap.
pub const MAX_PAGE: u32 = 1_000;

/// Query of `GET /wallet/list`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    /// The `next` of the previous page: wallets with ids after it.
    #[serde(default)]
    pub after: Option<String>,
    /// 1 to [`MAX_PAGE`] (default [`MAX_PAGE`]).
    #[serde(default)]
    pub limit: Option<u32>,
}

/// `GET /wallet/list?after=&limit=`: one page in id order, `{wallets, next}`; when the page is
/// full, `next` (and the `x-next-cursor` header) is its last id, to pass as `after`.
pub async fn list(
    State(st): State<Arc<AppState>>,
    q: Result<Query<ListQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<axum::response::Response, ApiError> {
    let Query(q) = q.map_err(|e| {
        KeydError::BadRequest(format!(
            "invalid query string: {}; /wallet/list takes `after` (a wallet id) and `limit` (1 to {MAX_PAGE})",
            osmoda_daemon::api::rejection_reason(&e.body_text())
        ))
    })?;
    let limit = q.limit.unwrap_or(MAX_PAGE);
    if !(1..=MAX_PAGE).contains(&limit) {
        return Err(
            KeydError::BadRequest(format!("`limit` {limit} must be 1 to {MAX_PAGE}")).into(),
        );
    }
    if let Some(a) = &q.after {
        if a.len() > 64 || !a.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
            return Err(KeydError::BadRequest(format!(
                "`after` must be a wallet id (w_ and 16 hex digits; got {} bytes)",
                a.len()
            ))
            .into());
        }
    }
    let wallets = tokio::task::spawn_blocking(move || st.store.page(q.after.as_deref(), limit))
        .await
        .map_err(KeydError::internal)??;
    let next = (wallets.len() == limit as usize)
        .then(|| wallets.last().map(|w| w.id.clone()))
        .flatten();
    let mut resp = axum::Json(
        json!({ "wallets": wallets.iter().map(view).collect::<Vec<_>>(), "next": next }),
    )
    .into_response();
    if let Some(n) = next.as_deref().and_then(|n| HeaderValue::from_str(n).ok()) {
        resp.headers_mut().insert("x-next-cursor", n);
    }
    Ok(resp)
}

/// Body of `POST /wallet/create`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateBody {
    /// `ethereum` or `solana`.
    pub chain: Chain,
    /// Unique label, 1–64 of `[A-Za-z0-9._-]` (the policy's `wallets.<label>`).
    pub label: String,
    /// Import an existing key instead of generating one (see [`ImportBody`]; read by
    /// [`parse_import`], whose errors never quote a value).
    #[serde(default)]
    pub import: Option<Value>,
}

/// A key to import: `{"format": "keystore_v3", "keystore": {...}, "password": "..."}` or
/// `{"format": "solana_keypair", "keypair": [64 numbers]}`.
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
        keypair: Value,
    },
}

fn bad_import(m: impl std::fmt::Display) -> KeydError {
    KeydError::BadRequest(format!("import: {m}"))
}

/// The JSON type of `v`, never its value.
pub fn json_type(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// Reads the `import` object field by field. Errors name the field and the expected type,
/// never the value: a key pasted in the wrong field, or a password, is not echoed.
///
/// # Errors
/// `BadRequest` naming the field.
pub fn parse_import(v: Value) -> Result<ImportBody, KeydError> {
    let mut m = match v {
        Value::Object(m) => m,
        other => {
            return Err(bad_import(format!(
                "must be an object with `format` (got {})",
                json_type(&other)
            )))
        }
    };
    let mut take = |field: &str| -> Result<Value, KeydError> {
        m.remove(field)
            .ok_or_else(|| bad_import(format!("`{field}` is missing")))
    };
    let format = take("format")?;
    let want = |field: &str, v: &Value, expected: &str, ok: bool| -> Result<(), KeydError> {
        if ok {
            Ok(())
        } else {
            Err(bad_import(format!(
                "`{field}` must be {expected} (got {})",
                json_type(v)
            )))
        }
    };
    let body = match format.as_str() {
        Some("keystore_v3") => {
            let keystore = take("keystore")?;
            want(
                "keystore",
                &keystore,
                "the keystore file's JSON object",
                keystore.is_object(),
            )?;
            let password = match take("password")? {
                Value::String(p) => Zeroizing::new(p),
                other => {
                    want("password", &other, "a string", false)?;
                    Zeroizing::default()
                }
            };
            ImportBody::KeystoreV3 { keystore, password }
        }
        Some("solana_keypair") => {
            let keypair = take("keypair")?;
            want(
                "keypair",
                &keypair,
                "an array of 64 numbers",
                keypair.is_array(),
            )?;
            ImportBody::SolanaKeypair { keypair }
        }
        _ => {
            return Err(bad_import(
                "`format` must be \"keystore_v3\" (Ethereum) or \"solana_keypair\" (Solana)",
            ))
        }
    };
    if !m.is_empty() {
        // The name is not echoed either: a secret pasted as a key would come back.
        return Err(bad_import(
            "has an unknown field (the fields are format, keystore, password for keystore_v3, or format, keypair for solana_keypair)",
        ));
    }
    Ok(body)
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
    let key_import = body.import.map(parse_import).transpose()?;
    let imported = key_import.is_some();
    // At the cap nothing is generated or imported (a KDF is a second of a core); the insert
    // counts again in its transaction, which is what holds under concurrent creates.
    let cap = st.max_wallets()?;
    let st2 = Arc::clone(&st);
    let held = tokio::task::spawn_blocking(move || st2.store.count())
        .await
        .map_err(KeydError::internal)??;
    if held >= u64::from(cap) {
        return Err(crate::store::full(held, cap).into());
    }
    // One import at a time, and none waiting: a keystore KDF may use 256 MiB and a second of a
    // core, and cannot be interrupted. The KDF's thread holds the permit until it ends, even
    // if the caller has gone.
    let permit = match &key_import {
        Some(_) => Some(Arc::clone(&st.imports).try_acquire_owned().map_err(|_| {
            KeydError::Busy("another key import is running; nothing was done, send this one again in a few seconds".into())
        })?),
        None => None,
    };
    let st2 = Arc::clone(&st);
    let wallet = tokio::task::spawn_blocking(move || -> Result<Wallet, KeydError> {
        let _permit = permit;
        let secret = match &key_import {
            None => None,
            Some(ImportBody::KeystoreV3 { keystore, password }) if body.chain == Chain::Ethereum => {
                Some(import::keystore_v3(keystore, password.as_str())?)
            }
            Some(ImportBody::SolanaKeypair { keypair }) if body.chain == Chain::Solana => {
                Some(import::solana_keypair(keypair)?)
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
        // The receipt is committed with the wallet (the outbox delivers it to agentd).
        let receipt = Receipt {
            kind: "wallet.create".into(),
            payload: json!({ "wallet_id": w.id, "label": w.label, "chain": w.chain.as_str(),
                "address": w.address, "imported": imported, "caller": caller(&peer) }),
        };
        st2.store.insert(&w, &receipt, cap)?;
        Ok(w)
    })
    .await
    .map_err(KeydError::internal)??;
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
    super::check_ticket_id(body.approval.as_deref())?;
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
        let effect = vec![crate::words::delete(w.chain, &w.id, &w.address, &w.label)];
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
    let receipt = Receipt {
        kind: "wallet.delete".into(),
        payload: json!({ "wallet_id": w.id, "label": w.label, "chain": w.chain.as_str(),
            "address": w.address, "approval": ticket, "caller": caller(&peer) }),
    };
    let st2 = Arc::clone(&st);
    let id = w.id.clone();
    tokio::task::spawn_blocking(move || st2.store.delete(&id, &receipt))
        .await
        .map_err(KeydError::internal)??;
    Ok(axum::Json(json!({ "deleted": w.id })))
}
