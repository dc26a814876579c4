//! One message's way through the stages: an `attempt`, then its outputs
//! (`emit`); on a failure, the failure policy decides and `recover` carries
//! out the decision, and while it says retry, this loop attempts the message
//! again. The stages only return what happened; the loop goes back.

use std::future::Future;
use std::pin::Pin;

use bytes::Bytes;
use tokio::sync::OwnedSemaphorePermit;

use super::LaneTask;
use super::recover::Recovered;
use super::span::within;
use crate::dead_letter::{Failure, FailureKind};
use crate::delivery::Outcome;
use crate::error::Error;
use crate::message::Message;
use crate::output::Repr;
use crate::policy::Decision;
use crate::sink::Sink;
use crate::source::Acker;
use crate::trace::{TraceParent, continue_trace};
use crate::worker::Worker;

/// What a lane's loop does next.
pub(super) enum Step {
    /// Take the next message.
    Next,
    /// Take no more; settle what is pending, then end.
    Stop,
    /// End now: the run failed (reported already).
    End,
}

/// What became of a message the lane took.
pub(super) enum Handled {
    /// Sent (outputs or dead letter); acknowledged once delivered. With the
    /// permit it no longer needs.
    Sent(OwnedSemaphorePermit),
    /// Done with no outputs, acknowledged.
    Acked(OwnedSemaphorePermit),
    /// The lane was stopped while the message waited to be retried.
    Stopped,
    /// A delivery failed meanwhile; the run is stopping.
    Failed,
}

type Handling<'a> = Pin<Box<dyn Future<Output = Result<Handled, Error>> + Send + 'a>>;

impl<W: Worker, K: Sink, A: Acker> LaneTask<W, K, A> {
    /// Decodes and processes one message, retrying transient failures, and
    /// sends its outputs — or, when it cannot be processed, its dead letter.
    pub(super) fn handle(
        &self,
        raw: Message<Option<Bytes>>,
        permit: OwnedSemaphorePermit,
    ) -> impl Future<Output = Result<Handled, Error>> + Send + '_ {
        // Not an `async fn` of its own: every layer of async state would be
        // one more copy of the message's whole future.
        self.handle_from(raw, permit, 0)
    }

    /// Like [`LaneTask::handle`] for a message that already failed `done` times.
    ///
    /// Every message's future is moved into place, so it is kept small: the
    /// message's span is entered around each poll of the handler and the sink
    /// instead of wrapping the whole future, and the sending of outputs (with
    /// the sink's own future) and what follows a failure are boxed: a
    /// message with no outputs needs neither.
    pub(super) async fn handle_from(
        &self,
        raw: Message<Option<Bytes>>,
        permit: OwnedSemaphorePermit,
        done: u32,
    ) -> Result<Handled, Error> {
        let span = self.message_span(raw.offset());
        // W3C trace context: outputs continue the input's trace (through this
        // span when it is exported to OpenTelemetry).
        let trace = continue_trace(&span, raw.headers());
        let failure = match self.attempt(&raw, &span, done).await {
            Ok(outputs) => match outputs.into_repr() {
                // Nothing to send: no sending future is made.
                Repr::None => {
                    self.ack(raw.offset(), Outcome::Processed);
                    return Ok(Handled::Acked(permit));
                }
                outputs => {
                    match Box::pin(self.emit(raw.offset(), outputs, trace.as_ref(), &span)).await {
                        Ok(()) => return Ok(Handled::Sent(permit)),
                        Err(reason) => encode_failure(reason, done + 1),
                    }
                }
            },
            Err(failure) => failure,
        };
        let decision = self.shared.policy.decide(&failure);
        self.after_failure(raw, failure, decision, permit, trace, span)
            .await
    }

    /// What follows a failure the policy decided about, within the message's
    /// span: `recover` carries the decision out, and while the policy says
    /// retry, the message is attempted again. `trace` is what the outputs of
    /// a later attempt continue. Boxed, as the rare path, so that it does not
    /// add to the size of every message's future.
    pub(super) fn after_failure(
        &self,
        mut raw: Message<Option<Bytes>>,
        mut failure: Failure,
        mut decision: Decision,
        mut permit: OwnedSemaphorePermit,
        trace: Option<TraceParent>,
        span: tracing::Span,
    ) -> Handling<'_> {
        let scope = span.clone();
        Box::pin(within(scope, async move {
            loop {
                let done = failure.attempts;
                (raw, permit) = match self.recover(raw, failure, decision, permit).await? {
                    Recovered::Again(raw, permit) => (raw, permit),
                    Recovered::DeadLettered(permit) => return Ok(Handled::Sent(permit)),
                    Recovered::Stopped => return Ok(Handled::Stopped),
                    Recovered::Failed => return Ok(Handled::Failed),
                };
                failure = match self.attempt(&raw, &span, done).await {
                    Ok(outputs) => {
                        let outputs = outputs.into_repr();
                        match self
                            .emit(raw.offset(), outputs, trace.as_ref(), &span)
                            .await
                        {
                            Ok(()) => return Ok(Handled::Sent(permit)),
                            Err(reason) => encode_failure(reason, done + 1),
                        }
                    }
                    Err(failure) => failure,
                };
                decision = self.shared.policy.decide(&failure);
            }
        }))
    }

    /// Files a handled message's result: what the lane does next, and the
    /// permit the message no longer needs, if it had one.
    pub(super) fn absorb(
        &self,
        handled: Result<Handled, Error>,
    ) -> (Step, Option<OwnedSemaphorePermit>) {
        match handled {
            Ok(Handled::Sent(permit) | Handled::Acked(permit)) => (Step::Next, Some(permit)),
            // Unacknowledged: redelivered to whoever owns the partition next.
            Ok(Handled::Stopped) => (Step::Stop, None),
            Ok(Handled::Failed) => (Step::End, None),
            Err(error) => {
                self.fail(error);
                (Step::End, None)
            }
        }
    }
}

