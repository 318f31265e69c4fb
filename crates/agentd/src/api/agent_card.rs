//! `/agent/card`: the machine's agent registration file as EIP-8004 ("Trustless Agents")
//! specifies it (`type` = `https://eips.ethereum.org/EIPS/eip-8004#registration-v1`, `name`,
//! `description`, `image`, `services`, `x402Support`, `active`, `registrations`,
//! `supportedTrust`). Generated only on request, with the identities the machine has: the
//! mesh's Ed25519 key as a `did:key` DID service and keyd's wallets as CAIP-10 `agentWallet`
//! services. Stored at `<state-dir>/agent-card.json`; registering it on chain is left to the
//! operator (`registrations` starts empty).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::routing::{get, post};
use axum::Router;
use serde::Deserialize;
use serde_json::{json, Value};

use crate::error::{ApiError, Json};
use crate::peer::Caller;
use crate::AppState;

/// The registration file's `type`.
pub const REGISTRATION_TYPE: &str = "https://eips.ethereum.org/EIPS/eip-8004#registration-v1";
/// Trust models EIP-8004 names.
pub const TRUST_MODELS: &[&str] = &["reputation", "crypto-economic", "tee-attestation"];
/// Solana mainnet's CAIP-2 chain reference.
const SOLANA_MAINNET: &str = "solana:5eykt4UsFv8P8NJdTREpY1vzqKqZKvdp";

/// Where the identities come from (`daemons` in agentd.json).
#[derive(Clone, Debug, Default)]
pub struct CardSettings {
    /// osmoda-keyd's socket, when keyd is enabled.
    pub keyd: Option<PathBuf>,
    /// osmoda-mesh's socket, when the mesh is enabled.
    pub mesh: Option<PathBuf>,
}

/// One `services` entry.
#[derive(Debug, Clone, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct Service {
    /// Protocol name: `web`, `A2A`, `MCP`, `OASF`, `ENS`, `DID`, `email` or a custom one.
    pub name: String,
    /// URI, address or name the protocol uses.
    pub endpoint: String,
    /// Protocol version (recommended by the EIP).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
}

/// Body of `POST /agent/card/generate`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GenerateRequest {
    /// Agent name (1–100 characters).
    pub name: String,
    /// What the agent does (1–2000 characters).
    pub description: String,
    /// Logo URL (`https://`, `ipfs://` or `data:`).
    #[serde(default)]
    pub image: Option<String>,
    /// Services to advertise besides the machine's own identities (at most 32).
    #[serde(default)]
    pub services: Vec<Service>,
    /// Trust models the agent supports (subset of [`TRUST_MODELS`]); default `["reputation"]`.
    #[serde(default)]
    pub supported_trust: Option<Vec<String>>,
    /// EIP-155 chain id for keyd's Ethereum wallets (default 1, mainnet).
    #[serde(default)]
    pub chain_id: Option<u64>,
}

/// The card routes.
pub fn routes() -> Router<Arc<AppState>> {
    Router::new()
        .route("/agent/card", get(card))
        .route("/agent/card/generate", post(generate))
}

fn path(st: &AppState) -> PathBuf {
    st.state_dir.join("agent-card.json")
}

