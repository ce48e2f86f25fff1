//! When to retry a batch, and how long to wait: plain data and pure functions, tested without a
//! network.
//!
//! The policy is the one Segment's current libraries use (analytics-java master,
//! analytics-node 3.1): retry network errors, timeouts, 408, 410, 429, 460 and every 5xx except
//! 501, 505 and 511; treat everything else as final. A `Retry-After` from the server is obeyed
//! (capped at [`MAX_RETRY_AFTER`]) and does not spend the retry budget, since the server asked
//! for exactly that wait. A server's wait shorter than our schedule's (a `Retry-After: 0`, a
//! date in the past) is not obeyed as is: that would be a tight loop for as long as the
//! server keeps answering so. [`RetryPolicy::retry_wait`], the one place both the client's
//! sender and the collector's delivery ask, raises it to the schedule's wait and at least the
//! base backoff, and counts it as a retry like any other, so repeated `Retry-After: 0`
//! answers are spaced like repeated failures without the header. Our own backoff is exponential with full jitter (AWS's "full jitter":
//! a uniform draw between zero and the exponential ceiling), which spreads a fleet of clients
//! that all failed at once.

use std::time::{Duration, SystemTime};

use crate::transport::{Response, TransportError};

/// The longest `Retry-After` obeyed; longer requests are shortened to this (Segment's cap).
pub const MAX_RETRY_AFTER: Duration = Duration::from_secs(300);

/// Default [`RetryPolicy::max_retries`]: a backstop only. With full jitter, ten retries (the
/// older libraries' count) can all draw short waits and give up on an outage of a few seconds
/// (the fault-injection suite caught exactly that), so the time window
/// ([`DEFAULT_MAX_RETRY_DURATION`]) and the memory budget are what bound a batch's retries, as
/// in Segment's current libraries. Full jitter makes the mean wait at the 60 s cap 30 s, so
/// 3,000 retries take about 25 hours against a server that fails fast: the 12-hour window
/// always ends first. (1,000, the earlier default, took about 8.3 hours.)
pub const DEFAULT_MAX_RETRIES: u32 = 3000;

/// Default [`RetryPolicy::backoff_base`]: long enough that a struggling server is not hammered,
/// short enough that a blip costs well under a second.
pub const DEFAULT_BACKOFF_BASE: Duration = Duration::from_millis(500);

/// Default [`RetryPolicy::backoff_cap`]: analytics-node's ceiling for one wait.
pub const DEFAULT_BACKOFF_CAP: Duration = Duration::from_secs(60);

/// Default [`RetryPolicy::max_retry_duration`]: Segment's own libraries stop after 12 hours of
/// trying one batch; so do we.
pub const DEFAULT_MAX_RETRY_DURATION: Duration = Duration::from_secs(12 * 60 * 60);

/// How a failed batch is retried.
///
/// Non-exhaustive so that a later field is not a breaking change: start from
/// [`RetryPolicy::default`] and set the fields you want.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct RetryPolicy {
    /// Retries after the first attempt, not counting waits the server asked for (unless
    /// shorter than the schedule's: [`RetryPolicy::retry_wait`]).
    pub max_retries: u32,
    /// Ceiling of the first backoff; it doubles with each retry.
    pub backoff_base: Duration,
    /// Largest single backoff.
    pub backoff_cap: Duration,
    /// Total time one batch may spend being retried before it is dropped (split parts of a
    /// refused batch share their batch's window). Waits the server asks for count too; set it
    /// to zero to turn retries off entirely.
    pub max_retry_duration: Duration,
    /// Draw each wait uniformly from zero to its ceiling (on by default; off makes the waits
    /// exactly the ceilings, which only tests want).
    pub jitter: bool,
}

impl Default for RetryPolicy {
    fn default() -> RetryPolicy {
        RetryPolicy {
            max_retries: DEFAULT_MAX_RETRIES,
            backoff_base: DEFAULT_BACKOFF_BASE,
            backoff_cap: DEFAULT_BACKOFF_CAP,
            max_retry_duration: DEFAULT_MAX_RETRY_DURATION,
            jitter: true,
        }
    }
}

impl RetryPolicy {
    /// The wait before retry number `retry` (1 for the first), given a uniform draw
    /// `unit` in `[0, 1)`.
    pub fn backoff(&self, retry: u32, unit: f64) -> Duration {
        let ceiling = self.ceiling(retry);
        if self.jitter {
            ceiling.mul_f64(unit.clamp(0.0, 1.0))
        } else {
            ceiling
        }
    }
}

/// The wait before the next attempt after a transient failure: [`RetryPolicy::retry_wait`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryWait {
    /// How long to wait.
    pub wait: Duration,
    /// True when the wait follows our own schedule: it spends one of
    /// [`RetryPolicy::max_retries`] and moves the schedule on. False when it is the server's
    /// own wait, at least as long as the schedule's, which the server chose.
    pub counts: bool,
}

