//! Retention: events older than the configured age are deleted once every destination of
//! their source is past them, and no open dead letter needs them for a replay.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::sync::watch;

use super::{DeliveryEngine, sleep_or_stop};

impl DeliveryEngine {
    /// Deletes events past `retention` once every destination of their source is done.
    pub(super) async fn prune_loop(
        &self,
        retention: Duration,
        interval: Duration,
        mut shutdown: watch::Receiver<bool>,
    ) {
        loop {
            if sleep_or_stop(interval, &mut shutdown).await {
                return;
            }
            let cutoff = SystemTime::now()
                .checked_sub(retention)
                .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
                .map_or(0, |d| d.as_millis() as i64);
            for source in self.sources.iter() {
                let mut up_to = i64::MAX;
                for lane in self.lanes.iter().filter(|l| l.source == *source) {
                    match self.state.progress(&lane.name_key(), 0).await {
                        Ok(progress) => up_to = up_to.min(progress.cursor),
                        Err(_) => up_to = i64::MIN,
                    }
                    // An open dead letter's event stays, so that it can be replayed.
                    match self.state.oldest_open_dead_letter(&lane.name_key()).await {
                        Ok(Some(seq)) => up_to = up_to.min(seq - 1),
                        Ok(None) => {}
                        Err(_) => up_to = i64::MIN,
                    }
                }
                match self.store.prune(source, cutoff, up_to).await {
                    Ok(0) => {}
                    Ok(n) => {
                        tracing::info!(source, pruned = n, "retention: pruned delivered events")
                    }
                    Err(e) => tracing::warn!(source, "retention: prune failed: {e}"),
                }
            }
        }
    }
}
