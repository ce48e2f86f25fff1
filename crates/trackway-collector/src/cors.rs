//! Cross-origin access for browser pages: to the ingest endpoints and the settings endpoint
//! only. The admin API, the stream and the debugger never answer cross-origin (no CORS
//! headers, so a page elsewhere can read nothing of them, even holding the token).
//!
//! Two parts, because a preflight carries no write key (no body, no `Authorization`), so it
//! cannot say which source a page will send as:
//!
//! - tower-http's CORS layer answers preflights (204, the methods, the request headers
//!   analytics.js and the mobile libraries send, a max-age) and puts
//!   `Access-Control-Allow-Origin` on every answer, errors included (a 400 the page cannot
//!   read is retried forever), for an origin that some source allows;
//! - once a request is authenticated, [`check_origin`] refuses (403) a page whose origin its
//!   own source does not allow, before anything is stored. The 403 itself is readable by the
//!   page when another source allows its origin, so that analytics.js drops the message
//!   instead of retrying it; otherwise the browser hides it, and the event is not stored
//!   either way.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use axum::http::{HeaderMap, HeaderName, Method, StatusCode, header};
use axum::response::Response;
use tower_http::cors::{AllowOrigin, CorsLayer};

use crate::config::SourcePolicy;
use crate::config::origin::parse_origin;
use crate::error::{ApiError, RATELIMIT_RESET};

/// How long a browser may reuse a preflight's answer: Chromium's cap (two hours). Every
/// analytics.js request is preflighted (its Basic auth and `X-Retry-Count` headers), so a
/// long cache halves the requests a page makes.
pub const PREFLIGHT_MAX_AGE: Duration = Duration::from_secs(2 * 60 * 60);

/// The CORS layer of the ingest and settings routes; `policies` decide which origins get
/// `Access-Control-Allow-Origin` (any origin, if a source has no list).
pub(crate) fn layer<'a>(policies: impl Iterator<Item = &'a SourcePolicy>) -> CorsLayer {
    let mut any = false;
    let mut union = HashSet::new();
    for policy in policies {
        match &policy.allowed_origins {
            None => any = true,
            Some(origins) => union.extend(origins.iter().cloned()),
        }
    }
    let allow = if any {
        AllowOrigin::mirror_request()
    } else {
        let union = Arc::new(union);
        AllowOrigin::predicate(move |origin, _| {
            origin
                .to_str()
                .ok()
                .and_then(parse_origin)
                .is_some_and(|origin| union.contains(&origin))
        })
    };
    CorsLayer::new()
        .allow_origin(allow)
        .allow_methods([Method::GET, Method::POST, Method::OPTIONS])
        .allow_headers([
            header::CONTENT_TYPE,
            header::AUTHORIZATION,
            HeaderName::from_static("x-retry-count"),
            header::CONTENT_ENCODING,
        ])
        .expose_headers([header::RETRY_AFTER, RATELIMIT_RESET])
        .max_age(PREFLIGHT_MAX_AGE)
}

/// A preflight's answer is 204 (tower-http's is 200 with an empty body): a preflight
/// answer is the only one that carries `Access-Control-Allow-Methods`.
pub(crate) async fn preflight_no_content(mut response: Response) -> Response {
    if response.status() == StatusCode::OK
        && response
            .headers()
            .contains_key(header::ACCESS_CONTROL_ALLOW_METHODS)
    {
        *response.status_mut() = StatusCode::NO_CONTENT;
    }
    response
}

/// Refuses a request from a page whose origin `policy` does not allow. A request without
/// `Origin` (a server or a mobile app) is not a page's, and is let through.
pub(crate) fn check_origin(
    policy: Option<&SourcePolicy>,
    headers: &HeaderMap,
) -> Result<(), ApiError> {
    let Some(allowed) = policy.and_then(|p| p.allowed_origins.as_ref()) else {
        return Ok(());
    };
    let Some(origin) = headers.get(header::ORIGIN) else {
        return Ok(());
    };
    let origin = origin.to_str().ok().and_then(parse_origin);
    match origin {
        Some(origin) if allowed.contains(&origin) => Ok(()),
        _ => Err(ApiError::OriginNotAllowed),
    }
}
