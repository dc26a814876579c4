//! One attempt at a message: its payload checked against the size limit and
//! decoded, then `process` run on it within the message's span, timed, with a
//! panic caught. It returns the outputs, or the failure for the policy.

use std::panic::AssertUnwindSafe;
use std::task::Poll;

use bytes::Bytes;

use super::LaneTask;
use super::span::within;
use crate::codec::Decode;
use crate::dead_letter::{Failure, FailureKind};
use crate::error::ProcessError;
use crate::message::Message;
use crate::output::Outputs;
use crate::panic::panic_text;
use crate::sink::Sink;
use crate::source::Acker;
use crate::worker::Worker;

/// A failed `process` as a failure for the policy: `attempts` made, this one
/// included.
pub(super) fn process_failure(error: &ProcessError, attempts: u32) -> Failure {
    let kind = if error.is_permanent() {
        FailureKind::Permanent
    } else {
        FailureKind::Transient
    };
    Failure {
        kind,
        reason: error.to_string(),
        attempts,
    }
}

impl<W: Worker, K: Sink, A: Acker> LaneTask<W, K, A> {
    /// The message as `process` takes it: within the size limit, decoded.
    /// Neither failure is an attempt at processing: `done`, the attempts made
    /// before, stays the count.
    pub(super) fn decode(
        &self,
        raw: &Message<Option<Bytes>>,
        done: u32,
    ) -> Result<Message<W::Input>, Failure> {
        let refused = |kind, reason| Failure {
            kind,
            reason,
            attempts: done,
        };
        if let Some(reason) = self.shared.policy.too_large(raw) {
            return Err(refused(FailureKind::TooLarge, reason));
        }
        raw.try_map_ref(|p| W::Codec::decode(p.as_ref()))
            .map_err(|error| refused(FailureKind::Decode, error.to_string()))
    }

    /// One attempt at a message after `done` others: decodes it afresh
    /// (`process` takes it) and runs `process` on it within the message's span.
    pub(super) async fn attempt(
        &self,
        raw: &Message<Option<Bytes>>,
        span: &tracing::Span,
        done: u32,
    ) -> Result<Outputs<W::Output>, Failure> {
        let message = self.decode(raw, done)?;
        // The clock is read only for the duration histogram.
        let started = self.metrics.is_some().then(|| self.clock.start());
        let result = self
            .run_handler(span, || {
                self.shared.worker.process(message, &self.shared.ctx)
            })
            .await;
        if let (Some(metrics), Some(started)) = (&self.metrics, started) {
            let ended = std::time::Instant::now();
            metrics.observe_duration((ended - started).as_secs_f64());
            self.clock.ended(ended);
        }
        match result {
            Ok(Ok(outputs)) => Ok(outputs),
            Ok(Err(error)) => Err(process_failure(&error, done + 1)),
            Err(panic) => Err(Failure {
                kind: FailureKind::Panic,
                reason: format!("process panicked: {}", panic_text(&*panic)),
                attempts: done + 1,
            }),
        }
    }