impl RetryPolicy {
    /// The wait before the next attempt, after `retries` counted retries (see
    /// [`RetryWait::counts`]), when the server asked for `server` (its `Retry-After`, already
    /// capped) and `unit` is a uniform draw in `[0, 1)`.
    ///
    /// A server's wait at least the schedule's ceiling for this retry is obeyed as is and
    /// does not count. A shorter one is raised to the schedule's jittered wait, and to at
    /// least [`RetryPolicy::backoff_base`], and counts, so that a server answering
    /// `Retry-After: 0` again and again is not hammered.
    pub fn retry_wait(&self, retries: u32, server: Option<Duration>, unit: f64) -> RetryWait {
        let retry = retries.saturating_add(1);
        let scheduled = self.backoff(retry, unit);
        match server {
            Some(asked) if asked >= self.ceiling(retry) => RetryWait {
                wait: asked,
                counts: false,
            },
            Some(asked) => RetryWait {
                wait: asked.max(scheduled).max(self.backoff_base),
                counts: true,
            },
            None => RetryWait {
                wait: scheduled,
                counts: true,
            },
        }
    }

    /// The longest wait the schedule allows before retry number `retry` (1 for the first).
    fn ceiling(&self, retry: u32) -> Duration {
        let exponent = retry.saturating_sub(1).min(31);
        self.backoff_base
            .saturating_mul(1 << exponent)
            .min(self.backoff_cap)
    }
}

/// What to do after one attempt.
///
/// Non-exhaustive: later versions may tell more cases apart, so a match needs an arm for
/// the others (treating them as a retry is the safe choice).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Decision {
    /// The server accepted the batch.
    Delivered,
    /// A transient failure: try again, after `after` if the server said how long.
    Retry {
        /// The server's `Retry-After`, already capped at [`MAX_RETRY_AFTER`].
        after: Option<Duration>,
        /// What went wrong, for logs.
        reason: String,
    },
    /// The server refused the batch for good.
    Reject {
        /// The HTTP status.
        status: u16,
        /// The status and the start of the server's explanation.
        reason: String,
        /// The refusal may be caused by some of the messages only (400, 413): splitting the
        /// batch can isolate them.
        splittable: bool,
    },
}

/// Classifies one attempt's result. `now` is used to read a `Retry-After` given as a date.
pub fn decide(result: &Result<Response, TransportError>, now: SystemTime) -> Decision {
    let response = match result {
        Ok(response) => response,
        Err(error) => {
            return Decision::Retry {
                after: None,
                reason: error.to_string(),
            };
        }
    };
    let status = response.status;
    let reason = || {
        // A JSON answer's own explanation (`{"error": "unknown write key"}` from our collector,
        // `message` from others) reads better than the JSON around it.
        let explained = serde_json::from_str::<serde_json::Value>(&response.body)
            .ok()
            .and_then(|answer| {
                ["error", "message"]
                    .into_iter()
                    .find_map(|field| answer.get(field)?.as_str().map(str::to_owned))
            });
        let body: String = explained
            .as_deref()
            .unwrap_or(&response.body)
            .chars()
            .take(200)
            .collect();
        if body.trim().is_empty() {
            format!("HTTP {status}")
        } else {
            format!("HTTP {status}: {}", body.trim())
        }
    };
    match status {
        200..=299 => Decision::Delivered,
        408 | 410 | 429 | 460 => Decision::Retry {
            after: response
                .retry_after
                .as_deref()
                .and_then(|v| parse_retry_after(v, now)),
            reason: reason(),
        },
        501 | 505 | 511 => Decision::Reject {
            status,
            reason: reason(),
            splittable: false,
        },
        500..=599 => Decision::Retry {
            after: response
                .retry_after
                .as_deref()
                .and_then(|v| parse_retry_after(v, now)),
            reason: reason(),
        },
        400 | 413 => Decision::Reject {
            status,
            reason: reason(),
            splittable: true,
        },
        _ => Decision::Reject {
            status,
            reason: reason(),
            splittable: false,
        },
    }
}

