//! The one place where agentd turns errors into HTTP responses.

use axum::extract::rejection::{JsonRejection, PathRejection, QueryRejection};
use axum::extract::{FromRequest, FromRequestParts, OptionalFromRequest, Request};
use axum::http::request::Parts;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::de::DeserializeOwned;
use serde_json::{json, Value};

/// An API error: a status, a short message saying what was wrong, and optional detail.
#[derive(Debug)]
pub struct ApiError {
    /// HTTP status sent to the caller.
    pub status: StatusCode,
    /// What went wrong, in one sentence.
    pub error: String,
    /// Structured detail (field names, valid values, ...).
    pub detail: Value,
}

impl ApiError {
    /// A new error with no detail.
    pub fn new(status: StatusCode, error: impl Into<String>) -> Self {
        Self {
            status,
            error: error.into(),
            detail: Value::Null,
        }
    }
    /// 400 Bad Request.
    pub fn bad_request(error: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, error)
    }
    /// 404 Not Found.
    pub fn not_found(error: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, error)
    }
    /// 500, for failures of agentd itself (storage, I/O).
    pub fn internal(error: impl std::fmt::Display) -> Self {
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("internal error: {error}"),
        )
    }
    /// Attach structured detail.
    pub fn with_detail(mut self, detail: Value) -> Self {
        self.detail = detail;
        self
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        if self.status.is_server_error() {
            tracing::error!(status = %self.status, error = %self.error, "request failed");
        }
        (
            self.status,
            axum::Json(json!({ "error": self.error, "detail": self.detail })),
        )
            .into_response()
    }
}

impl From<osmoda_ledger::LedgerError> for ApiError {
    fn from(e: osmoda_ledger::LedgerError) -> Self {
        use osmoda_ledger::LedgerError as E;
        match e {
            E::InvalidLabel { .. }
            | E::InvalidPayload(_)
            | E::InvalidDedup(_)
            | E::InvalidQuery(_) => Self::bad_request(e.to_string()),
            E::NotFound(_) => Self::not_found(e.to_string()),
            other => Self::internal(other),
        }
    }
}

impl From<osmoda_memory::MemoryError> for ApiError {
    fn from(e: osmoda_memory::MemoryError) -> Self {
        use osmoda_memory::MemoryError as E;
        match e {
            E::Invalid(_) => Self::bad_request(e.to_string()),
            E::NotANote { .. } | E::NoteFull { .. } => {
                Self::new(StatusCode::CONFLICT, e.to_string())
            }
            E::Embed(_) => Self::new(StatusCode::SERVICE_UNAVAILABLE, e.to_string()),
            other => Self::internal(other),
        }
    }
}

impl From<rusqlite::Error> for ApiError {
    fn from(e: rusqlite::Error) -> Self {
        Self::internal(e)
    }
}

/// `axum::Json` whose rejections (malformed JSON, unknown fields, wrong types, oversized
/// bodies, missing content type) become our JSON error body.
pub struct Json<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for Json<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        match <axum::Json<T> as FromRequest<S>>::from_request(req, state).await {
            Ok(axum::Json(v)) => Ok(Json(v)),
            Err(rejection) => Err(json_rejection(rejection)),
        }
    }
}

/// An optional JSON body: absent when the request has no body and no content type.
impl<T: DeserializeOwned, S: Send + Sync> OptionalFromRequest<S> for Json<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Option<Self>, Self::Rejection> {
        let empty = req
            .headers()
            .get(axum::http::header::CONTENT_TYPE)
            .is_none()
            && req
                .headers()
                .get(axum::http::header::CONTENT_LENGTH)
                .is_none_or(|v| v.as_bytes() == b"0");
        if empty {
            return Ok(None);
        }
        <Json<T> as FromRequest<S>>::from_request(req, state)
            .await
            .map(Some)
    }
}

/// Whether `err` or one of its sources is an I/O timeout (the listener cut a slow body off).
fn timed_out(err: &(dyn std::error::Error + 'static)) -> bool {
    let mut cur = Some(err);
    while let Some(e) = cur {
        if e.downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::TimedOut)
        {
            return true;
        }
        cur = e.source();
    }
    false
}

