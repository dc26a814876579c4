//! Stop calling a dependency that keeps failing, for a while.

use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

use super::{Layer, Next};
use crate::context::Context;
use crate::error::ProcessError;
use crate::message::Message;
use crate::output::Outputs;
use crate::worker::Process;

/// A circuit breaker around a flaky dependency.
///
/// After `failures` transient errors in a row (permanent errors are about
/// the message, not the dependency, and do not count), the circuit *opens*
/// for `open_for`. While it is open, attempts **wait** for it to close
/// rather than fail: the partitions hold their place, nothing is retried
/// into the dead-letter topic because a dependency is down, and fetching
/// pauses once the buffers fill. When `open_for` has passed, one attempt
/// goes through as a trial (*half-open*); if it succeeds the circuit closes,
/// if it fails it opens again. A shutdown ends the wait with a transient
/// error, so the drain is not held up.
///
/// One breaker is shared by every partition of the worker it wraps.
///
/// ```
/// use std::time::Duration;
/// use pythia_core::layer::{CircuitBreaker, LayerExt};
/// # use pythia_core::{Context, Message, Outputs, Process, ProcessError};
/// # struct Payments;
/// # impl Process for Payments {
/// #     type Input = String;
/// #     type Output = String;
/// #     async fn process(&self, msg: Message<String>, _: &Context) -> Result<Outputs<String>, ProcessError> {
/// #         Ok(Outputs::one(msg.into_payload()))
/// #     }
/// # }
/// // Five failures in a row open it for 30 s.
/// let worker = Payments.layer(CircuitBreaker::new(5, Duration::from_secs(30)));
/// ```
#[derive(Debug)]
pub struct CircuitBreaker {
    failures: u32,
    open_for: Duration,
    state: Mutex<State>,
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum State {
    /// Calls go through; `failed` transient errors in a row so far.
    Closed { failed: u32 },
    /// No call until `until`.
    Open { until: Instant },
    /// One trial call is under way; the others wait.
    HalfOpen,
}

/// What an attempt must do now.
#[derive(Debug, PartialEq)]
enum Admit {
    /// Call through.
    Go,
    /// Wait until then, and ask again.
    WaitUntil(Instant),
}

impl CircuitBreaker {
    /// Opens after `failures` transient errors in a row (at least 1), for
    /// `open_for`.
    pub fn new(failures: u32, open_for: Duration) -> Self {
        Self {
            failures: failures.max(1),
            open_for,
            state: Mutex::new(State::Closed { failed: 0 }),
        }
    }