/// `GET /agent/card` → the stored registration file; 404 before the first generate.
pub async fn card(State(st): State<Arc<AppState>>) -> Result<axum::Json<Value>, ApiError> {
    let p = path(&st);
    match tokio::fs::read(&p).await {
        Ok(b) => Ok(axum::Json(serde_json::from_slice(&b).map_err(ApiError::internal)?)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Err(ApiError::not_found(
            "no agent card yet; create it with POST /agent/card/generate {name, description, services}",
        )),
        Err(e) => Err(ApiError::internal(e)),
    }
}

fn check(req: &GenerateRequest) -> Result<Vec<String>, ApiError> {
    let bad = |m: String| Err(ApiError::bad_request(m));
    if req.name.trim().is_empty() || req.name.chars().count() > 100 {
        return bad("name must be 1-100 characters".into());
    }
    if req.description.trim().is_empty() || req.description.chars().count() > 2000 {
        return bad("description must be 1-2000 characters".into());
    }
    if let Some(i) = &req.image {
        if !(i.starts_with("https://") || i.starts_with("ipfs://") || i.starts_with("data:"))
            || i.len() > 100_000
        {
            return bad(format!(
                "image {:?}: an https://, ipfs:// or data: URI",
                i.chars().take(80).collect::<String>()
            ));
        }
    }
    if req.services.len() > 32 {
        return bad("at most 32 services".into());
    }
    for s in &req.services {
        if s.name.trim().is_empty()
            || s.name.len() > 64
            || s.endpoint.trim().is_empty()
            || s.endpoint.len() > 2048
            || s.version
                .as_ref()
                .is_some_and(|v| v.trim().is_empty() || v.len() > 64)
        {
            return bad(format!(
                "service {:?}: name 1-64, endpoint 1-2048 and version 1-64 characters",
                s.name
            ));
        }
        // The machine's own identities are added by agentd from keyd and the mesh; a caller's
        // service must not pass for one.
        let name = s.name.trim().to_ascii_lowercase();
        if name == "agentwallet" || (name == "did" && s.endpoint.trim().starts_with("did:key:")) {
            return bad(format!(
                "service {:?} ({:?}): agentd itself lists the machine's wallets (agentWallet, from keyd) and its mesh identity (a did:key DID); advertise other services only",
                s.name,
                s.endpoint.chars().take(80).collect::<String>()
            ));
        }
    }
    let trust = req
        .supported_trust
        .clone()
        .unwrap_or_else(|| vec!["reputation".into()]);
    if let Some(t) = trust.iter().find(|t| !TRUST_MODELS.contains(&t.as_str())) {
        return bad(format!("supported_trust {t:?}: one of {TRUST_MODELS:?}"));
    }
    let mut trust = trust;
    trust.sort();
    trust.dedup();
    Ok(trust)
}

/// `did:key` of an Ed25519 public key (multicodec 0xed01, base58btc).
pub fn did_key(ed25519: &[u8; 32]) -> String {
    let mut b = vec![0xed, 0x01];
    b.extend_from_slice(ed25519);
    format!("did:key:z{}", bs58::encode(b).into_string())
}

/// How many pages of keyd's `/wallet/list` (1,000 wallets each) a card reads.
const WALLET_PAGES: usize = 100;

async fn identities(cs: &CardSettings, chain_id: u64) -> (Vec<Service>, Vec<String>) {
    let mut out = Vec::new();
    let mut missing = Vec::new();
    let get = |sock: &PathBuf, path: String| {
        let c = osmoda_client::Client::new(sock)
            .as_daemon("agentd")
            .with_timeout(Duration::from_secs(5));
        async move { c.get(&path).await.ok().and_then(|r| r.ok_json().ok()) }
    };
    if let Some(sock) = &cs.mesh {
        let key = get(sock, "/identity".into()).await.and_then(|v| {
            let b64 = v["public_keys"]["ed25519"].as_str()?.to_string();
            use base64::Engine as _;
            let raw = base64::engine::general_purpose::STANDARD.decode(b64).ok()?;
            <[u8; 32]>::try_from(raw.as_slice()).ok()
        });
        match key {
            Some(k) => out.push(Service {
                name: "DID".into(),
                endpoint: did_key(&k),
                version: Some("v1".into()),
            }),
            None => missing.push("mesh identity (osmoda-mesh not reachable)".into()),
        }
    }
    if let Some(sock) = &cs.keyd {
        // keyd answers its wallets in pages (`next` names the page's last id); at most
        // WALLET_PAGES pages, so a card lists up to 1,000 × WALLET_PAGES wallets.
        let (mut wallets, mut after, mut reachable) = (Vec::new(), None::<String>, true);
        for _ in 0..WALLET_PAGES {
            let path = match &after {
                Some(a) => format!("/wallet/list?limit=1000&after={a}"),
                None => "/wallet/list?limit=1000".to_string(),
            };
            let Some(v) = get(sock, path).await else {
                reachable = false;
                break;
            };
            wallets.extend(v["wallets"].as_array().cloned().unwrap_or_default());
            after = v["next"].as_str().map(str::to_string);
            if after.is_none() {
                break;
            }
        }
        if !reachable {
            missing.push("wallets (osmoda-keyd not reachable)".into());
        } else if after.is_some() {
            missing.push(format!(
                "wallets after the first {} (the card lists at most that many)",
                wallets.len()
            ));
        }
        let mut endpoints: Vec<String> = wallets
            .iter()
            .filter_map(|w| {
                let addr = w["address"].as_str().unwrap_or_default();
                match w["chain"].as_str() {
                    Some("ethereum") => Some(format!("eip155:{chain_id}:{addr}")),
                    Some("solana") => Some(format!("{SOLANA_MAINNET}:{addr}")),
                    _ => None,
                }
            })
            .collect();
        // One card for one set of wallets, whatever order keyd keeps them in.
        endpoints.sort();
        out.extend(endpoints.into_iter().map(|endpoint| Service {
            name: "agentWallet".into(),
            endpoint,
            version: None,
        }));
    }
    (out, missing)
}

/// `POST /agent/card/generate {name, description, image?, services?, supported_trust?, chain_id?}`
/// → `{card, path, missing, event_id}`; replaces the stored card.
pub async fn generate(
    State(st): State<Arc<AppState>>,
    caller: Caller,
    Json(req): Json<GenerateRequest>,
) -> Result<axum::Json<Value>, ApiError> {
    let trust = check(&req)?;
    let (own, missing) = identities(&st.settings.agent_card, req.chain_id.unwrap_or(1)).await;
    let mut services = req.services.clone();
    services.extend(own);
    let mut card = json!({
        "type": REGISTRATION_TYPE,
        "name": req.name.trim(),
        "description": req.description.trim(),
        "services": services,
        "x402Support": false,
        "active": true,
        "registrations": [],
        "supportedTrust": trust,
    });
    if let Some(i) = &req.image {
        card["image"] = json!(i);
    }
    let p = path(&st);
    let bytes = serde_json::to_vec_pretty(&card).map_err(ApiError::internal)?;
    let p2 = p.clone();
    tokio::task::spawn_blocking(move || osmoda_memory::notes::write_atomic(&p2, &bytes))
        .await
        .map_err(ApiError::internal)??;
    let ev = st
        .record("agent.card.generated", &caller.actor, &json!({ "name": req.name.trim(), "services": card["services"].as_array().map_or(0, Vec::len) }))
        .await?;
    Ok(axum::Json(
        json!({ "card": card, "path": p, "missing": missing, "event_id": ev.id }),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn did_key_matches_the_spec_vector() {
        // did:key spec test vector (Ed25519, w3c-ccg did-method-key).
        let key = hex::decode("2e6fcce36701dc791488e0d0b1745cc1e33a4c1c9fcc41c63bd343dbbe0970e6")
            .expect("hex");
        let key: [u8; 32] = key.try_into().expect("32 bytes");
        assert_eq!(
            did_key(&key),
            "did:key:z6MkhaXgBZDvotDkL5257faiztiGiC2QtKLGpbnnEGta2doK"
        );
    }
}
