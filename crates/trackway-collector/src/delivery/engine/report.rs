//! What the admin API shows of delivery: each destination's progress and lag, its open dead
//! letters with their events, and the state of each event of a page. Data only: `admin`
//! renders it.

use std::collections::HashMap;

use serde::Serialize;

use super::{DeadLetterError, DeliveryEngine, REPLAY_LIMIT};
use crate::delivery::route::{enabled, integrations};
use crate::delivery::state::{DeadLetter, Progress};
use crate::storage::{StoreError, StoredEvent};

/// A destination's state, for the admin API.
#[derive(Debug, Clone, Serialize)]
pub struct DestinationStatus {
    /// Its name.
    pub name: String,
    /// Its source.
    pub source: String,
    /// Its kind.
    pub kind: &'static str,
    /// Events stored for its source and not yet done.
    pub lag: u64,
    /// Progress counters.
    #[serde(flatten)]
    pub progress: Progress,
    /// Dead letters not yet replayed.
    pub open_dead_letters: usize,
}

/// An open dead letter, with the destination's name as configured and its event while the
/// store still has it.
#[derive(Debug, Clone)]
pub struct DeadLetterView {
    /// The dead letter; its `destination` is the bookkeeping key (`source/destination`).
    pub letter: DeadLetter,
    /// The destination's configured name.
    pub destination: String,
    /// The event, unless retention has deleted it.
    pub event: Option<StoredEvent>,
}

/// Where one event stands with one destination.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EventDelivery {
    /// The destination's cursor has not reached it.
    Pending,
    /// Its `integrations` exclude the destination.
    Skipped,
    /// Delivered.
    Delivered,
    /// Refused for good or out of retries, with the reason; replayable.
    DeadLetter(String),
}

impl DeliveryEngine {
    /// Every destination's progress and lag.
    pub async fn status(&self) -> Result<Vec<DestinationStatus>, StoreError> {
        let mut all = Vec::with_capacity(self.lanes.len());
        for lane in self.lanes.iter() {
            let progress = self.state.progress(&lane.name_key(), 0).await?;
            let lag = self.store.lag(&lane.source, progress.cursor).await?;
            let open = self
                .state
                .dead_letters(Some(lane.name_key()), None, REPLAY_LIMIT)
                .await?
                .len();
            all.push(DestinationStatus {
                name: lane.name.clone(),
                source: lane.source.clone(),
                kind: lane.kind,
                lag,
                progress,
                open_dead_letters: open,
            });
        }
        Ok(all)
    }

    /// Open dead letters with their events, optionally of one destination. A destination
    /// name no destination has is an error (naming the ones there are), not an empty list.
    pub async fn dead_letters(
        &self,
        destination: Option<&str>,
        limit: usize,
    ) -> Result<Vec<DeadLetterView>, DeadLetterError> {
        self.known_destination(destination)?;
        let key = destination
            .and_then(|name| self.lane_named(name))
            .map(|l| l.name_key());
        let letters = self.state.dead_letters(key, None, limit).await?;
        let events = self
            .store
            .get(letters.iter().map(|d| d.seq).collect())
            .await?;
        Ok(letters
            .into_iter()
            .map(|letter| DeadLetterView {
                event: events.iter().find(|e| e.seq == letter.seq).cloned(),
                destination: self.display_name(&letter.destination),
                letter,
            })
            .collect())
    }

    /// The delivery state of a page of events, keyed by `seq`: per destination of each
    /// event's source (in the order they are configured), its name and where the event
    /// stands. Rejected events have none.
    ///
    /// Two bookkeeping reads per destination whatever the page's size (its cursor, and its
    /// open dead letters), not one per event and destination: a page of the debugger shows
    /// hundreds of events. Only when a destination has more than `REPLAY_LIMIT` open dead
    /// letters are its events past the last one listed asked about one by one.
    pub async fn delivery_states(
        &self,
        events: &[StoredEvent],
    ) -> Result<HashMap<i64, Vec<(String, EventDelivery)>>, StoreError> {
        let mut states: HashMap<i64, Vec<(String, EventDelivery)>> = HashMap::new();
        for lane in self.lanes.iter() {
            let mine: Vec<&StoredEvent> = events
                .iter()
                .filter(|e| e.rejected.is_none() && *e.source == *lane.source)
                .collect();
            if mine.is_empty() {
                continue;
            }
            let key = lane.name_key();
            let progress = self.state.progress(&key, 0).await?;
            let letters = self
                .state
                .dead_letters(Some(key.clone()), None, REPLAY_LIMIT)
                .await?;
            // Listed oldest first: when the list is cut short, the events after its last
            // one may have letters it does not show.
            let listed_up_to = if letters.len() < REPLAY_LIMIT {
                i64::MAX
            } else {
                letters.iter().map(|d| d.seq).max().unwrap_or(i64::MIN)
            };
            let reasons: HashMap<i64, &str> =
                letters.iter().map(|d| (d.seq, d.reason.as_str())).collect();
            for event in mine {
                let state = if event.seq > progress.cursor {
                    EventDelivery::Pending
                } else if !enabled(integrations(event).as_ref(), &lane.name) {
                    EventDelivery::Skipped
                } else if let Some(reason) = reasons.get(&event.seq) {
                    EventDelivery::DeadLetter((*reason).to_owned())
                } else if event.seq > listed_up_to
                    && let Some(reason) = self.state.dead_reason(&key, event.seq).await?
                {
                    EventDelivery::DeadLetter(reason)
                } else {
                    EventDelivery::Delivered
                };
                states
                    .entry(event.seq)
                    .or_default()
                    .push((lane.name.clone(), state));
            }
        }
        Ok(states)
    }
}
