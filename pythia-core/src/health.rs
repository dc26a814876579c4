//! Health: whether a worker is live (making progress) and ready (connected and
//! assigned), as served on `/health/live` and `/health/ready`.
//!
//! - **Live** fails when a partition has lag while its committed offset has not
//!   moved for `health.stall_timeout`: a hung handler or a dead lane. An idle
//!   worker (no lag) stays live however long nothing happens.
//! - **Ready** fails until the run has joined its group (its first assignment,
//!   which may be empty) and the broker has answered, during a broker outage,
//!   and once the run drains or stops. An instance with no partitions is ready
//!   and says so: with more instances than partitions the extras stand by, and
//!   a rollout or a disruption budget must not wait on them.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::Deserialize;
use tokio::sync::watch;

use crate::error::ConfigError;
use crate::metrics::PartitionLag;
use crate::status::{Phase, Status};

/// Settings under `[health]`.
///
/// ```toml
/// [health]
/// stall_timeout = "5m"   # live fails when lag > 0 and the commit has not moved this long
/// ```
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
#[non_exhaustive]
pub struct HealthConfig {
    /// How long a partition may have lag without its committed offset moving
    /// before the worker counts as stuck. Keep it above the slowest legitimate
    /// handler time plus the commit interval.
    #[serde(with = "humantime_serde")]
    pub stall_timeout: Duration,
}

impl Default for HealthConfig {
    fn default() -> Self {
        Self {
            stall_timeout: Duration::from_secs(300),
        }
    }
}

impl HealthConfig {
    /// Checks the section; the error names the key.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.stall_timeout.is_zero() {
            return Err(ConfigError::invalid(
                "health.stall_timeout",
                "must be longer than zero, e.g. \"5m\"",
            ));
        }
        Ok(())
    }
}

/// The health of one worker instance, shared by whoever observes it and the
/// endpoint that serves it. Clones share the state.
///
/// ```
/// use pythia_core::connector::Health;
/// let health = Health::new();
/// assert!(health.live().is_ok());
/// assert!(health.ready().is_err()); // no assignment, no broker answer yet
/// ```
#[derive(Clone, Debug, Default)]
pub struct Health {
    inner: Arc<Mutex<State>>,
}

#[derive(Debug, Default)]
struct State {
    status: Option<watch::Receiver<Status>>,
    /// The last broker check: `None` before the first one.
    broker: Option<Result<(), String>>,
    stalled: Vec<String>,
}

impl Health {
    /// Health with nothing known yet: live, not ready.
    pub fn new() -> Self {
        Self::default()
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Follows a run's status for readiness (see [`Runtime::status`](crate::connector::Runtime::status)).
    pub fn watch(&self, status: watch::Receiver<Status>) {
        self.state().status = Some(status);
    }

    /// Records the result of the latest broker round trip.
    pub fn set_broker(&self, result: Result<(), String>) {
        self.state().broker = Some(result);
    }

    /// Records the partitions found stuck (empty: none).
    pub fn set_stalled(&self, stalled: Vec<String>) {
        self.state().stalled = stalled;
    }

    /// `Ok` while no partition is stuck; otherwise why not.
    pub fn live(&self) -> Result<(), String> {
        let state = self.state();
        if state.stalled.is_empty() {
            Ok(())
        } else {
            Err(format!("stalled: {}", state.stalled.join("; ")))
        }
    }

    /// `Ok` with a one-line summary when the run has joined its group and is
    /// running, and the broker answers; otherwise why not. A member with no
    /// partitions is ready: it is in the group and takes partitions over when
    /// another member leaves.
    pub fn ready(&self) -> Result<String, String> {
        let state = self.state();
        let assigned = match state.status.as_ref().map(|s| {
            let status = s.borrow();
            (status.phase, status.assigned.len())
        }) {
            Some((Phase::Running, assigned)) => assigned,
            Some((Phase::Starting, _)) | None => {
                return Err("waiting to join the consumer group".into());
            }
            Some((Phase::Draining, _)) => return Err("shutting down".into()),
            Some(_) => return Err("stopped".into()),
        };
        match &state.broker {
            Some(Ok(())) if assigned == 0 => Ok(
                "ok: in the group with no partitions assigned (more instances than partitions); standing by"
                    .into(),
            ),
            Some(Ok(())) => Ok(format!("ok: {assigned} partitions assigned")),
            Some(Err(error)) => Err(format!("broker unreachable: {error}")),
            None => Err("waiting for the first broker answer".into()),
        }
    }
}

/// Finds partitions whose lag is above zero while their committed offset has
/// not moved for the stall timeout.
///
/// ```
/// use std::time::{Duration, Instant};
/// use pythia_core::connector::StallDetector;
/// use pythia_core::metrics::PartitionLag;
///
/// let mut detector = StallDetector::new(Duration::from_secs(60));
/// let start = Instant::now();
/// let stuck = [PartitionLag::new("orders", 0, 0, 10, Some(3))];
/// assert!(detector.observe(&stuck, start).is_empty());
/// assert_eq!(detector.observe(&stuck, start + Duration::from_secs(61)).len(), 1);
/// ```
#[derive(Debug)]
pub struct StallDetector {
    timeout: Duration,
    /// Per partition: the committed offset last seen and since when it has
    /// not moved while there was lag.
    seen: HashMap<(String, i32), (Option<i64>, Instant)>,
}

impl StallDetector {
    /// A detector with this stall timeout.
    pub fn new(timeout: Duration) -> Self {
        Self {
            timeout,
            seen: HashMap::new(),
        }
    }

