//! Replay: open dead letters sent again, one attempt each.

use serde::{Deserialize, Serialize};

use super::{DeliveryEngine, REPLAY_LIMIT};
use crate::delivery::Attempt;
use crate::delivery::state::DeadLetter;
use crate::storage::StoreError;

/// What a replay did.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct ReplayReport {
    /// Delivered now.
    pub replayed: u64,
    /// Failed again (their reason is updated).
    pub failed: u64,
    /// Their event is gone from the store (pruned).
    pub missing: u64,
}

/// Why dead letters were not listed or replayed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DeadLetterError {
    /// No destination has that name: nothing was listed or replayed. `known` lists the names
    /// there are.
    #[error("{}", unknown_destination(name, known))]
    UnknownDestination {
        /// The name asked for.
        name: String,
        /// The configured destinations' names.
        known: Vec<String>,
    },
    /// The store or the bookkeeping failed; what was replayed before stays replayed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

fn unknown_destination(name: &str, known: &[String]) -> String {
    if known.is_empty() {
        format!("no destination named {name:?}: no destination is configured")
    } else {
        format!(
            "no destination named {name:?}; the destinations are: {}",
            known.join(", ")
        )
    }
}

impl DeliveryEngine {
    /// `Ok` for no name or the name of a configured destination; otherwise the error that
    /// lists the names there are.
    pub(super) fn known_destination(&self, name: Option<&str>) -> Result<(), DeadLetterError> {
        let Some(name) = name else { return Ok(()) };
        if self.lane_named(name).is_some() {
            return Ok(());
        }
        let mut known: Vec<String> = self.lanes.iter().map(|l| l.name.clone()).collect();
        known.sort();
        known.dedup();
        Err(DeadLetterError::UnknownDestination {
            name: name.to_owned(),
            known,
        })
    }

    /// Re-delivers open dead letters (of one destination, or one by id), one attempt each.
    /// A destination name no destination has is an error, not an empty report.
    pub async fn replay(
        &self,
        destination: Option<&str>,
        id: Option<i64>,
    ) -> Result<ReplayReport, DeadLetterError> {
        self.known_destination(destination)?;
        let mut report = ReplayReport::default();
        for lane in self.lanes.iter() {
            if destination.is_some_and(|name| name != lane.name && name != lane.name_key()) {
                continue;
            }
            let letters: Vec<DeadLetter> = self
                .state
                .dead_letters(Some(lane.name_key()), id, REPLAY_LIMIT)
                .await?;
            for letter in letters {
                let Some(event) = self.store.get(vec![letter.seq]).await?.pop() else {
                    report.missing += 1;
                    continue;
                };
                match lane.destination.deliver(std::slice::from_ref(&event)).await {
                    Attempt::Delivered => {
                        self.state.replayed(letter.id, None).await?;
                        report.replayed += 1;
                    }
                    Attempt::Reject { reason } | Attempt::Retry { reason, .. } => {
                        self.state.replayed(letter.id, Some(reason)).await?;
                        report.failed += 1;
                    }
                }
            }
        }
        Ok(report)
    }
}
