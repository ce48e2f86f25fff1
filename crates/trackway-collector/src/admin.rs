//! The admin API: read what arrived. Every route needs `Authorization: Bearer <admin token>`.
//!
//! - `GET /api/events?limit=&type=&userId=&event=&q=&source=&status=&before=`:
//!   `{"events": [...], "next_before": seq}`, newest first. `q` is a user id or an event name
//!   (either matches); `status` is `rejected` or `stored`. Each event is the message as stored
//!   (with `receivedAt`, `originalTimestamp`, ...) plus a `_trackway` object: `seq`, `source`,
//!   `rejected` (the reason) for messages that failed validation, and `delivery` (per
//!   destination: delivered, pending, skipped or "dead letter: reason"). `next_before` is the
//!   `before=` of the next older page, null when there is none.
//! - `GET /api/delivery?seq=1,2,3`: `{"delivery": {"<seq>": {...}}}`, the events' delivery
//!   state now.
//! - `GET /api/stream`: the same objects as server-sent events, live, as they are stored.
//! - `GET /api/stats`: counts per source, type and status.
//! - `GET /api/traffic?since=&source=`: `{"bucket_ms": 60000, "since": ms, "now": ms,
//!   "buckets": [{"at": ms, "source", "type", "status": "stored"|"rejected", "count"}]}`,
//!   events stored per minute from `since` (ms since the epoch; default the last
//!   [`DEFAULT_TRAFFIC_SPAN`], at most [`TRAFFIC_RETENTION`] back), oldest first, of one
//!   source or all: the debugger's chart. Answered from the store's counts, never the events.
//! - `GET /api/destinations`: per destination, its cursor, lag, and delivered, skipped and
//!   dead-lettered counts.
//! - `GET /api/dead-letters?destination=&limit=`: open dead letters, with reason and event.
//! - `POST /api/replay?destination=&id=`: re-deliver open dead letters (all, one
//!   destination's, or one).
//!
//! In both, a destination that does not exist is a 404 naming those that do.

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::Json;
use axum::extract::{Query, Request, State};
use axum::http::header;
use axum::middleware::Next;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures_util::{Stream, StreamExt as _};
use serde::Deserialize;
use serde_json::{Map, Value, json};
use tokio_stream::wrappers::BroadcastStream;
use tokio_stream::wrappers::errors::BroadcastStreamRecvError;

use crate::delivery::{DeadLetterView, EventDelivery};
use crate::error::ApiError;
use crate::state::AppState;
use crate::storage::{self, StoredEvent, TRAFFIC_BUCKET_MS, TRAFFIC_RETENTION};

/// Default `limit` of `/api/events` and `/api/dead-letters`; the largest is
/// [`MAX_EVENTS_LIMIT`].
pub const DEFAULT_EVENTS_LIMIT: usize = 100;
/// Largest `limit` of `/api/events` (past it, a 400) and of `/api/dead-letters` (clamped to
/// it).
pub const MAX_EVENTS_LIMIT: usize = 10_000;
/// How far back `/api/traffic` looks without `since=`: the chart's hour.
pub(crate) const DEFAULT_TRAFFIC_SPAN: Duration = Duration::from_secs(60 * 60);
/// Interval of SSE keep-alive comments, which keep proxies from closing an idle stream.
const KEEP_ALIVE: Duration = Duration::from_secs(15);

/// Refuses requests without the admin token.
pub(crate) async fn require_token(
    State(state): State<Arc<AppState>>,
    request: Request,
    next: Next,
) -> Response {
    let presented = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(bearer_token);
    match presented {
        Some(token)
            if constant_time_eq::constant_time_eq(
                token.as_bytes(),
                state.admin_token.as_bytes(),
            ) =>
        {
            next.run(request).await
        }
        _ => ApiError::AdminUnauthorized.into_response(),
    }
}

/// The token of an `Authorization: Bearer <token>` value. The scheme is case-insensitive
/// (RFC 9110, section 11.1): `bearer` and `BEARER` are `Bearer`.
fn bearer_token(value: &str) -> Option<&str> {
    let (scheme, token) = value.trim().split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then_some(token.trim())
}

