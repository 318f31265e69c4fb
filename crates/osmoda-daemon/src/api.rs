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

/// The message for a JSON body axum could not read: `invalid JSON body: <the reason>`.
pub fn invalid_json(rejection: &JsonRejection) -> String {
    format!(
        "invalid JSON body: {}",
        rejection_reason(&rejection.body_text())
    )
}

/// Reads `T` from a JSON value a handler took apart itself (a nested payload), saying where a
/// problem is as axum's `Json` does for a body: `` `<at>.<field path>`: <reason> `` in JSON terms
/// ([`rejection_reason`]), e.g. `` `payload.message`: invalid type: number, expected a string ``.
///
/// # Errors
/// The text above, when `value` is not a `T`.
pub fn from_value_at<T: serde::de::DeserializeOwned>(
    at: &str,
    value: serde_json::Value,
) -> Result<T, String> {
    serde_path_to_error::deserialize(value).map_err(|e| {
        let path = e.path().to_string();
        let field = match path.as_str() {
            "." => at.to_string(),
            p if p.starts_with('[') => format!("{at}{p}"),
            p => format!("{at}.{p}"),
        };
        let reason = rejection_reason(&e.into_inner().to_string());
        format!("`{field}`: {reason}")
    })
}

/// An extractor rejection's text (axum's `body_text()`) in the caller's terms: axum's framing
/// ("Failed to deserialize the JSON body into the target type: ", "Invalid URL: ", …) dropped,
/// and Rust type names (`expected struct BeginBody`, `` to a `i64` ``) said as JSON kinds. What
/// serde says about the field (its path, the unknown name, the expected names) is kept.
pub fn rejection_reason(text: &str) -> String {
    const FRAMING: &[&str] = &[
        "Failed to deserialize the JSON body into the target type: ",
        "Failed to parse the request body as JSON: ",
        "Failed to deserialize query string: ",
        "Failed to deserialize form: ",
        "Invalid URL: ",
        "Failed to buffer the request body: ",
    ];
    let mut out = text.trim().to_string();
    for f in FRAMING {
        if let Some(rest) = out.strip_prefix(f) {
            out = rest.to_string();
        }
    }
    // `expected struct BeginBody` / `expected a map` → what the caller sends.
    while let Some(i) = out.find("expected struct ") {
        let end = out[i + 16..]
            .find(|c: char| !c.is_alphanumeric() && c != '_')
            .map_or(out.len(), |e| i + 16 + e);
        out.replace_range(i..end, "expected a JSON object");
    }
    // serde's untagged enums name the Rust type: "data did not match any variant of untagged
    // enum StrOrVal".
    if let Some(i) = out.find("did not match any variant of untagged enum ") {
        let end = out[i + 43..]
            .find(|c: char| !c.is_alphanumeric() && c != '_')
            .map_or(out.len(), |e| i + 43 + e);
        out.replace_range(i..end, "is not one of the accepted shapes");
    }
    for (rust, json) in [
        ("expected u64", "expected a non-negative integer"),
        ("expected u32", "expected a non-negative integer"),
        ("expected usize", "expected a non-negative integer"),
        ("expected u16", "expected a non-negative integer"),
        ("expected u8", "expected a non-negative integer"),
        ("expected i64", "expected an integer"),
        ("expected i32", "expected an integer"),
        ("expected f64", "expected a number"),
        ("expected a sequence", "expected a list"),
        ("expected a map", "expected a JSON object"),
    ] {
        out = out.replace(rust, json);
    }
    // Path parameters: "Cannot parse `abc` to a `i64`".
    if let Some(rest) = out.strip_prefix("Cannot parse `") {
        if let Some((value, ty)) = rest.split_once("` to a `") {
            let kind = match ty.trim_end_matches('`') {
                "i64" | "i32" | "u64" | "u32" | "usize" => "a number",
                _ => "of the right kind",
            };
            out = format!("`{value}` is not {kind}");
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nested_values_name_the_field_that_is_wrong() {
        #[derive(Debug, serde::Deserialize)]
        #[serde(deny_unknown_fields)]
        #[allow(dead_code)]
        struct Inner {
            message: String,
            n: Option<u64>,
        }
        for (v, want) in [
            (
                json!({"message": 5}),
                "`payload.message`: invalid type: number, expected a string",
            ),
            (
                json!({"message": "x", "n": "ten"}),
                "`payload.n`: invalid type: string \"ten\", expected a non-negative integer",
            ),
            (
                json!({"message": "x", "m": 1}),
                "`payload.m`: unknown field `m`, expected `message` or `n`",
            ),
            (json!({}), "`payload`: missing field `message`"),
            (
                json!([5]),
                "`payload[0]`: invalid type: number, expected a string",
            ),
            (
                json!("x"),
                "`payload`: invalid type: string \"x\", expected a JSON object",
            ),
        ] {
            assert_eq!(from_value_at::<Inner>("payload", v).unwrap_err(), want);
        }
    }

    #[test]
    fn rejection_reasons_speak_json_not_rust() {
        for (axum, want) in [
            (
                "Failed to deserialize the JSON body into the target type: invalid type: string \"text\", expected struct BeginBody at line 1 column 6",
                "invalid type: string \"text\", expected a JSON object at line 1 column 6",
            ),
            (
                "Failed to deserialize the JSON body into the target type: ttl_secs: invalid type: string \"ten\", expected u64 at line 1 column 17",
                "ttl_secs: invalid type: string \"ten\", expected a non-negative integer at line 1 column 17",
            ),
            (
                "Failed to deserialize query string: after: unknown field `after`, expected `before_id` or `limit`",
                "after: unknown field `after`, expected `before_id` or `limit`",
            ),
            ("Invalid URL: Cannot parse `abc` to a `i64`", "`abc` is not a number"),
            ("Failed to parse the request body as JSON: EOF while parsing a value at line 1 column 0", "EOF while parsing a value at line 1 column 0"),
            ("data did not match any variant of untagged enum StrOrVal", "data is not one of the accepted shapes"),
        ] {
            assert_eq!(rejection_reason(axum), want);
        }
    }

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