    /// Takes the latest lag of every watched partition (others are forgotten)
    /// and returns a description of each stuck one.
    pub fn observe(&mut self, partitions: &[PartitionLag], now: Instant) -> Vec<String> {
        let mut stalled = Vec::new();
        let mut seen = HashMap::with_capacity(partitions.len());
        for p in partitions {
            let key = (p.topic.clone(), p.partition);
            let since = match self.seen.get(&key) {
                Some(&(committed, since)) if p.lag > 0 && committed == p.committed => since,
                _ => now,
            };
            let still = now.saturating_duration_since(since);
            if p.lag > 0 && still >= self.timeout {
                stalled.push(format!(
                    "{}/{} has lag {} and its committed offset {} has not moved for {}s",
                    p.topic,
                    p.partition,
                    p.lag,
                    p.committed.map_or("(none)".to_owned(), |c| c.to_string()),
                    still.as_secs()
                ));
            }
            seen.insert(key, (p.committed, since));
        }
        self.seen = seen;
        stalled
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::PartitionId;

    fn at(secs: u64, start: Instant) -> Instant {
        start + Duration::from_secs(secs)
    }

    #[test]
    fn progress_or_no_lag_keeps_a_partition_live() {
        let start = Instant::now();
        let mut d = StallDetector::new(Duration::from_secs(10));
        let idle = [PartitionLag::new("t", 0, 0, 5, Some(5))];
        for s in [0, 20, 40] {
            assert!(d.observe(&idle, at(s, start)).is_empty(), "idle is live");
        }
        for (s, committed) in [(50, 6), (58, 7), (66, 8), (74, 9)] {
            let moving = [PartitionLag::new("t", 0, 0, 20, Some(committed))];
            assert!(
                d.observe(&moving, at(s, start)).is_empty(),
                "moving is live"
            );
        }
        let stuck = [PartitionLag::new("t", 0, 0, 20, Some(9))];
        assert!(d.observe(&stuck, at(80, start)).is_empty());
        let found = d.observe(&stuck, at(84, start));
        assert_eq!(found.len(), 1, "{found:?}");
        assert!(found[0].contains("t/0"), "{found:?}");
    }

    #[test]
    fn a_partition_stuck_before_its_first_commit_is_found() {
        let start = Instant::now();
        let mut d = StallDetector::new(Duration::from_secs(5));
        let stuck = [PartitionLag::new("t", 1, 0, 3, None)];
        assert!(d.observe(&stuck, start).is_empty());
        assert_eq!(d.observe(&stuck, at(5, start)).len(), 1);
        // Revoked: forgotten.
        assert!(d.observe(&[], at(6, start)).is_empty());
    }

    #[test]
    fn readiness_follows_the_phase_and_the_broker() {
        let health = Health::new();
        let status = watch::Sender::new(Status::default());
        health.watch(status.subscribe());
        health.set_broker(Ok(()));
        assert!(health.ready().unwrap_err().contains("join"));
        status.send_modify(|s| s.phase = Phase::Running);
        let standing_by = health.ready().unwrap();
        assert!(standing_by.contains("no partitions"), "{standing_by}");
        status
            .send_modify(|s| s.assigned = vec![PartitionId::new("t", 0), PartitionId::new("t", 1)]);
        assert_eq!(health.ready().unwrap(), "ok: 2 partitions assigned");
        health.set_broker(Err("all brokers down".into()));
        assert!(health.ready().unwrap_err().contains("all brokers down"));
        health.set_broker(Ok(()));
        status.send_modify(|s| s.phase = Phase::Draining);
        assert!(health.ready().is_err());
    }
}