/// Query parameters of `/api/events`.
#[derive(Debug, Deserialize)]
pub(crate) struct EventsParams {
    limit: Option<usize>,
    #[serde(rename = "type")]
    kind: Option<String>,
    #[serde(rename = "userId")]
    user_id: Option<String>,
    event: Option<String>,
    before: Option<i64>,
    source: Option<String>,
    status: Option<String>,
    q: Option<String>,
}

/// Events read from the store per round when a filter the store cannot apply (`source=`,
/// `status=`) drops some: large enough that a common source fills a page in one round.
const SCAN_BATCH: usize = 1000;
/// Most events one `/api/events` request reads from the store for such a filter. Past it
/// the page is answered short, with `next_before` to go on from: a rare source is not worth
/// an unbounded read per request.
const MAX_SCAN: usize = 10_000;
/// Most `seq`s one `/api/delivery` request asks about: a page of the debugger is fewer.
const MAX_DELIVERY_SEQS: usize = 1000;

/// Which status `status=` keeps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum StatusFilter {
    Rejected,
    Stored,
}

pub(crate) async fn events(
    State(state): State<Arc<AppState>>,
    Query(params): Query<EventsParams>,
) -> Result<Json<Value>, ApiError> {
    let limit = params.limit.unwrap_or(DEFAULT_EVENTS_LIMIT);
    if limit == 0 || limit > MAX_EVENTS_LIMIT {
        return Err(ApiError::bad(format!(
            "limit must be between 1 and {MAX_EVENTS_LIMIT}"
        )));
    }
    let status = match params.status.as_deref() {
        None | Some("") => None,
        Some("rejected") => Some(StatusFilter::Rejected),
        Some("stored") => Some(StatusFilter::Stored),
        Some(other) => {
            return Err(ApiError::bad(format!(
                "status must be rejected or stored, not {other:?}"
            )));
        }
    };
    let source = params.source.filter(|s| !s.is_empty());
    let keep = |event: &StoredEvent| {
        source.as_deref().is_none_or(|s| *event.source == *s)
            && match status {
                None => true,
                Some(StatusFilter::Rejected) => event.rejected.is_some(),
                Some(StatusFilter::Stored) => event.rejected.is_none(),
            }
    };
    let post_filtered = source.is_some() || status.is_some();
    // `q` is a user id or an event name: the store matches each exactly, so it is asked
    // both ways and the answers merged.
    let base = storage::Query {
        limit,
        kind: params.kind.filter(|k| !k.is_empty()),
        user_id: params.user_id,
        label: params.event,
        before: None,
    };
    let shapes = match params.q.filter(|q| !q.trim().is_empty()) {
        Some(q) => vec![
            storage::Query {
                user_id: Some(q.trim().to_owned()),
                ..base.clone()
            },
            storage::Query {
                label: Some(q.trim().to_owned()),
                ..base
            },
        ],
        None => vec![base],
    };

    let mut found = Vec::new();
    let mut before = params.before;
    let mut scanned = 0;
    let mut exhausted = false;
    while found.len() < limit && scanned < MAX_SCAN {
        let batch = if post_filtered {
            limit.max(SCAN_BATCH)
        } else {
            limit - found.len()
        };
        let page = read_page(&state, &shapes, before, batch).await?;
        let read = page.len();
        let mut examined = 0;
        for event in page {
            examined += 1;
            before = Some(event.seq);
            scanned += 1;
            if keep(&event) {
                found.push(event);
                if found.len() == limit {
                    break;
                }
            }
        }
        if read < batch {
            // The store has nothing older: done, unless a full page stopped short of it.
            exhausted = examined == read;
            break;
        }
    }
    let next_before = if exhausted { None } else { before };

    let delivery = if state.delivery.is_empty() {
        Default::default()
    } else {
        state.delivery.delivery_states(&found).await?
    };
    let events: Vec<Value> = found
        .iter()
        .map(|event| with_delivery(event, &delivery))
        .collect();
    Ok(Json(
        json!({ "events": events, "next_before": next_before }),
    ))
}

