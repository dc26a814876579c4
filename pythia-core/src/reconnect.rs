//! How long a connector waits before its next connection attempt:
//! exponential backoff between its `reconnect_min` and `reconnect_max`.

use std::time::Duration;

/// The waits between reconnect attempts: `min`, doubling after each failed
/// attempt, capped at `max`; back to `min` once connected.
///
/// ```
/// use std::time::Duration;
/// use pythia_core::connector::Backoff;
/// let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(5));
/// assert_eq!(backoff.next_wait(), Duration::from_millis(100));
/// assert_eq!(backoff.next_wait(), Duration::from_millis(200));
/// backoff.reset();
/// assert_eq!(backoff.next_wait(), Duration::from_millis(100));
/// ```
#[derive(Debug, Clone)]
pub struct Backoff {
    min: Duration,
    max: Duration,
    failures: u32,
}

impl Backoff {
    /// Waits from `min` up to `max`.
    pub fn new(min: Duration, max: Duration) -> Self {
        Self {
            min,
            max,
            failures: 0,
        }
    }

    /// The wait before the next attempt, counting one more failure.
    pub fn next_wait(&mut self) -> Duration {
        let wait = backoff_wait(self.min, self.max, self.failures);
        self.failures = self.failures.saturating_add(1);
        wait
    }

    /// Connected: the next loss starts from `min` again.
    pub fn reset(&mut self) {
        self.failures = 0;
    }
}

/// The wait after `failures` failed attempts: `min · 2^failures`, at most `max`.
pub fn backoff_wait(min: Duration, max: Duration, failures: u32) -> Duration {
    min.checked_mul(1u32.checked_shl(failures.min(31)).unwrap_or(u32::MAX))
        .unwrap_or(max)
        .min(max)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn waits_double_up_to_the_cap() {
        let ms = Duration::from_millis;
        let table = [
            (0, 100),
            (1, 200),
            (2, 400),
            (5, 3200),
            (6, 5000),
            (40, 5000),
            (u32::MAX, 5000),
        ];
        for (failures, expected) in table {
            assert_eq!(
                backoff_wait(ms(100), ms(5000), failures),
                ms(expected),
                "{failures}"
            );
        }
    }

    #[test]
    fn reset_starts_over() {
        let mut backoff = Backoff::new(Duration::from_millis(10), Duration::from_secs(1));
        assert_eq!(backoff.next_wait(), Duration::from_millis(10));
        assert_eq!(backoff.next_wait(), Duration::from_millis(20));
        backoff.reset();
        assert_eq!(backoff.next_wait(), Duration::from_millis(10));
    }
}
