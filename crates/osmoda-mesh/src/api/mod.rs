//! HTTP/1.1 + JSON API on mesh's Unix socket (docs/api.md), and the one place errors become
//! responses: `{"error": "...", "detail": {"kind": ..., "hint": ...}}`.
//!
//! A refusal never quotes back a value that could be a secret (an invite code, a message): a
//! caller's string is named by its field and length, never repeated, unless it is a valid peer
//! name; and [`redact`] removes any longer run of base64url characters from every error text
//! on its way out (an invite code is ~2,500 of them), whatever produced it.

mod identity;
mod peers;

use std::sync::Arc;

use axum::extract::rejection::{JsonRejection, PathRejection, QueryRejection};
use axum::extract::{FromRequest, FromRequestParts};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use serde_json::json;

use crate::error::MeshError;
use crate::AppState;

/// Every route of mesh (`/metrics` is added by the shared listener).
pub fn router(state: Arc<AppState>) -> Router {
    Router::new()
        .route("/health", get(identity::health))
        .route("/identity", get(identity::identity))
        .route("/identity/rotate", post(identity::rotate))
        .route("/invite/create", post(identity::invite_create))
        .route("/invite/accept", post(identity::invite_accept))
        .route("/peers", get(peers::list))
        .route("/peer/{id}", get(peers::get_one).delete(peers::remove))
        .route("/peer/{id}/send", post(peers::send))
        .route("/peer/{id}/inbox", get(peers::inbox))
        .route("/peer/{id}/request", post(peers::request))
        .route("/requests/next", get(peers::next_request))
        .route("/requests/{id}/respond", post(peers::respond))
        .fallback(|method: axum::http::Method, uri: axum::http::Uri| async move {
            ApiError(MeshError::NotFound(format!(
                "no such route {method} {}; {ROUTES}",
                uri.path()
            )))
        })
        .method_not_allowed_fallback(|method: axum::http::Method, uri: axum::http::Uri| async move {
            osmoda_daemon::api::error_response(
                StatusCode::METHOD_NOT_ALLOWED,
                &redact(&format!("{method} is not allowed on {}; {ROUTES}", uri.path())),
                json!({ "kind": "method_not_allowed", "hint": "docs/api.md lists each route's method" }),
            )
        })
        .with_state(state)
}

/// What the socket serves, for the texts of unknown routes and methods.
const ROUTES: &str = "osmoda-mesh serves GET /health, /identity, /peers, /peer/{id}, \
/peer/{id}/inbox, /requests/next; POST /identity/rotate, /invite/create, /invite/accept, \
/peer/{id}/send, /peer/{id}/request, /requests/{id}/respond; DELETE /peer/{id} (docs/api.md)";

/// Longest run of base64url characters an error text may carry: a peer name is at most 64.
const MAX_RUN: usize = 64;

/// `text` with every run of more than [`MAX_RUN`] base64url characters (`A-Za-z0-9-_`, the
/// alphabet of invite codes and their secrets) replaced by `<N characters, not repeated>`: a
/// code pasted into any field, path or query never comes back in an error.
pub(crate) fn redact(text: &str) -> String {
    let b64 = |c: char| c.is_ascii_alphanumeric() || matches!(c, '-' | '_');
    let mut out = String::with_capacity(text.len());
    let mut run = String::new();
    let flush = |run: &mut String, out: &mut String| {
        if run.chars().count() > MAX_RUN {
            out.push_str(&format!(
                "<{} characters, not repeated>",
                run.chars().count()
            ));
        } else {
            out.push_str(run);
        }
        run.clear();
    };
    for c in text.chars() {
        if b64(c) {
            run.push(c);
        } else {
            flush(&mut run, &mut out);
            out.push(c);
        }
    }
    flush(&mut run, &mut out);
    out
}

/// A caller's string value as a refusal may show it: quoted when it is a valid peer name
/// (what a person wants to see again), else only its length.
pub(crate) fn shown(value: &str) -> String {
    if osmoda_config::tree_edit::valid_attr_name(value) {
        format!("{value:?}")
    } else {
        format!(
            "(a value of {} characters, not repeated)",
            value.chars().count()
        )
    }
}