/// The newest `limit` events older than `before` matching any of `shapes`, newest first.
async fn read_page(
    state: &AppState,
    shapes: &[storage::Query],
    before: Option<i64>,
    limit: usize,
) -> Result<Vec<StoredEvent>, ApiError> {
    let mut all = Vec::new();
    for shape in shapes {
        let query = storage::Query {
            limit,
            before,
            ..shape.clone()
        };
        all.extend(state.store.query(query).await?);
    }
    all.sort_by_key(|e| std::cmp::Reverse(e.seq));
    all.dedup_by_key(|e| e.seq);
    all.truncate(limit);
    Ok(all)
}

/// An event as the admin API shows it, with its delivery state when it has one.
fn with_delivery(event: &StoredEvent, delivery: &DeliveryStates) -> Value {
    let mut shown = presentable(event);
    if let Some(states) = delivery.get(&event.seq).filter(|s| !s.is_empty()) {
        shown["_trackway"]["delivery"] = Value::Object(delivery_json(states));
    }
    shown
}

/// Each event's state per destination, as [`DeliveryEngine::delivery_states`] reports it.
///
/// [`DeliveryEngine::delivery_states`]: crate::delivery::DeliveryEngine::delivery_states
type DeliveryStates = HashMap<i64, Vec<(String, EventDelivery)>>;

/// One event's states, by destination name: `"pending"`, `"skipped"`, `"delivered"` or
/// `"dead letter: <reason>"`, as the debugger shows them.
fn delivery_json(states: &[(String, EventDelivery)]) -> Map<String, Value> {
    states
        .iter()
        .map(|(destination, state)| {
            let text = match state {
                EventDelivery::Pending => "pending".to_owned(),
                EventDelivery::Skipped => "skipped".to_owned(),
                EventDelivery::Delivered => "delivered".to_owned(),
                EventDelivery::DeadLetter(reason) => format!("dead letter: {reason}"),
            };
            (destination.clone(), Value::String(text))
        })
        .collect()
}

/// A dead letter as `/api/dead-letters` lists it: the letter's fields, the destination's
/// configured name, and the event as the admin API shows events (`null` once pruned).
fn dead_letter_json(view: &DeadLetterView) -> Value {
    let mut out = serde_json::to_value(&view.letter).unwrap_or_default();
    out["destination"] = json!(view.destination);
    out["event"] = view.event.as_ref().map_or(Value::Null, presentable);
    out
}

/// Query parameters of `/api/delivery`.
#[derive(Debug, Deserialize)]
pub(crate) struct DeliveryParams {
    /// Comma-separated `seq`s.
    seq: String,
}

/// The delivery state of the events named, keyed by `seq`: how the debugger updates rows
/// that arrived live (as pending) without reloading its page of events.
pub(crate) async fn delivery(
    State(state): State<Arc<AppState>>,
    Query(params): Query<DeliveryParams>,
) -> Result<Json<Value>, ApiError> {
    let seqs = params
        .seq
        .split(',')
        .filter(|s| !s.is_empty())
        .map(|s| s.trim().parse::<i64>())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|_| ApiError::bad("seq must be a comma-separated list of numbers"))?;
    if seqs.len() > MAX_DELIVERY_SEQS {
        return Err(ApiError::bad(format!(
            "at most {MAX_DELIVERY_SEQS} seqs at once"
        )));
    }
    let events = state.store.get(seqs).await?;
    let states = state.delivery.delivery_states(&events).await?;
    let keyed: Map<String, Value> = states
        .into_iter()
        .map(|(seq, states)| (seq.to_string(), Value::Object(delivery_json(&states))))
        .collect();
    Ok(Json(json!({ "delivery": keyed })))
}

/// A stored event as the admin API shows it.
fn presentable(event: &StoredEvent) -> Value {
    let mut message = match serde_json::from_str::<Value>(&event.body) {
        Ok(Value::Object(map)) => map,
        _ => Map::new(),
    };
    let mut meta = json!({"seq": event.seq, "source": &*event.source});
    if let Some(reason) = &event.rejected {
        meta["rejected"] = json!(reason);
    }
    message.insert("_trackway".into(), meta);
    Value::Object(message)
}

