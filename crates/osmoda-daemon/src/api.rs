//! The error body every osModa daemon answers with (docs/api.md, "Errors"):
//! `{"error": "<what was wrong>", "detail": {"kind": "<code>", "hint": "<what to do>", ...}}`.
//! Each daemon maps its own error type to a status and a detail; these build the response.

use axum::extract::rejection::JsonRejection;
use axum::http::{Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use serde_json::{json, Value};

/// `status` with `{"error": message, "detail": detail}`. A 5xx is also logged at error level
/// (the caller only sees the message; the log keeps it for `journalctl`).
pub fn error_response(status: StatusCode, message: &str, detail: Value) -> Response {
    if status.is_server_error() {
        tracing::error!("{message}");
    }
    (
        status,
        axum::Json(json!({ "error": message, "detail": detail })),
    )
        .into_response()
}

/// Router fallback for a known route called with another method: 405, kind
/// `method_not_allowed`.
pub async fn method_not_allowed(method: Method, uri: Uri) -> Response {
    error_response(
        StatusCode::METHOD_NOT_ALLOWED,
        &format!("{method} is not allowed on {}", uri.path()),
        json!({ "kind": "method_not_allowed", "hint": "docs/api.md lists each route's method" }),
    )
}

/// The message for a JSON body axum could not read: `invalid JSON body: <axum's reason>`.
pub fn invalid_json(rejection: &JsonRejection) -> String {
    format!("invalid JSON body: {}", rejection.body_text())
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn body(resp: Response) -> (StatusCode, Value) {
        let status = resp.status();
        let bytes = axum::body::to_bytes(resp.into_body(), 1 << 16)
            .await
            .expect("body");
        (status, serde_json::from_slice(&bytes).expect("json"))
    }

    #[tokio::test]
    async fn error_bodies_have_the_documented_shape() {
        let (status, v) = body(error_response(
            StatusCode::CONFLICT,
            "busy",
            json!({ "kind": "conflict", "hint": "wait" }),
        ))
        .await;
        assert_eq!(status, StatusCode::CONFLICT);
        assert_eq!(
            v,
            json!({ "error": "busy", "detail": { "kind": "conflict", "hint": "wait" } })
        );

        let (status, v) =
            body(method_not_allowed(Method::DELETE, Uri::from_static("/health")).await).await;
        assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED);
        assert_eq!(v["error"], "DELETE is not allowed on /health");
        assert_eq!(v["detail"]["kind"], "method_not_allowed");
    }
}
