//! HTTP/1.1 + JSON API on the Unix socket, and the one place errors become responses.

mod voice;

use std::sync::Arc;

use axum::extract::rejection::JsonRejection;
use axum::extract::{DefaultBodyLimit, FromRequest};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use serde_json::json;

use crate::error::VoiceError;
use crate::AppState;

/// Largest request body (text to speak is at most 4,000 characters).
pub const MAX_BODY_BYTES: usize = 64 * 1024;

/// Every route of osmoda-voice.
pub fn router(state: Arc<AppState>) -> Router {
    Router::new()
        .route("/health", get(voice::health))
        .route("/voice/status", get(voice::status))
        .route("/voice/transcribe", post(voice::transcribe))
        .route("/voice/speak", post(voice::speak))
        .route("/voice/record", post(voice::record))
        .route("/voice/listen", post(voice::listen))
        .fallback(|method: axum::http::Method, uri: axum::http::Uri| async move {
            ApiError(VoiceError::NotFound(format!(
                "no such route {method} {}; osmoda-voice serves GET /health, GET /voice/status and POST /voice/transcribe, /voice/speak, /voice/record and /voice/listen (docs/api.md)",
                uri.path()
            )))
        })
        .method_not_allowed_fallback(osmoda_daemon::api::method_not_allowed)
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .with_state(state)
}

/// A [`VoiceError`] on its way to the client.
#[derive(Debug)]
pub struct ApiError(pub VoiceError);

impl From<VoiceError> for ApiError {
    fn from(e: VoiceError) -> Self {
        ApiError(e)
    }
}

impl IntoResponse for ApiError {
    /// `{"error": "<what was wrong>", "detail": {"kind": "<code>", "hint": "<what to do>"}}`.
    fn into_response(self) -> Response {
        let (status, kind, hint) = match &self.0 {
            VoiceError::BadRequest(_) => (StatusCode::BAD_REQUEST, "bad_request", "fix the request as the error says (docs/api.md lists the fields); nothing was changed"),
            VoiceError::Forbidden(_) => (StatusCode::FORBIDDEN, "forbidden", "osmoda-voice reads audio only from its state dir and services.osmoda.voice.audioDirs"),
            VoiceError::NotFound(_) => (StatusCode::NOT_FOUND, "not_found", "check the path (or the route: docs/api.md)"),
            VoiceError::Unsupported(_) => (StatusCode::UNSUPPORTED_MEDIA_TYPE, "unsupported_audio", "send a WAV file: PCM 8/16/24/32-bit or 32-bit float, 1-8 channels, 8-192 kHz (e.g. `sox in.mp3 out.wav`)"),
            VoiceError::TooLarge(_) => (StatusCode::PAYLOAD_TOO_LARGE, "too_large", "split the audio into pieces of at most 10 minutes"),
            VoiceError::Unavailable(_) => (StatusCode::SERVICE_UNAVAILABLE, "unavailable", "see GET /voice/status for what is configured and available"),
            VoiceError::Engine(_) => (StatusCode::INTERNAL_SERVER_ERROR, "engine_failed", "see osmoda-voice's log (`journalctl -u osmoda-voice`)"),
            VoiceError::Config(_) | VoiceError::Io { .. } => (StatusCode::INTERNAL_SERVER_ERROR, "internal", "see osmoda-voice's log (`journalctl -u osmoda-voice`)"),
        };
        osmoda_daemon::api::error_response(
            status,
            &self.0.message(),
            json!({ "kind": kind, "hint": hint }),
        )
    }
}

/// JSON body extractor whose rejections use the API's error shape.
#[derive(Debug, FromRequest)]
#[from_request(via(axum::Json), rejection(ApiError))]
pub struct Json<T>(pub T);

impl From<JsonRejection> for ApiError {
    fn from(r: JsonRejection) -> Self {
        ApiError(VoiceError::BadRequest(osmoda_daemon::api::invalid_json(&r)))
    }
}
