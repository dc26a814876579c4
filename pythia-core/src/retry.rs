//! Retrying failed messages: how many attempts, and how long to wait between them.

use std::hash::{BuildHasher, Hasher};
use std::time::Duration;

use serde::Deserialize;

use crate::error::ConfigError;

/// Retries of a message whose `process` failed with a transient error, under
/// `[worker.retry]`.
///
/// The wait before attempt `n + 1` is `initial_backoff · multiplier^(n-1)`,
/// capped at `max_backoff`, with up to `jitter` of it taken off at random so
/// that instances failing together do not retry together. While a message
/// waits, only its partition waits; the others keep flowing.
///
/// ```toml
/// [worker.retry]
/// max_attempts = 3          # attempts in all, the first included; 1 = no retry
/// initial_backoff = "100ms"
/// max_backoff = "10s"
/// multiplier = 2.0
/// jitter = 0.2              # 0 = none, 1 = anywhere between 0 and the full wait
/// ```
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
#[non_exhaustive]
pub struct RetryConfig {
    /// Attempts in all, the first included.
    pub max_attempts: u32,
    /// The wait before the second attempt.
    #[serde(with = "humantime_serde")]
    pub initial_backoff: Duration,
    /// The longest wait.
    #[serde(with = "humantime_serde")]
    pub max_backoff: Duration,
    /// How much each wait grows.
    pub multiplier: f64,
    /// The fraction of each wait that may be taken off at random.
    pub jitter: f64,
}

impl Default for RetryConfig {
    fn default() -> Self {
        Self {
            max_attempts: 3,
            initial_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(10),
            multiplier: 2.0,
            jitter: 0.2,
        }
    }
}

impl RetryConfig {
    /// Checks ranges; each error names the key.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.max_attempts == 0 {
            return Err(ConfigError::invalid(
                "worker.retry.max_attempts",
                "must be at least 1 (1 means no retries)",
            ));
        }
        if !(self.multiplier >= 1.0 && self.multiplier.is_finite()) {
            return Err(ConfigError::invalid(
                "worker.retry.multiplier",
                "must be a number of at least 1.0, e.g. 2.0",
            ));
        }
        if !(0.0..=1.0).contains(&self.jitter) {
            return Err(ConfigError::invalid(
                "worker.retry.jitter",
                "must be between 0.0 and 1.0, e.g. 0.2",
            ));
        }
        if self.max_backoff < self.initial_backoff {
            return Err(ConfigError::invalid(
                "worker.retry.max_backoff",
                format!(
                    "must be at least worker.retry.initial_backoff ({:?})",
                    self.initial_backoff
                ),
            ));
        }
        Ok(())
    }

    /// The wait after failed attempt `attempt` (1-based), before jitter.
    ///
    /// ```
    /// use std::time::Duration;
    /// let retry = pythia_core::RetryConfig::default(); // 100 ms, ×2, at most 10 s
    /// assert_eq!(retry.backoff(1), Duration::from_millis(100));
    /// assert_eq!(retry.backoff(3), Duration::from_millis(400));
    /// assert_eq!(retry.backoff(30), Duration::from_secs(10));
    /// ```
    pub fn backoff(&self, attempt: u32) -> Duration {
        let exponent = attempt.saturating_sub(1).min(64) as i32;
        let wait = self.initial_backoff.as_secs_f64() * self.multiplier.powi(exponent);
        Duration::from_secs_f64(wait.min(self.max_backoff.as_secs_f64()))
    }

    /// The wait after failed attempt `attempt`, with jitter.
    pub fn jittered_backoff(&self, attempt: u32) -> Duration {
        self.backoff_with_jitter(attempt, random_unit())
    }

    /// The wait after failed attempt `attempt`, with `draw` (in [0, 1)) of
    /// the jitter taken off: the random draw comes from the caller, so that
    /// the wait is a function of its inputs.
    pub(crate) fn backoff_with_jitter(&self, attempt: u32, draw: f64) -> Duration {
        self.backoff(attempt).mul_f64(1.0 - self.jitter * draw)
    }
}

/// A number in [0, 1) from the process's random hasher keys: no extra
/// dependency, and different in every call.
pub(crate) fn random_unit() -> f64 {
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u64(0);
    (hasher.finish() >> 11) as f64 / (1u64 << 53) as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn waits_grow_and_stay_within_bounds() {
        let retry = RetryConfig {
            initial_backoff: Duration::from_millis(50),
            max_backoff: Duration::from_millis(300),
            multiplier: 3.0,
            jitter: 0.5,
            ..RetryConfig::default()
        };
        assert_eq!(retry.backoff(1), Duration::from_millis(50));
        assert_eq!(retry.backoff(2), Duration::from_millis(150));
        assert_eq!(retry.backoff(3), Duration::from_millis(300));
        for attempt in 1..10 {
            let full = retry.backoff(attempt);
            let jittered = retry.jittered_backoff(attempt);
            assert!(
                jittered <= full && jittered >= full / 2,
                "{jittered:?} of {full:?}"
            );
        }
    }

    #[test]
    fn the_draw_takes_its_share_of_the_jitter_off_the_wait() {
        let retry = RetryConfig {
            initial_backoff: Duration::from_millis(100),
            jitter: 0.5,
            ..RetryConfig::default()
        };
        assert_eq!(
            retry.backoff_with_jitter(1, 0.0),
            Duration::from_millis(100)
        );
        assert_eq!(retry.backoff_with_jitter(1, 0.5), Duration::from_millis(75));
        assert_eq!(
            retry.backoff_with_jitter(2, 0.5),
            Duration::from_millis(150)
        );
    }

    #[test]
    fn jitter_varies() {
        let retry = RetryConfig::default();
        let waits: std::collections::HashSet<Duration> =
            (0..20).map(|_| retry.jittered_backoff(2)).collect();
        assert!(waits.len() > 1);
    }

    #[test]
    fn bad_values_name_their_key() {
        let bad = |f: fn(&mut RetryConfig)| {
            let mut config = RetryConfig::default();
            f(&mut config);
            config.validate().unwrap_err().key().to_owned()
        };
        assert_eq!(bad(|c| c.max_attempts = 0), "worker.retry.max_attempts");
        assert_eq!(bad(|c| c.multiplier = 0.5), "worker.retry.multiplier");
        assert_eq!(bad(|c| c.jitter = 1.5), "worker.retry.jitter");
        assert_eq!(
            bad(|c| c.max_backoff = Duration::from_millis(1)),
            "worker.retry.max_backoff"
        );
    }

    #[test]
    fn the_toml_example_loads_and_shows_the_defaults() {
        let toml = crate::config::examples::toml_example(include_str!("retry.rs"), "RetryConfig");
        assert!(toml.starts_with("[worker.retry]\n"), "{toml}");
        let worker = crate::config::examples::load_worker(&toml, "retry")
            .unwrap_or_else(|e| panic!("{e}\nin the example:\n{toml}"));
        assert_eq!(worker.retry, RetryConfig::default());
    }
}