/// An output of a processed message that could not be encoded, after
/// `attempts` attempts.
pub(super) fn encode_failure(reason: String, attempts: u32) -> Failure {
    Failure {
        kind: FailureKind::Encode,
        reason,
        attempts,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dead_letter::header;
    use crate::lane::stub;

    /// Handles the message at offset 0 with this payload; what was sent.
    async fn handled(
        stub: &stub::Stub,
        payload: &str,
    ) -> (Result<Handled, Error>, Vec<crate::sink::Record>) {
        stub.hold(1);
        let raw = stub::message(0, payload);
        let permit = stub
            .task
            .shared
            .permits
            .clone()
            .try_acquire_owned()
            .unwrap();
        let handled = stub.task.handle(raw, permit).await;
        (handled, stub.sink.sent())
    }

    /// A payload, the attempts at `process` it gets, the outputs it sends,
    /// and its dead letter's kind and attempts, if any.
    type Row<'a> = (&'a str, u32, usize, Option<(&'a str, &'a str)>);

    #[tokio::test]
    async fn each_failure_is_retried_or_dead_lettered_as_the_policy_says() {
        let too_large = "x".repeat(101);
        let table: [Row; 9] = [
            ("echo", 1, 1, None),
            ("many", 1, 3, None),
            ("none", 1, 0, None),
            ("fail once", 2, 1, None),
            ("fail", 3, 0, Some(("transient", "3"))),
            ("permanent", 1, 0, Some(("permanent", "1"))),
            ("panic", 1, 0, Some(("panic", "1"))),
            ("unencodable", 1, 0, Some(("encode", "1"))),
            (&too_large, 0, 0, Some(("too_large", "0"))),
        ];
        for (payload, attempts, outputs, letter) in table {
            let stub = stub::lane(stub::policy());
            let (handled, sent) = handled(&stub, payload).await;
            let expected_acked = outputs == 0 && letter.is_none();
            match handled {
                Ok(Handled::Acked(_)) => assert!(expected_acked, "{payload}"),
                Ok(Handled::Sent(_)) => assert!(!expected_acked, "{payload}"),
                _ => panic!("{payload}: not handled"),
            }
            assert_eq!(stub.worker.attempts(0), attempts, "{payload}");
            let letters: Vec<_> = sent
                .iter()
                .filter(|r| r.topic.as_deref() == Some("t.dlq"))
                .collect();
            assert_eq!(sent.len() - letters.len(), outputs, "{payload}");
            let letter_seen = letters.first().map(|r| {
                (
                    r.headers.get_str(header::KIND).unwrap(),
                    r.headers.get_str(header::ATTEMPTS).unwrap(),
                )
            });
            assert_eq!(letter_seen, letter, "{payload}");
            let retried = attempts.saturating_sub(1) as u64;
            assert!(
                retried == 0 || stub.counted("retried", retried),
                "{payload}"
            );
        }
    }

    #[tokio::test]
    async fn a_message_that_cannot_be_decoded_is_dead_lettered_unprocessed() {
        let stub = stub::lane(stub::policy());
        let mut raw = stub::message(0, "");
        raw.payload = Some(bytes::Bytes::from_static(&[0xff, 0xfe]));
        let permit = stub
            .task
            .shared
            .permits
            .clone()
            .try_acquire_owned()
            .unwrap();
        assert!(matches!(
            stub.task.handle(raw, permit).await,
            Ok(Handled::Sent(_))
        ));
        let sent = stub.sink.sent();
        assert_eq!(sent[0].headers.get_str(header::KIND), Some("decode"));
        assert_eq!(sent[0].headers.get_str(header::ATTEMPTS), Some("0"));
        assert_eq!(
            sent[0].payload.as_deref(),
            Some(&[0xff, 0xfe][..]),
            "kept as it was"
        );
        assert_eq!(stub.worker.attempts(0), 0);
    }

    #[tokio::test]
    async fn without_dead_letters_a_failure_stops_the_run_after_its_attempts() {
        let mut policy = stub::policy();
        policy.dead_letter = None;
        for (payload, attempts, kind) in [
            ("fail", 3, FailureKind::Transient),
            ("permanent", 1, FailureKind::Permanent),
            ("unencodable", 1, FailureKind::Encode),
        ] {
            let stub = stub::lane(policy.clone());
            let (handled, sent) = handled(&stub, payload).await;
            assert!(
                matches!(&handled, Err(Error::Process { offset: 0, kind: k, .. }) if *k == kind),
                "{payload}: {:?}",
                handled.err()
            );
            assert!(sent.is_empty(), "{payload}");
            assert_eq!(stub.worker.attempts(0), attempts, "{payload}");
        }
    }

    #[tokio::test]
    async fn the_loop_goes_on_as_each_message_was_handled() {
        let mut stub = stub::lane(stub::policy());
        let permit = || {
            stub.task
                .shared
                .permits
                .clone()
                .try_acquire_owned()
                .unwrap()
        };
        let (step, kept) = stub.task.absorb(Ok(Handled::Sent(permit())));
        assert!(matches!(step, Step::Next) && kept.is_some());
        let (step, kept) = stub.task.absorb(Ok(Handled::Acked(permit())));
        assert!(matches!(step, Step::Next) && kept.is_some());
        assert!(matches!(
            stub.task.absorb(Ok(Handled::Stopped)),
            (Step::Stop, None)
        ));
        assert!(matches!(
            stub.task.absorb(Ok(Handled::Failed)),
            (Step::End, None)
        ));
        assert!(
            stub.failures.try_recv().is_err(),
            "reported by whoever failed"
        );
        let error = Error::Lane {
            partition: stub.task.partition.clone(),
            reason: "x".into(),
        };
        assert!(matches!(stub.task.absorb(Err(error)), (Step::End, None)));
        assert!(stub.failures.try_recv().is_ok(), "reported");
    }
}
