//! `POST /webhook/{path}`: a routine's webhook. The request must carry
//! `X-Osmoda-Timestamp: <Unix seconds>` and `X-Osmoda-Signature: sha256=<hex>`, the
//! HMAC-SHA256 of `<timestamp>:<path>:<body>` under the secret in the routine's `secretFile`
//! (the path is signed, so a request signed for one webhook is refused by every other, even
//! one sharing the secret). A missing or wrong signature, or a timestamp outside the replay
//! window, is 401; a signature already accepted by this webhook inside the window (a replay)
//! is 409; a payload over [`crate::actions::MAX_PAYLOAD_BYTES`] is 413. Nothing runs then.

use std::sync::Arc;

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use hmac::{Hmac, Mac};
use osmoda_config::Trigger;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

use super::{ApiError, UrlPath};
use crate::actions::Fired;
use crate::error::RoutinesError;
use crate::history::Replay;
use crate::AppState;

/// Header with the request's Unix time in seconds (part of the signed content).
pub const TIMESTAMP_HEADER: &str = "x-osmoda-timestamp";
/// Header with `sha256=<hex HMAC-SHA256 of "<timestamp>:<path>:<body>">`.
pub const SIGNATURE_HEADER: &str = "x-osmoda-signature";

fn unauthorized(m: &str) -> ApiError {
    ApiError(RoutinesError::Unauthorized(m.to_string()))
}

/// The MAC a sender computes for `POST /webhook/<path>`: HMAC-SHA256(secret,
/// `"<timestamp>:<path>:<body>"`). Unambiguous: the timestamp is an integer and the path a
/// segment of `[A-Za-z0-9._-]`, so neither holds a `:`.
pub fn sign(secret: &[u8], timestamp: &str, path: &str, body: &[u8]) -> Option<Vec<u8>> {
    Some(
        mac(secret, timestamp, path, body)?
            .finalize()
            .into_bytes()
            .to_vec(),
    )
}

fn mac(secret: &[u8], timestamp: &str, path: &str, body: &[u8]) -> Option<Hmac<Sha256>> {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret).ok()?;
    for part in [timestamp.as_bytes(), b":", path.as_bytes(), b":", body] {
        mac.update(part);
    }
    Some(mac)
}

pub(super) async fn webhook(
    State(st): State<Arc<AppState>>,
    UrlPath(path): UrlPath<String>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Result<(StatusCode, axum::Json<Value>), ApiError> {
    let cfg = st.engine.config();
    let found = cfg.routines.iter().find_map(|(name, r)| match &r.trigger {
        Trigger::Webhook {
            path: p,
            secret_file,
            replay_window_secs,
        } if *p == path && r.enable => {
            Some((name.clone(), secret_file.clone(), *replay_window_secs))
        }
        _ => None,
    });
    let Some((name, secret_file, window)) = found else {
        return Err(RoutinesError::NotFound(format!(
            "no enabled routine has the webhook {path:?}; GET /routine/list shows each routine's trigger"
        ))
        .into());
    };
    // What the action is handed, refused when it could not be handed whole.
    let payload = serde_json::from_slice::<Value>(&body)
        .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&body).into_owned()));
    crate::actions::check_payload_size(&payload.to_string())?;
    // The daemon refuses a config whose secret files are missing or empty (crate::machine), so
    // this fails only when the file went away since; the caller learns nothing about it.
    let secret = crate::machine::read_secret(&secret_file).map_err(|why| {
        tracing::error!(
            "webhook {path:?} of routine {name}: the secret file {} {why}",
            secret_file.display()
        );
        RoutinesError::Unavailable(format!(
            "the webhook {path:?} cannot verify requests now; nothing ran"
        ))
    })?;
    let secret = secret.as_slice();
    let header = |n: &str| headers.get(n).and_then(|v| v.to_str().ok()).map(str::trim);
    let ts = header(TIMESTAMP_HEADER).ok_or_else(|| unauthorized(
            "missing X-Osmoda-Timestamp: send the request's Unix time in seconds, signed with the path and body",
        ))?;
    let sig = header(SIGNATURE_HEADER)
        .and_then(|s| s.strip_prefix("sha256="))
        .and_then(|h| hex::decode(h).ok())
        .ok_or_else(|| unauthorized("missing or malformed X-Osmoda-Signature (sha256=<hex>)"))?;
    let mac = mac(secret, ts, &path, &body).ok_or_else(|| unauthorized("unusable secret"))?;
    if mac.verify_slice(&sig).is_err() {
        return Err(unauthorized(
            "the signature does not match: X-Osmoda-Signature must be sha256=<hex HMAC-SHA256 of `<timestamp>:<path>:<body>` under the routine's secret>",
        ));
    }
    let now = st.opts.clock.now().timestamp();
    let sent: i64 = ts
        .parse()
        .map_err(|_| unauthorized("X-Osmoda-Timestamp is not Unix seconds"))?;
    // Caller-supplied: any i64 (i64::MIN included) must not overflow.
    let drift = now.abs_diff(sent);
    if drift > window {
        let side = if sent > now { "ahead of" } else { "behind" };
        return Err(unauthorized(&format!(
            "the timestamp is {drift}s {side} this machine's clock; the window is {window}s: sign a fresh timestamp (and check the sender's clock)"
        )));
    }
    // One replay store per webhook: the key is the path and the MAC.
    let id = hex::encode(
        Sha256::new()
            .chain_update(path.as_bytes())
            .chain_update([0])
            .chain_update(&sig)
            .finalize(),
    );
    let fired = Fired {
        kind: "webhook".into(),
        reference: id[..16].to_string(),
        payload: Some(payload),
        chain: Vec::new(),
        origin: None,
    };
    // Recorded with the run, or not at all: a request that ran nothing can be sent again.
    let replay = Replay {
        key: id,
        at_ms: now.saturating_mul(1000),
    };
    let f = st.engine.fire_once(&name, fired, Some(replay)).await?;
    Ok((
        StatusCode::ACCEPTED,
        axum::Json(json!({ "routine": name, "run_id": f.run_id, "status": f.status })),
    ))
}
