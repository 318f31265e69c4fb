//! `POST /capability/mint` and `POST /capability/revoke`: capability tokens for osmoda-egress.
//!
//! A token names capabilities declared in `services.osmoda.egress.capabilities` (read from the
//! rendered `egress.json` on every call) and can only narrow them. It is signed with agentd's
//! Ed25519 key, which lives outside the ledger: the file given by `--capability-key` (the
//! module's credential) or, without it, `<state dir>/capability.key`, generated once with mode
//! 0600 (agentd's state is masked from every command). The public key is published at
//! egress.json's `public_key_file` and revocations at its `revocation_file`, both world-readable
//! (the proxy runs as its own user). The ledger records each mint and revocation (token id,
//! subject, grants, expiry) but never a token: a token is a bearer credential.

use std::collections::BTreeMap;
use std::io::Write as _;
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use ed25519_dalek::SigningKey;
use osmoda_egress::policy::{check_narrowing, parse_capabilities, Capabilities};
use osmoda_egress::token::{self, Claims, Grant};
use serde::Deserialize;
use serde_json::{json, Value};

use crate::error::{ApiError, Json};
use crate::peer::Caller;
use crate::AppState;

/// Longest lifetime of a token, in seconds (one day).
pub const MAX_TTL_SECS: u64 = 86_400;

/// Where egress.json is read when agentd was not told otherwise.
pub const DEFAULT_EGRESS_CONFIG: &str = "/etc/osmoda/egress.json";

/// What to grant for one capability: everything it declares (`true`), or a narrowing.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum Wanted {
    /// The whole declared capability.
    All(bool),
    /// Some of its domains and/or ports (each must lie within the declaration).
    Narrow {
        /// Patterns within the declared ones (default: all declared).
        domains: Option<Vec<String>>,
        /// Ports among the declared ones (default: all declared).
        ports: Option<Vec<u16>>,
    },
}

/// Body of `POST /capability/mint`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MintBody {
    /// Who the token is for (1-128 bytes, no control characters), recorded as its subject.
    pub granted_to: String,
    /// Capability names (whole capabilities), or name → `{domains?, ports?}` narrowings.
    pub permissions: Permissions,
    /// Lifetime in seconds (1..=86400).
    pub ttl_sec: u64,
}

/// `permissions` of a mint.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum Permissions {
    /// `["github", "pypi"]`.
    Names(Vec<String>),
    /// `{"github": {"domains": ["api.github.com"]}, "pypi": true}`.
    Map(BTreeMap<String, Wanted>),
}

/// Body of `POST /capability/revoke`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RevokeBody {
    /// The token id (32 hex characters), as returned by the mint.
    pub id: String,
}

fn unavailable(msg: impl Into<String>) -> ApiError {
    ApiError::new(StatusCode::SERVICE_UNAVAILABLE, msg)
}

/// The declared capabilities and the publication paths, from egress.json.
pub(crate) fn egress_config(st: &AppState) -> Result<osmoda_config::EgressConfig, ApiError> {
    let path = st
        .settings
        .egress_config
        .clone()
        .unwrap_or_else(|| PathBuf::from(DEFAULT_EGRESS_CONFIG));
    osmoda_config::load::<osmoda_config::EgressConfig>(&path).map_err(|e| {
        unavailable(format!(
            "egress is not configured ({e}): declare capabilities in services.osmoda.egress.capabilities and switch"
        ))
    })
}

fn declared(cfg: &osmoda_config::EgressConfig) -> Result<Capabilities, ApiError> {
    parse_capabilities(&cfg.capabilities).map_err(unavailable)
}

/// Checks the capability key file by the rule of every signing key agentd loads
/// ([`crate::checkpoints::check_secret_key`]): whoever reads it mints capability tokens that
/// osmoda-egress accepts.
///
/// # Errors
/// Missing, not a regular file, another owner, or readable by group/others; naming the fix.
pub fn check_key_file(path: &std::path::Path) -> anyhow::Result<()> {
    crate::checkpoints::check_secret_key(
        path,
        "the capability key",
        "mint egress capability tokens that osmoda-egress accepts",
        "32 raw bytes or 64 hex digits of an Ed25519 seed, mode 0600",
    )
}

