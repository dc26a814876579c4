//! The failure policy: what follows a message that failed — another attempt,
//! a dead letter, or the end of the run.
//!
//! One pure function, [`decide`], for every path of a lane (a message alone,
//! an item of a batch, an output the broker refused), tested as a table; the
//! lane applies its decision and never repeats its `match`. The payload size
//! limit is one function too, [`too_large`].

use std::time::Duration;

use crate::error::FailureKind;
use crate::retry::RetryConfig;

/// What follows a failed message.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum Decision {
    /// Attempt it again once `after` has passed.
    Retry { after: Duration },
    /// Send it to the dead-letter topic as a failure of this kind.
    DeadLetter(FailureKind),
    /// Stop the run on it: dead letters are off.
    Stop,
}

/// What follows a `failure` of a message after `attempts` attempts at
/// processing it, the failed one included (a payload that was never handed to
/// `process`, too large or undecodable, has made none).
///
/// Only a transient error of `process` is retried, while attempts remain of
/// `retry.max_attempts`; the wait is `retry`'s backoff with `draw` (a random
/// number in [0, 1) the caller draws) of its jitter taken off. A message that
/// is not retried is dead-lettered, or stops the run when `dead_letters` is
/// false.
pub(crate) fn decide(
    failure: FailureKind,
    attempts: u32,
    retry: &RetryConfig,
    dead_letters: bool,
    draw: f64,
) -> Decision {
    let retried = match failure {
        FailureKind::Transient => attempts < retry.max_attempts,
        // Each of these would fail the same way again.
        FailureKind::Decode
        | FailureKind::TooLarge
        | FailureKind::Permanent
        | FailureKind::Panic
        | FailureKind::Encode
        | FailureKind::OutputRefused => false,
    };
    if retried {
        Decision::Retry {
            after: retry.backoff_with_jitter(attempts, draw),
        }
    } else if dead_letters {
        Decision::DeadLetter(failure)
    } else {
        Decision::Stop
    }
}

/// Why a payload of `size` bytes is refused, when it exceeds `limit`
/// (`worker.max_message_bytes`): such a message is never decoded.
pub(crate) fn too_large(size: usize, limit: Option<usize>) -> Option<String> {
    let limit = limit.filter(|limit| size > *limit)?;
    Some(format!(
        "payload of {size} bytes exceeds worker.max_message_bytes = {limit}"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use Decision::{DeadLetter, Retry, Stop};
    use FailureKind::{Decode, Encode, OutputRefused, Panic, Permanent, TooLarge, Transient};

    /// Every kind of failure: the match fails to compile when a kind is
    /// added, until the table below has its row.
    fn every_kind() -> [FailureKind; 7] {
        let kinds = [
            Decode,
            TooLarge,
            Transient,
            Permanent,
            Panic,
            Encode,
            OutputRefused,
        ];
        for kind in kinds {
            match kind {
                Decode | TooLarge | Transient | Permanent | Panic | Encode | OutputRefused => {}
            }
        }
        kinds
    }

    fn retry() -> RetryConfig {
        RetryConfig {
            max_attempts: 3,
            initial_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(10),
            multiplier: 2.0,
            jitter: 0.5,
        }
    }

    #[test]
    fn every_failure_below_and_at_the_attempt_limit_with_dead_letters_on_and_off() {
        let wait = |ms| Retry {
            after: Duration::from_millis(ms),
        };
        // (failure, after 1 attempt of 3: dead letters on, off;
        //           after 3 attempts of 3: dead letters on, off)
        let table = [
            (
                Decode,
                [DeadLetter(Decode), Stop],
                [DeadLetter(Decode), Stop],
            ),
            (
                TooLarge,
                [DeadLetter(TooLarge), Stop],
                [DeadLetter(TooLarge), Stop],
            ),
            // The only one retried, whether or not dead letters are on.
            (
                Transient,
                [wait(100), wait(100)],
                [DeadLetter(Transient), Stop],
            ),
            (
                Permanent,
                [DeadLetter(Permanent), Stop],
                [DeadLetter(Permanent), Stop],
            ),
            (Panic, [DeadLetter(Panic), Stop], [DeadLetter(Panic), Stop]),
            (
                Encode,
                [DeadLetter(Encode), Stop],
                [DeadLetter(Encode), Stop],
            ),
            (
                OutputRefused,
                [DeadLetter(OutputRefused), Stop],
                [DeadLetter(OutputRefused), Stop],
            ),
        ];
        let kinds: Vec<FailureKind> = table.iter().map(|row| row.0).collect();
        assert_eq!(kinds, every_kind(), "a row for every kind");
        for (failure, below, at) in table {
            for (attempts, expected) in [(1, below), (3, at)] {
                for (dead_letters, expected) in [(true, expected[0]), (false, expected[1])] {
                    assert_eq!(
                        decide(failure, attempts, &retry(), dead_letters, 0.0),
                        expected,
                        "{failure} after {attempts} of 3 attempts, dead letters {dead_letters}"
                    );
                }
            }
        }
    }

    #[test]
    fn a_retry_waits_the_backoff_of_its_attempt_less_the_drawn_jitter() {
        let after = |attempts, draw| match decide(Transient, attempts, &retry(), true, draw) {
            Retry { after } => after,
            other => panic!("{other:?}"),
        };
        assert_eq!(after(1, 0.0), Duration::from_millis(100));
        assert_eq!(after(2, 0.0), Duration::from_millis(200));
        // Half the jitter (0.5) of 200 ms taken off.
        assert_eq!(after(2, 0.5), Duration::from_millis(150));
    }

    #[test]
    fn no_retry_past_the_limit_nor_with_a_single_attempt() {
        assert_eq!(
            decide(Transient, 7, &retry(), true, 0.0),
            DeadLetter(Transient)
        );
        let once = RetryConfig {
            max_attempts: 1,
            ..retry()
        };
        assert_eq!(decide(Transient, 1, &once, false, 0.0), Stop);
        for kind in every_kind() {
            assert!(
                !matches!(decide(kind, 1, &once, true, 0.0), Retry { .. }),
                "{kind}"
            );
        }
    }

    #[test]
    fn only_a_payload_over_the_limit_is_too_large() {
        assert_eq!(too_large(1 << 30, None), None);
        assert_eq!(too_large(100, Some(100)), None);
        assert_eq!(
            too_large(101, Some(100)).as_deref(),
            Some("payload of 101 bytes exceeds worker.max_message_bytes = 100")
        );
    }
}