/// serde's text without the string values it quotes (`invalid type: string "…"` becomes
/// `invalid type: a string`): a body's strings may be secrets.
fn without_strings(text: &str) -> String {
    const TAG: &str = "string \"";
    let mut out = text.to_string();
    let mut from = 0;
    while let Some(i) = out[from..].find(TAG).map(|i| from + i) {
        let start = i + TAG.len();
        // The closing quote: the first `"` not escaped by a backslash (serde quotes with Debug).
        let mut end = None;
        let mut esc = false;
        for (k, c) in out[start..].char_indices() {
            match c {
                '\\' if !esc => esc = true,
                '"' if !esc => {
                    end = Some(start + k);
                    break;
                }
                _ => esc = false,
            }
        }
        let Some(end) = end else { break };
        out.replace_range(i..=end, "a string");
        from = i + "a string".len();
    }
    out
}

/// A [`MeshError`] on its way to the client.
#[derive(Debug)]
pub struct ApiError(pub MeshError);

impl From<MeshError> for ApiError {
    fn from(e: MeshError) -> Self {
        ApiError(e)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        if let MeshError::ApprovalRequired { message, detail } = &self.0 {
            let mut detail = detail.clone();
            if let Some(t) = detail["ticket"].as_str() {
                detail["hint"] = json!(format!(
                    "once a person approved it, repeat the request with the query parameter approval={t}"
                ));
            }
            return osmoda_daemon::api::error_response(
                StatusCode::FORBIDDEN,
                &redact(message),
                detail,
            );
        }
        let (status, kind, hint) = match &self.0 {
            MeshError::BadRequest(_) => (StatusCode::BAD_REQUEST, "bad_request", "fix the request as the error says (docs/api.md lists the fields); nothing was sent or written"),
            MeshError::TooLarge(_) => (StatusCode::PAYLOAD_TOO_LARGE, "too_large", "send less: one message is at most 65,519 bytes encoded; nothing was sent or written"),
            MeshError::Forbidden(_) => (StatusCode::FORBIDDEN, "forbidden", "a reserved topic (`ledger.*`: agentd's witness) is sent, taken and answered only by its daemon, recognised by its uid (SO_PEERCRED); use a topic of your own"),
            MeshError::NotFound(_) => (StatusCode::NOT_FOUND, "not_found", "GET /peers lists the peers, GET /requests/next the waiting requests, docs/api.md the routes"),
            MeshError::Conflict(_) => (StatusCode::CONFLICT, "conflict", "GET /peers shows each peer's state; peers are services.osmoda.mesh.peers"),
            MeshError::Peer(_) => (StatusCode::BAD_GATEWAY, "peer", "the other host refused or could not be reached; its ledger (mesh.handshake.refused) says why"),
            MeshError::Timeout(_) => (StatusCode::GATEWAY_TIMEOUT, "timeout", "the peer did not answer in time; try again or raise timeout_secs"),
            MeshError::Vault(_) => (StatusCode::INTERNAL_SERVER_ERROR, "vault", "see mesh's log (`journalctl -u osmoda-mesh`)"),
            MeshError::Agentd(_) => (StatusCode::BAD_GATEWAY, "agentd", "recording a peer needs agentd and osmoda-watch; their answer is in the error"),
            MeshError::Unavailable(_) => (StatusCode::BAD_GATEWAY, "agentd", "mesh keeps what it owes agentd and osmoda-watch and retries until they answer; GET /peer/{id} shows when the peer is declared"),
            MeshError::Internal(_) | MeshError::ApprovalRequired { .. } => (StatusCode::INTERNAL_SERVER_ERROR, "internal", "see mesh's log (`journalctl -u osmoda-mesh`)"),
        };
        osmoda_daemon::api::error_response(
            status,
            &redact(&self.0.to_string()),
            json!({ "kind": kind, "hint": hint }),
        )
    }
}

/// JSON body extractor whose rejections use the API's error shape.
#[derive(Debug, FromRequest)]
#[from_request(via(axum::Json), rejection(ApiError))]
pub struct Json<T>(pub T);

/// Largest request body read (axum's default); a message is far smaller (65,519 bytes).
const MAX_BODY: usize = 2 * 1024 * 1024;

