//! Readiness: whether the store can take writes, for `GET /readyz`.
//!
//! `/healthz` says the process answers (liveness: restart it if not); `/readyz` says it can
//! store what it is sent (readiness: a load balancer sends it traffic only then). An idle store
//! never fails a write, so readiness needs evidence of a write:
//!
//! ```text
//!  ingest commit ──record(outcome)──▶ last evidence (when, ok or why not)
//!  GET /readyz ──▶ evidence younger than READINESS_EVIDENCE_AGE? ── yes ──▶ answer by it
//!                                 └── no ──▶ Store::probe (one small durable write), recorded
//! ```
//!
//! So under traffic `/readyz` costs nothing and follows the real writes (a disk that fills is
//! noticed by the next commit); when idle, or once the load balancer has stopped sending
//! traffic, at most one probe write per [`READINESS_EVIDENCE_AGE`] decides, and so notices
//! when the store can write again.

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use crate::error::ApiError;
use crate::storage::{Store, StoreError};

/// How long the outcome of a write (a request's commit or a probe) answers `/readyz` before
/// a probe write is made: load balancers check every few seconds, so this makes at most one
/// small write per check when idle, and a store that can write again is back in rotation
/// within this long.
pub const READINESS_EVIDENCE_AGE: Duration = Duration::from_secs(5);

/// How long a probe write may take before the store counts as unable to write: a commit
/// normally takes milliseconds, and a load balancer's check times out after a few seconds.
pub const READINESS_PROBE_TIMEOUT: Duration = Duration::from_secs(2);

/// The outcome of the last write.
#[derive(Debug, Clone)]
struct Evidence {
    at: Instant,
    /// `None` when the write succeeded.
    error: Option<String>,
}

/// What `/readyz` knows about the store's writes.
#[derive(Debug, Default)]
pub(crate) struct Readiness {
    last: Mutex<Option<Evidence>>,
    /// A probe is in flight: others answer by the evidence there is instead of probing too.
    probing: AtomicBool,
}

impl Readiness {
    /// Records the outcome of a real write.
    pub(crate) fn record(&self, outcome: Result<(), &StoreError>) {
        let evidence = Evidence {
            at: Instant::now(),
            error: outcome.err().map(ToString::to_string),
        };
        *self.last.lock().unwrap_or_else(|e| e.into_inner()) = Some(evidence);
    }

    /// The last outcome, if there is one and it is younger than `age` (any age for `None`).
    fn evidence(&self, age: Option<Duration>) -> Option<Result<(), String>> {
        let last = self.last.lock().unwrap_or_else(|e| e.into_inner());
        let evidence = last.as_ref()?;
        if age.is_some_and(|age| evidence.at.elapsed() >= age) {
            return None;
        }
        Some(match &evidence.error {
            None => Ok(()),
            Some(error) => Err(error.clone()),
        })
    }

    /// Whether the store can write: by recent evidence, or else by a probe write.
    pub(crate) async fn check(&self, store: &dyn Store) -> Result<(), String> {
        if let Some(outcome) = self.evidence(Some(READINESS_EVIDENCE_AGE)) {
            return outcome;
        }
        let Some(_probing) = Probing::start(&self.probing) else {
            // Another check is probing: the last evidence, however old, is the best answer.
            return self
                .evidence(None)
                .unwrap_or_else(|| Err("the first probe write has not finished".into()));
        };
        let outcome = match tokio::time::timeout(READINESS_PROBE_TIMEOUT, store.probe()).await {
            Ok(outcome) => outcome,
            Err(_) => Err(StoreError::Unavailable {
                detail: format!("a probe write took over {READINESS_PROBE_TIMEOUT:?}"),
            }),
        };
        self.record(outcome.as_ref().map(|_| ()));
        outcome.map_err(|e| e.to_string())
    }
}

/// The right to probe, given back when dropped: also when the check is cancelled (its client
/// went away mid-probe), so that probing never stops for good.
struct Probing<'a>(&'a AtomicBool);

impl<'a> Probing<'a> {
    /// The right to probe, unless another check holds it.
    fn start(flag: &'a AtomicBool) -> Option<Probing<'a>> {
        (!flag.swap(true, Ordering::AcqRel)).then_some(Probing(flag))
    }
}

impl Drop for Probing<'_> {
    fn drop(&mut self) {
        self.0.store(false, Ordering::Release);
    }
}

/// `GET /readyz`: 200 while `store` can write, else 503 (what ingest would answer).
pub(crate) async fn readyz(
    readiness: &Readiness,
    store: &dyn Store,
) -> Result<&'static str, ApiError> {
    match readiness.check(store).await {
        Ok(()) => Ok("ready"),
        Err(error) => {
            tracing::warn!("not ready: {error}");
            Err(ApiError::Unavailable)
        }
    }
}
