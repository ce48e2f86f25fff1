//! `GET /v1/projects/{writeKey}/settings`: the settings analytics.js loads before anything
//! else (from `<cdnURL>/v1/projects/<writeKey>/settings`), so that a page points it at the
//! collector with one option:
//!
//! ```js
//! AnalyticsBrowser.load({ writeKey: "wk_...", cdnURL: "https://collect.example.com" })
//! ```
//!
//! The answer has exactly one integration, `Segment.io`, whose `apiHost` and `protocol`
//! point back at this collector, and `metrics.sampleRate` 0, so that the page sends nothing
//! to Segment: no other integration is loaded, no telemetry posted. Write keys are public in
//! a browser anyway, so every known one gets its settings (an unknown one a 404).

use std::sync::Arc;

use axum::Json;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, header};
use serde_json::{Value, json};

use crate::config::public_url::PublicUrl;
use crate::error::ApiError;
use crate::state::AppState;

/// The settings of `write_key`'s source.
pub(crate) async fn settings(
    State(state): State<Arc<AppState>>,
    Path(write_key): Path<String>,
    headers: HeaderMap,
) -> Result<Json<Value>, ApiError> {
    let source = state
        .keys
        .get(&write_key)
        .ok_or_else(|| ApiError::NotFound("no source has this write key".into()))?;
    crate::cors::check_origin(state.policies.get(source), &headers)?;
    let public = match &state.public_url {
        Some(public) => public.clone(),
        // No public URL configured: the host this request reached, which is where the page
        // found the collector.
        None => {
            let host = headers
                .get(header::HOST)
                .and_then(|h| h.to_str().ok())
                .ok_or_else(|| ApiError::bad("no Host header, and no public URL configured"))?;
            PublicUrl {
                protocol: "http".into(),
                host: host.to_owned(),
            }
        }
    };
    Ok(Json(body(&write_key, &public)))
}

/// The settings document: the fields analytics.js reads, each as Segment's CDN sends it.
fn body(write_key: &str, public: &PublicUrl) -> Value {
    json!({
        "integrations": {
            "Segment.io": {
                "apiKey": write_key,
                "apiHost": format!("{}/v1", public.host),
                "protocol": public.protocol,
                "unbundledIntegrations": [],
                "addBundledMetadata": true,
                "maybeBundledConfigIds": {},
                "versionSettings": {"version": "4.4.7", "componentTypes": ["browser"]}
            }
        },
        "plan": {"track": {"__default": {"enabled": true, "integrations": {}}}},
        "edgeFunction": {},
        "analyticsNextEnabled": true,
        "middlewareSettings": {},
        "enabledMiddleware": {},
        // analytics.js posts its own telemetry to Segment at this rate: never.
        "metrics": {"sampleRate": 0},
        "legacyVideoPluginsEnabled": false,
        "remotePlugins": []
    })
}