/// agentd's signing key: the configured file, or the generated one in the state dir.
pub(crate) fn signing_key(st: &AppState) -> Result<SigningKey, ApiError> {
    if let Some(p) = &st.settings.capability_key {
        let bytes = std::fs::read(p)
            .map_err(|e| unavailable(format!("capability key {}: {e}", p.display())))?;
        return token::decode_signing_key(&bytes)
            .map_err(|e| unavailable(format!("capability key {}: {e}", p.display())));
    }
    let p = st.state_dir.join("capability.key");
    match std::fs::read(&p) {
        Ok(bytes) => token::decode_signing_key(&bytes)
            .map_err(|e| ApiError::internal(format!("{}: {e}", p.display()))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let mut seed = [0u8; 32];
            getrandom::fill(&mut seed).map_err(ApiError::internal)?;
            // create_new: two first mints at once cannot both write; the loser reads the winner's.
            let created = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&p);
            match created {
                Ok(mut f) => {
                    f.write_all(hex::encode(seed).as_bytes())
                        .and_then(|()| f.sync_all())
                        .map_err(ApiError::internal)?;
                    Ok(SigningKey::from_bytes(&seed))
                }
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => signing_key(st),
                Err(e) => Err(ApiError::internal(e)),
            }
        }
        Err(e) => Err(ApiError::internal(e)),
    }
}

/// Writes `text` to `path` (mode 0644, parents created) unless it already holds exactly that;
/// atomic (temp file + rename), so the proxy never reads half a file.
fn publish(path: &Path, text: &str) -> Result<(), ApiError> {
    if std::fs::read_to_string(path).is_ok_and(|t| t == text) {
        return Ok(());
    }
    let dir = path
        .parent()
        .ok_or_else(|| unavailable(format!("{} has no directory", path.display())))?;
    std::fs::create_dir_all(dir)
        .map_err(|e| unavailable(format!("creating {}: {e}", dir.display())))?;
    let tmp = dir.join(format!(
        ".{}.tmp",
        path.file_name().map_or("x".into(), |n| n.to_string_lossy())
    ));
    let write = || -> std::io::Result<()> {
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o644)
            .open(&tmp)?;
        f.write_all(text.as_bytes())?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)
    };
    write().map_err(|e| unavailable(format!("publishing {}: {e}", path.display())))
}

fn now_unix() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Mints a token for `granted_to` with `permissions` (already narrowed and checked) for
/// `ttl_sec`, publishing the public key first. For `/sandbox/exec`'s Ring 1 as well.
pub(crate) fn mint_checked(
    st: &AppState,
    cfg: &osmoda_config::EgressConfig,
    granted_to: &str,
    caps: BTreeMap<String, Grant>,
    ttl_sec: u64,
) -> Result<(String, Claims), ApiError> {
    let key = signing_key(st)?;
    publish(
        Path::new(&cfg.public_key_file),
        &token::encode_public_key(&key.verifying_key()),
    )?;
    let now = now_unix();
    let claims = Claims {
        v: 1,
        id: token::new_id().map_err(ApiError::internal)?,
        sub: granted_to.to_string(),
        iat: now,
        exp: now + ttl_sec,
        caps,
    };
    let t = token::mint(&key, &claims).map_err(|e| ApiError::bad_request(e.to_string()))?;
    Ok((t, claims))
}