    /// Whether the circuit is open (or half-open) now.
    pub fn is_open(&self) -> bool {
        !matches!(*self.lock(), State::Closed { .. })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn admit(&self, now: Instant) -> Admit {
        let mut state = self.lock();
        match *state {
            State::Closed { .. } => Admit::Go,
            State::Open { until } if now >= until => {
                *state = State::HalfOpen;
                Admit::Go
            }
            State::Open { until } => Admit::WaitUntil(until),
            // Another attempt is the trial: look again shortly.
            State::HalfOpen => {
                Admit::WaitUntil(now + self.open_for.min(Duration::from_millis(100)))
            }
        }
    }

    /// Records how an attempt that went through ended.
    fn record(&self, transient_failure: bool, now: Instant) {
        let mut state = self.lock();
        *state = match (*state, transient_failure) {
            (_, false) => State::Closed { failed: 0 },
            (State::Closed { failed }, true) if failed + 1 < self.failures => {
                State::Closed { failed: failed + 1 }
            }
            (State::Closed { failed }, true) => {
                tracing::warn!(
                    failures = failed + 1,
                    open_for = ?self.open_for,
                    "circuit opened: attempts wait until it closes"
                );
                State::Open {
                    until: now + self.open_for,
                }
            }
            (State::HalfOpen | State::Open { .. }, true) => State::Open {
                until: now + self.open_for,
            },
        };
    }
}

impl<P: Process> Layer<P> for CircuitBreaker {
    async fn handle(
        &self,
        msg: Message<P::Input>,
        ctx: &Context,
        next: Next<'_, P>,
    ) -> Result<Outputs<P::Output>, ProcessError> {
        loop {
            match self.admit(Instant::now()) {
                Admit::Go => break,
                Admit::WaitUntil(until) => {
                    tokio::select! {
                        () = tokio::time::sleep_until(until) => {}
                        () = ctx.shutdown_requested() => {
                            return Err(ProcessError::msg("circuit open; shutting down"));
                        }
                    }
                }
            }
        }
        let result = next.run(msg, ctx).await;
        let transient_failure = result.as_ref().is_err_and(|e| !e.is_permanent());
        self.record(transient_failure, Instant::now());
        result
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::layer::LayerExt;
    use crate::layer::tests::{Scripted, message};

    #[test]
    fn it_opens_after_n_transient_failures_in_a_row_and_a_success_resets() {
        let breaker = CircuitBreaker::new(3, Duration::from_secs(10));
        let now = Instant::now();
        breaker.record(true, now);
        breaker.record(true, now);
        breaker.record(false, now);
        breaker.record(true, now);
        breaker.record(true, now);
        assert!(!breaker.is_open(), "a success in between resets the count");
        breaker.record(true, now);
        assert!(breaker.is_open());
        assert_eq!(
            breaker.admit(now),
            Admit::WaitUntil(now + Duration::from_secs(10))
        );
    }

    #[test]
    fn after_open_for_one_trial_goes_and_decides() {
        let breaker = CircuitBreaker::new(1, Duration::from_secs(10));
        let now = Instant::now();
        breaker.record(true, now);
        let later = now + Duration::from_secs(10);
        assert_eq!(breaker.admit(later), Admit::Go, "the trial");
        assert!(
            matches!(breaker.admit(later), Admit::WaitUntil(_)),
            "others wait for it"
        );
        breaker.record(true, later);
        assert_eq!(
            breaker.admit(later),
            Admit::WaitUntil(later + Duration::from_secs(10)),
            "a failed trial opens it again"
        );
        let again = later + Duration::from_secs(10);
        assert_eq!(breaker.admit(again), Admit::Go);
        breaker.record(false, again);
        assert!(!breaker.is_open(), "a good trial closes it");
    }

    #[tokio::test(start_paused = true)]
    async fn while_open_attempts_wait_instead_of_calling_the_worker() {
        let worker =
            Scripted::failing_at(&[1, 2]).layer(CircuitBreaker::new(2, Duration::from_secs(30)));
        let ctx = Context::detached("w");
        assert!(worker.process(message(1), &ctx).await.is_err());
        assert!(worker.process(message(2), &ctx).await.is_err());
        let started = Instant::now();
        let out = worker.process(message(3), &ctx).await.unwrap();
        assert_eq!(out.len(), 1);
        assert!(
            started.elapsed() >= Duration::from_secs(30),
            "waited {:?}",
            started.elapsed()
        );
        assert_eq!(
            worker.inner().calls(),
            [1, 2, 3],
            "nothing called while open"
        );
    }

    #[tokio::test]
    async fn permanent_errors_do_not_open_it() {
        struct Refuses;
        impl Process for Refuses {
            type Input = String;
            type Output = String;
            async fn process(
                &self,
                _: Message<String>,
                _: &Context,
            ) -> Result<Outputs<String>, ProcessError> {
                Err(ProcessError::permanent("bad data"))
            }
        }
        let worker = Refuses.layer(CircuitBreaker::new(1, Duration::from_secs(30)));
        for offset in 0..3 {
            assert!(
                worker
                    .process(message(offset), &Context::detached("w"))
                    .await
                    .is_err()
            );
        }
        assert!(!worker.get_layer().is_open());
    }
}