    /// Runs a handler — the future `start` makes — within `span`, catching a
    /// panic of it, also one while the future is made. If it has to wait, the
    /// lane's finished offsets and locally counted metrics are flushed first:
    /// neither is held back while a handler is slow or hung, and a handler
    /// that finishes at once costs no flush.
    ///
    /// Polls the handler in place, as `CatchUnwind` would around it, without
    /// its layer of state to move.
    pub(super) async fn run_handler<F: std::future::Future>(
        &self,
        span: &tracing::Span,
        start: impl FnOnce() -> F,
    ) -> std::thread::Result<F::Output> {
        let future = span.in_scope(|| std::panic::catch_unwind(AssertUnwindSafe(start)))?;
        let mut future = std::pin::pin!(future);
        let mut flushed = false;
        let caught = std::future::poll_fn(|cx| {
            match std::panic::catch_unwind(AssertUnwindSafe(|| future.as_mut().poll(cx))) {
                Ok(Poll::Ready(output)) => Poll::Ready(Ok(output)),
                Err(panic) => Poll::Ready(Err(panic)),
                Ok(Poll::Pending) => {
                    if !flushed {
                        flushed = true;
                        self.flush_acks();
                        if let Some(metrics) = &self.metrics {
                            metrics.flush();
                        }
                    }
                    Poll::Pending
                }
            }
        });
        within(span, caught).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::delivery::Outcome;
    use crate::lane::stub::{self, Out};
    use crate::output::Repr;

    fn failed<T>(result: Result<T, Failure>) -> (FailureKind, String, u32) {
        match result {
            Ok(_) => panic!("not a failure"),
            Err(Failure {
                kind,
                reason,
                attempts,
            }) => (kind, reason, attempts),
        }
    }

    #[test]
    fn a_payload_over_the_limit_or_not_decodable_is_not_an_attempt() {
        let stub = stub::lane(stub::policy());
        let decoded = stub.task.decode(&stub::message(0, "fine"), 0).unwrap();
        assert_eq!(decoded.payload(), "fine");
        let (kind, reason, attempts) =
            failed(stub.task.decode(&stub::message(1, &"x".repeat(101)), 2));
        assert_eq!((kind, attempts), (FailureKind::TooLarge, 2));
        assert_eq!(
            reason,
            "payload of 101 bytes exceeds worker.max_message_bytes = 100"
        );
        let mut raw = stub::message(2, "");
        raw.payload = Some(bytes::Bytes::from_static(&[0xff]));
        let (kind, reason, attempts) = failed(stub.task.decode(&raw, 0));
        assert_eq!((kind, attempts), (FailureKind::Decode, 0));
        assert!(reason.starts_with("payload is not valid UTF-8"), "{reason}");
        assert_eq!(stub.worker.attempts(1) + stub.worker.attempts(2), 0);
    }

    #[tokio::test]
    async fn an_attempt_returns_the_outputs_or_the_failure_counting_itself() {
        let stub = stub::lane(stub::policy());
        let span = tracing::Span::none();
        let attempt = |offset, script: &'static str, done| {
            let raw = stub::message(offset, script);
            let task = &stub.task;
            let span = &span;
            async move { task.attempt(&raw, span, done).await }
        };
        let outputs = attempt(0, "echo", 0).await.unwrap();
        assert!(
            matches!(outputs.into_repr(), Repr::One(o) if matches!(&o.value, Out::Text(t) if t == "echo"))
        );
        for (script, kind, reason) in [
            ("fail", FailureKind::Transient, "scripted transient failure"),
            (
                "permanent",
                FailureKind::Permanent,
                "scripted permanent failure",
            ),
            (
                "panic",
                FailureKind::Panic,
                "process panicked: scripted panic",
            ),
            (
                "panic early",
                FailureKind::Panic,
                "process panicked: scripted early panic",
            ),
        ] {
            let failure = failed(attempt(1, script, 1).await);
            assert_eq!(failure, (kind, reason.to_owned(), 2), "{script}");
        }
        // Every attempt that ran `process` is timed.
        stub.task.metrics.as_ref().unwrap().flush();
        let line = r#"pythia_process_duration_seconds_count{topic="t",worker="w"} 5"#;
        assert!(
            stub.metrics.encode().contains(line),
            "{}",
            stub.metrics.encode()
        );
    }

    #[tokio::test]
    async fn a_handler_that_has_to_wait_flushes_the_finished_offsets_first() {
        let stub = stub::lane(stub::policy());
        stub.hold(2);
        stub.task.ack(0, Outcome::Processed);
        let span = tracing::Span::none();
        stub.task
            .attempt(&stub::message(1, "at once"), &span, 0)
            .await
            .unwrap();
        assert!(stub.acks.offsets().is_empty(), "no wait, no flush");
        stub.task
            .attempt(&stub::message(2, "sleep"), &span, 0)
            .await
            .unwrap();
        assert_eq!(stub.acks.offsets(), [0]);
    }
}