/// Turns a request's permissions into grants within the declaration.
pub(crate) fn grants(
    declared: &Capabilities,
    wanted: Permissions,
) -> Result<BTreeMap<String, Grant>, ApiError> {
    let wanted: BTreeMap<String, Wanted> = match wanted {
        Permissions::Names(n) => n.into_iter().map(|n| (n, Wanted::All(true))).collect(),
        Permissions::Map(m) => m,
    };
    if wanted.is_empty() {
        return Err(ApiError::bad_request(
            "permissions must name at least one declared capability",
        ));
    }
    let mut out = BTreeMap::new();
    for (name, w) in wanted {
        let Some(d) = declared.get(&name) else {
            let known: Vec<_> = declared.keys().cloned().collect();
            return Err(ApiError::new(
                StatusCode::FORBIDDEN,
                format!("capability {name:?} is not declared in services.osmoda.egress.capabilities (declared: {known:?}); declare it and switch first"),
            ));
        };
        let all_domains = || {
            d.domains
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
        };
        let (domains, ports) = match w {
            Wanted::All(true) => (all_domains(), d.ports.clone()),
            Wanted::All(false) => continue,
            Wanted::Narrow { domains, ports } => (
                domains.unwrap_or_else(all_domains),
                ports.unwrap_or_else(|| d.ports.clone()),
            ),
        };
        if domains.is_empty() || ports.is_empty() || domains.len() > 64 || ports.len() > 64 {
            return Err(ApiError::bad_request(format!(
                "{name}: give 1-64 domains and 1-64 ports"
            )));
        }
        check_narrowing(&name, d, &domains, &ports)
            .map_err(|e| ApiError::new(StatusCode::FORBIDDEN, e))?;
        out.insert(name, Grant { domains, ports });
    }
    if out.is_empty() {
        return Err(ApiError::bad_request(
            "permissions must grant at least one capability",
        ));
    }
    Ok(out)
}

/// `POST /capability/mint` → `{token, id, subject, expires_at, capabilities, proxy, event_id}`.
pub async fn mint(
    State(st): State<Arc<AppState>>,
    caller: Caller,
    Json(b): Json<MintBody>,
) -> Result<axum::Json<Value>, ApiError> {
    if b.granted_to.is_empty()
        || b.granted_to.len() > 128
        || b.granted_to.chars().any(char::is_control)
    {
        return Err(ApiError::bad_request(
            "granted_to must be 1-128 bytes without control characters",
        ));
    }
    if b.ttl_sec == 0 || b.ttl_sec > MAX_TTL_SECS {
        return Err(ApiError::bad_request(format!(
            "ttl_sec must be 1..={MAX_TTL_SECS}"
        )));
    }
    let cfg = egress_config(&st)?;
    let caps = grants(&declared(&cfg)?, b.permissions)?;
    let (t, claims) = mint_checked(&st, &cfg, &b.granted_to, caps, b.ttl_sec)?;
    let ev = st
        .record(
            "capability.mint",
            &caller.actor,
            &json!({ "id": claims.id, "subject": claims.sub, "capabilities": claims.caps,
                     "issued_at": claims.iat, "expires_at": claims.exp }),
        )
        .await?;
    Ok(axum::Json(json!({
        "token": t, "id": claims.id, "subject": claims.sub, "expires_at": claims.exp,
        "capabilities": claims.caps, "proxy": format!("http://{}", cfg.listen),
        "event_id": ev.id,
    })))
}

/// `POST /capability/revoke` → `{id, revoked: true, event_id}`: the id is added to the
/// revocation list the proxy re-reads before its next CONNECT.
pub async fn revoke(
    State(st): State<Arc<AppState>>,
    caller: Caller,
    Json(b): Json<RevokeBody>,
) -> Result<axum::Json<Value>, ApiError> {
    let id = b.id.to_ascii_lowercase();
    if id.len() != 32 || !id.bytes().all(|c| c.is_ascii_hexdigit()) {
        return Err(ApiError::bad_request(
            "id must be a token id: 32 hex characters",
        ));
    }
    let cfg = egress_config(&st)?;
    let path = Path::new(&cfg.revocation_file);
    // One writer at a time, so two revocations never lose one another.
    static WRITER: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
    let guard = WRITER.lock().await;
    let mut text = std::fs::read_to_string(path).unwrap_or_default();
    if !text.lines().any(|l| l.trim() == id) {
        text.push_str(&id);
        text.push('\n');
        publish(path, &text)?;
    }
    drop(guard);
    let ev = st
        .record("capability.revoke", &caller.actor, &json!({ "id": id }))
        .await?;
    Ok(axum::Json(
        json!({ "id": id, "revoked": true, "event_id": ev.id }),
    ))
}