/// Reads a `Retry-After` value: delay-seconds or an HTTP date, capped at [`MAX_RETRY_AFTER`].
/// A date in the past means "now"; anything unreadable is ignored (`None`).
pub fn parse_retry_after(value: &str, now: SystemTime) -> Option<Duration> {
    let value = value.trim();
    let wait = if let Ok(seconds) = value.parse::<u64>() {
        Duration::from_secs(seconds)
    } else {
        let at = httpdate::parse_http_date(value).ok()?;
        at.duration_since(now).unwrap_or(Duration::ZERO)
    };
    Some(wait.min(MAX_RETRY_AFTER))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::transport::TransportErrorKind;

    fn status(code: u16) -> Result<Response, TransportError> {
        Ok(Response::new(code, ""))
    }

    #[test]
    fn classifies_statuses_like_segment() {
        let now = SystemTime::now();
        for code in [200, 201, 204] {
            assert_eq!(decide(&status(code), now), Decision::Delivered);
        }
        for code in [408, 410, 429, 460, 500, 502, 503, 504, 599] {
            assert!(
                matches!(decide(&status(code), now), Decision::Retry { .. }),
                "{code}"
            );
        }
        for code in [400, 413] {
            assert!(matches!(
                decide(&status(code), now),
                Decision::Reject {
                    splittable: true,
                    ..
                }
            ));
        }
        for code in [301, 401, 403, 404, 422, 501, 505, 511] {
            assert!(
                matches!(
                    decide(&status(code), now),
                    Decision::Reject {
                        splittable: false,
                        ..
                    }
                ),
                "{code}"
            );
        }
        let refused = Err(TransportError::new(TransportErrorKind::Connect, "refused"));
        assert!(matches!(
            decide(&refused, now),
            Decision::Retry { after: None, .. }
        ));
    }

    #[test]
    fn reads_retry_after_as_seconds_or_date_and_caps_it() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000_000);
        assert_eq!(parse_retry_after("2", now), Some(Duration::from_secs(2)));
        assert_eq!(parse_retry_after(" 7 ", now), Some(Duration::from_secs(7)));
        assert_eq!(parse_retry_after("86400", now), Some(MAX_RETRY_AFTER));
        let later = httpdate::fmt_http_date(now + Duration::from_secs(30));
        assert_eq!(
            parse_retry_after(&later, now),
            Some(Duration::from_secs(30))
        );
        let earlier = httpdate::fmt_http_date(now - Duration::from_secs(30));
        assert_eq!(parse_retry_after(&earlier, now), Some(Duration::ZERO));
        assert_eq!(parse_retry_after("soon", now), None);
        let response = Ok(Response::new(429, "").with_retry_after("3"));
        assert!(matches!(
            decide(&response, now),
            Decision::Retry { after: Some(d), .. } if d == Duration::from_secs(3)
        ));
    }

    #[test]
    fn with_the_defaults_the_retry_window_ends_before_the_retry_count() {
        // Against a server that fails at once (connection refused), the waits alone are the
        // time spent; with every draw from a seeded generator, the default retries must
        // outlast the default window, or batches would be dropped before it ends.
        let policy = RetryPolicy::default();
        for seed in 0..50 {
            let mut rng = fastrand::Rng::with_seed(seed);
            let waited: Duration = (1..=policy.max_retries)
                .map(|retry| policy.backoff(retry, rng.f64()))
                .sum();
            assert!(
                waited > policy.max_retry_duration + Duration::from_secs(3600),
                "seed {seed}: {} retries wait {waited:?} in all",
                policy.max_retries
            );
        }
    }

    #[test]
    fn a_server_wait_shorter_than_the_schedule_is_raised_and_counts() {
        let policy = RetryPolicy {
            backoff_base: Duration::from_millis(100),
            backoff_cap: Duration::from_secs(1),
            jitter: true,
            ..RetryPolicy::default()
        };
        // Retry-After: 0, with a draw of zero: still the base backoff, and a retry spent.
        assert_eq!(
            policy.retry_wait(0, Some(Duration::ZERO), 0.0),
            RetryWait {
                wait: Duration::from_millis(100),
                counts: true
            }
        );
        // ... and later in the schedule, the schedule's draw when it is longer.
        assert_eq!(
            policy.retry_wait(3, Some(Duration::ZERO), 0.5),
            RetryWait {
                wait: Duration::from_millis(400),
                counts: true
            }
        );
        // A wait at least the schedule's ceiling is the server's: obeyed, not counted.
        assert_eq!(
            policy.retry_wait(0, Some(Duration::from_secs(2)), 0.5),
            RetryWait {
                wait: Duration::from_secs(2),
                counts: false
            }
        );
        // No wait asked: the jittered schedule, counted.
        assert_eq!(
            policy.retry_wait(1, None, 0.5),
            RetryWait {
                wait: Duration::from_millis(100),
                counts: true
            }
        );
    }

    #[test]
    fn backoff_doubles_up_to_the_cap_and_jitter_stays_below_the_ceiling() {
        let policy = RetryPolicy {
            backoff_base: Duration::from_millis(100),
            backoff_cap: Duration::from_secs(1),
            jitter: false,
            ..RetryPolicy::default()
        };
        let waits: Vec<u128> = (1..=6)
            .map(|n| policy.backoff(n, 0.5).as_millis())
            .collect();
        assert_eq!(waits, [100, 200, 400, 800, 1000, 1000]);
        let jittered = RetryPolicy {
            jitter: true,
            ..policy
        };
        assert_eq!(jittered.backoff(3, 0.0), Duration::ZERO);
        assert_eq!(jittered.backoff(3, 0.5), Duration::from_millis(200));
        assert!(jittered.backoff(40, 0.999) <= Duration::from_secs(1));
    }
}