impl From<JsonRejection> for ApiError {
    fn from(r: JsonRejection) -> Self {
        if r.status() == StatusCode::PAYLOAD_TOO_LARGE {
            return ApiError(MeshError::TooLarge(format!(
                "the request body is over {MAX_BODY} bytes; a message is at most 65,519 bytes encoded"
            )));
        }
        if matches!(r, JsonRejection::MissingJsonContentType(_)) {
            return ApiError(MeshError::BadRequest(
                "the request body needs the header Content-Type: application/json".into(),
            ));
        }
        ApiError(MeshError::BadRequest(without_strings(
            &osmoda_daemon::api::invalid_json(&r),
        )))
    }
}

impl From<QueryRejection> for ApiError {
    fn from(r: QueryRejection) -> Self {
        ApiError(MeshError::BadRequest(format!(
            "invalid query: {}",
            without_strings(&osmoda_daemon::api::rejection_reason(&r.body_text()))
        )))
    }
}

/// URL path parameters whose rejections use the API's error shape.
#[derive(Debug, FromRequestParts)]
#[from_request(via(axum::extract::Path), rejection(ApiError))]
pub struct Path<T>(pub T);

impl From<PathRejection> for ApiError {
    fn from(r: PathRejection) -> Self {
        ApiError(MeshError::BadRequest(format!(
            "invalid URL path: {} (a peer id is a peer name, a request id a number from GET /requests/next)",
            without_strings(&osmoda_daemon::api::rejection_reason(&r.body_text()))
        )))
    }
}

/// A peer name must be a Nix attribute name (it becomes `services.osmoda.mesh.peers.<name>`).
///
/// # Errors
/// `BadRequest` saying what a name may hold; an invalid name is not quoted back (it may be a
/// pasted code), only its length.
pub(crate) fn check_peer_name(name: &str) -> Result<(), MeshError> {
    if osmoda_config::tree_edit::valid_attr_name(name) {
        Ok(())
    } else {
        Err(MeshError::BadRequest(format!(
            "peer name {} must start with a letter or '_' and contain only letters, digits, '-' and '_' (at most 64)",
            shown(name)
        )))
    }
}

/// An endpoint a caller gave (`field`): `host:port` with a port in 1..=65535.
///
/// # Errors
/// `BadRequest` naming the field; the value is not quoted back.
pub(crate) fn check_endpoint(field: &str, value: &str) -> Result<(), MeshError> {
    osmoda_config::mesh::check_endpoint(value).map_err(|_| {
        MeshError::BadRequest(format!(
            "`{field}` must be host:port with a port in 1..=65535, e.g. \"192.0.2.7:18800\" (the value given, {} characters, is not one)",
            value.chars().count()
        ))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_base64url_runs_are_never_repeated() {
        let code = "eyJ2IjoxLCJlbmRwb2ludCI6IjEyNy4wLjAuMToxODgwMCJ9".repeat(50);
        let out = redact(&format!(
            "no such route GET /peer/{code}/x; and /peer/{{id}}"
        ));
        assert!(!out.contains(&code[..65]), "{out}");
        assert!(
            out.contains(&format!("<{} characters, not repeated>", code.len())),
            "{out}"
        );
        assert!(out.contains("/peer/{id}"), "{out}");
        assert!(out.starts_with("no such route GET /peer/<"), "{out}");
        assert!(out.contains(" characters, not repeated>/x;"), "{out}");
        // A name of 64 characters and ordinary sentences stay.
        let name = "a".repeat(64);
        assert_eq!(
            redact(&format!("no peer named {name:?}")),
            format!("no peer named {name:?}")
        );
    }

    #[test]
    fn serde_strings_are_not_quoted_back() {
        assert_eq!(
            without_strings(
                r#"invalid type: string "s3cr\"et", expected a JSON object at line 1 column 9"#
            ),
            "invalid type: a string, expected a JSON object at line 1 column 9"
        );
        assert_eq!(
            without_strings(r#"invalid value: string "x", expected y; string "z""#),
            "invalid value: a string, expected y; a string"
        );
        assert_eq!(without_strings("missing field `x`"), "missing field `x`");
        assert_eq!(shown("alpha"), "\"alpha\"");
        assert_eq!(shown("a.b"), "(a value of 3 characters, not repeated)");
    }
}
