//! Every HTTP error the collector returns, mapped to a status and a JSON body in one place.

use axum::Json;
use axum::http::{HeaderName, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use crate::delivery::DeadLetterError;
use crate::storage::StoreError;

/// Seconds a client should wait after a 503 before retrying, sent as both `Retry-After` and
/// `x-ratelimit-reset` (which analytics.js reads).
pub const RETRY_AFTER_SECONDS: u32 = 5;

/// The `x-ratelimit-reset` header (seconds until a retry may succeed), which analytics.js
/// reads on a 429 alongside `Retry-After`; `cors` lets pages read it.
pub(crate) const RATELIMIT_RESET: HeaderName = HeaderName::from_static("x-ratelimit-reset");

/// A request the collector refuses.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum ApiError {
    /// No write key, or one no source has: 401.
    #[error("{0}")]
    Unauthorized(&'static str),
    /// The request is malformed or over a limit: 400, naming the problem and where.
    #[error("{message}")]
    BadRequest {
        /// What is wrong.
        message: String,
        /// Index of the message at fault in the batch, if one is.
        index: Option<usize>,
        /// Wire name of the field at fault, if one is.
        field: Option<&'static str>,
    },
    /// The body's `Content-Encoding` is not one the collector takes: 415, so that a client
    /// can send it again in another (RFC 7694); the ingest answers list the ones it takes.
    #[error("{0}")]
    UnsupportedEncoding(String),
    /// The admin token is missing or wrong: 401.
    #[error("a valid admin token is required (Authorization: Bearer <token>)")]
    AdminUnauthorized,
    /// The body did not arrive in time: 408.
    #[error("the request body did not arrive within {0:?}")]
    Timeout(std::time::Duration),
    /// The body arrived slower than the minimum upload rate: 408, so the client retries.
    #[error("the request body arrived slower than {0} bytes a second")]
    TooSlow(u64),
    /// The store cannot take writes: 503 with Retry-After.
    #[error("the event store is unavailable; retry later")]
    Unavailable,
    /// Every ingest slot stayed taken for the whole wait: 503 with Retry-After.
    #[error("the collector is busy with other requests; retry later")]
    Busy,
    /// The page's origin is not one its source allows: 403.
    #[error("this source does not accept events from this page's origin")]
    OriginNotAllowed,
    /// What the request names does not exist (an unknown destination to replay): 404.
    #[error("{0}")]
    NotFound(String),
    /// Something that should not fail did: 500.
    #[error("internal error: {0}")]
    Internal(String),
}

impl ApiError {
    /// A 400 naming the problem only.
    pub(crate) fn bad(message: impl Into<String>) -> ApiError {
        ApiError::BadRequest {
            message: message.into(),
            index: None,
            field: None,
        }
    }
}

/// A store error on an admin read: 503 with `Retry-After` for one that clears without a repair
/// ([`StoreError::retry_later`]), else 500 with the error's message. (Ingest answers every
/// store error 503, so that the client keeps its events.)
impl From<StoreError> for ApiError {
    fn from(error: StoreError) -> ApiError {
        if error.retry_later() {
            tracing::warn!("admin: {error}");
            ApiError::Unavailable
        } else {
            tracing::error!("admin: {error}");
            ApiError::Internal(error.to_string())
        }
    }
}

impl From<DeadLetterError> for ApiError {
    fn from(error: DeadLetterError) -> ApiError {
        match error {
            DeadLetterError::UnknownDestination { .. } => ApiError::NotFound(error.to_string()),
            DeadLetterError::Store(error) => ApiError::from(error),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = match &self {
            ApiError::Unauthorized(_) | ApiError::AdminUnauthorized => StatusCode::UNAUTHORIZED,
            ApiError::BadRequest { .. } => StatusCode::BAD_REQUEST,
            ApiError::Timeout(_) | ApiError::TooSlow(_) => StatusCode::REQUEST_TIMEOUT,
            ApiError::NotFound(_) => StatusCode::NOT_FOUND,
            ApiError::UnsupportedEncoding(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ApiError::OriginNotAllowed => StatusCode::FORBIDDEN,
            ApiError::Unavailable | ApiError::Busy => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        };
        let mut body = json!({"success": false, "error": self.to_string()});
        if let ApiError::BadRequest { index, field, .. } = &self {
            if let Some(index) = index {
                body["index"] = json!(index);
            }
            if let Some(field) = field {
                body["field"] = json!(field);
            }
        }
        let mut response = (status, Json(body)).into_response();
        if matches!(self, ApiError::Unavailable | ApiError::Busy) {
            let headers = response.headers_mut();
            headers.insert(header::RETRY_AFTER, HeaderValue::from(RETRY_AFTER_SECONDS));
            headers.insert(RATELIMIT_RESET, HeaderValue::from(RETRY_AFTER_SECONDS));
        }
        response
    }
}