fn json_rejection(rejection: JsonRejection) -> ApiError {
    if timed_out(&rejection) {
        return ApiError::new(
            StatusCode::REQUEST_TIMEOUT,
            "request body not received in time",
        )
        .with_detail(json!({ "hint": "send the whole body at once; bodies have 30 s" }));
    }
    let status = rejection.status();
    let (error, hint) = match &rejection {
        JsonRejection::JsonDataError(_) => (
            "request body has the wrong shape",
            "check field names and types against docs/api.md",
        ),
        JsonRejection::JsonSyntaxError(_) => {
            ("request body is not valid JSON", "send a JSON object")
        }
        JsonRejection::MissingJsonContentType(_) => (
            "missing `Content-Type: application/json`",
            "set the content type header",
        ),
        _ if status == StatusCode::PAYLOAD_TOO_LARGE => {
            ("request body is too large", "bodies are limited to 1 MiB")
        }
        _ => (
            "could not read request body",
            "retry with a complete JSON body",
        ),
    };
    let reason = osmoda_daemon::api::rejection_reason(&rejection.body_text());
    ApiError::new(status, format!("{error}: {reason}"))
        .with_detail(json!({ "reason": reason, "hint": hint }))
}

/// `axum::extract::Query` with our JSON error body.
pub struct Query<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequestParts<S> for Query<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        match axum::extract::Query::<T>::from_request_parts(parts, state).await {
            Ok(axum::extract::Query(v)) => Ok(Query(v)),
            Err(r) => Err(query_rejection(r)),
        }
    }
}

fn query_rejection(r: QueryRejection) -> ApiError {
    let reason = osmoda_daemon::api::rejection_reason(&r.body_text());
    ApiError::bad_request(format!("invalid query string: {reason}")).with_detail(json!({
        "reason": reason,
        "hint": "docs/api.md lists each route's query parameters",
    }))
}

/// `axum::extract::Path` with our JSON error body.
pub struct Path<T>(pub T);

impl<T: DeserializeOwned + Send, S: Send + Sync> FromRequestParts<S> for Path<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        match axum::extract::Path::<T>::from_request_parts(parts, state).await {
            Ok(axum::extract::Path(v)) => Ok(Path(v)),
            Err(r) => Err(path_rejection(r)),
        }
    }
}

fn path_rejection(r: PathRejection) -> ApiError {
    let status = r.status();
    let reason = osmoda_daemon::api::rejection_reason(&r.body_text());
    ApiError::new(status, format!("invalid path parameter: {reason}")).with_detail(json!({
        "reason": reason,
        "hint": "incident ids are numbers; see docs/api.md for each route's parameters",
    }))
}

/// Last line of defence, applied to every response: an error answer that is not JSON (a
/// rejection of an extractor a handler uses directly) is rewritten into our
/// `{"error","detail"}` body with the same status.
pub async fn json_errors_only(resp: Response) -> Response {
    let status = resp.status();
    let is_json = resp
        .headers()
        .get(axum::http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    if !(status.is_client_error() || status.is_server_error()) || is_json {
        return resp;
    }
    let text = match axum::body::to_bytes(resp.into_body(), 64 * 1024).await {
        Ok(b) => String::from_utf8_lossy(&b).into_owned(),
        Err(_) => String::new(),
    };
    let error = if text.trim().is_empty() {
        status
            .canonical_reason()
            .unwrap_or("request failed")
            .to_string()
    } else {
        text
    };
    ApiError::new(status, error)
        .with_detail(json!({ "hint": "see docs/api.md for this route's parameters" }))
        .into_response()
}

/// Fallback for unknown routes.
pub async fn not_found(uri: axum::http::Uri) -> ApiError {
    ApiError::not_found(format!("no route for {}", uri.path()))
        .with_detail(json!({ "hint": "see docs/api.md for the list of endpoints" }))
}

/// Fallback for a known route called with the wrong method. Every route of agentd's sockets
/// takes exactly one method, GET to read or POST to change, so the other one is what to use
/// (axum's `Allow` header is not set below our layers).
pub async fn method_not_allowed(method: axum::http::Method, uri: axum::http::Uri) -> ApiError {
    let other = match method {
        axum::http::Method::GET => "POST",
        axum::http::Method::POST => "GET",
        _ => "GET or POST (see docs/api.md)",
    };
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        format!(
            "{} is not allowed on {}; this route takes {other}",
            method,
            uri.path()
        ),
    )
}