pub(crate) async fn stats(State(state): State<Arc<AppState>>) -> Result<Json<Value>, ApiError> {
    let counts = state.store.counts().await?;
    let total: u64 = counts.iter().map(|c| c.count).sum();
    Ok(Json(json!({"total": total, "counts": counts})))
}

/// Query parameters of `/api/traffic`.
#[derive(Debug, Deserialize)]
pub(crate) struct TrafficParams {
    since: Option<i64>,
    source: Option<String>,
}

pub(crate) async fn traffic(
    State(state): State<Arc<AppState>>,
    Query(params): Query<TrafficParams>,
) -> Result<Json<Value>, ApiError> {
    let now = storage::now_ms();
    // Older minutes are pruned: asking for them is not an error, the answer starts where
    // the counts do.
    let oldest = now - TRAFFIC_RETENTION.as_millis() as i64;
    let since = params
        .since
        .unwrap_or(now - DEFAULT_TRAFFIC_SPAN.as_millis() as i64)
        .max(oldest);
    let source = params.source.as_deref().filter(|s| !s.is_empty());
    let rows = state
        .store
        .traffic(storage::traffic_minute(since), source)
        .await?;
    let buckets: Vec<Value> = rows
        .into_iter()
        .map(|row| {
            json!({
                "at": row.minute * TRAFFIC_BUCKET_MS,
                "source": row.source,
                "type": row.kind,
                "status": if row.rejected { "rejected" } else { "stored" },
                "count": row.count,
            })
        })
        .collect();
    Ok(Json(json!({
        "bucket_ms": TRAFFIC_BUCKET_MS,
        "since": storage::traffic_minute(since) * TRAFFIC_BUCKET_MS,
        "now": now,
        "buckets": buckets,
    })))
}

pub(crate) async fn stream(
    State(state): State<Arc<AppState>>,
) -> Sse<impl Stream<Item = Result<Event, Infallible>>> {
    let mut shutdown = state.shutdown.clone();
    let events = BroadcastStream::new(state.store.subscribe())
        .map(|item| {
            Ok(match item {
                Ok(event) => Event::default()
                    .event("event")
                    .data(presentable(&event).to_string()),
                Err(BroadcastStreamRecvError::Lagged(missed)) => Event::default()
                    .event("lagged")
                    .data(json!({"missed": missed}).to_string()),
            })
        })
        // End the stream when the server shuts down, so graceful shutdown is not held open.
        .take_until(Box::pin(async move {
            let _ = shutdown.wait_for(|stopping| *stopping).await;
        }));
    Sse::new(events).keep_alive(KeepAlive::new().interval(KEEP_ALIVE))
}

pub(crate) async fn destinations(
    State(state): State<Arc<AppState>>,
) -> Result<Json<Value>, ApiError> {
    let status = state.delivery.status().await?;
    Ok(Json(json!({ "destinations": status })))
}

/// Query parameters of `/api/dead-letters` and `/api/replay`.
#[derive(Debug, Deserialize)]
pub(crate) struct DeadLetterParams {
    destination: Option<String>,
    id: Option<i64>,
    limit: Option<usize>,
}

pub(crate) async fn dead_letters(
    State(state): State<Arc<AppState>>,
    Query(params): Query<DeadLetterParams>,
) -> Result<Json<Value>, ApiError> {
    let limit = params
        .limit
        .unwrap_or(DEFAULT_EVENTS_LIMIT)
        .clamp(1, MAX_EVENTS_LIMIT);
    let letters = state
        .delivery
        .dead_letters(params.destination.as_deref(), limit)
        .await
        .map_err(ApiError::from)?;
    let letters: Vec<Value> = letters.iter().map(dead_letter_json).collect();
    Ok(Json(json!({ "dead_letters": letters })))
}

pub(crate) async fn replay(
    State(state): State<Arc<AppState>>,
    Query(params): Query<DeadLetterParams>,
) -> Result<Json<Value>, ApiError> {
    let report = state
        .delivery
        .replay(params.destination.as_deref(), params.id)
        .await
        .map_err(ApiError::from)?;
    Ok(Json(json!(report)))
}
