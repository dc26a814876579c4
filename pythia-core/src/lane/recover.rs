//! Recovering from a failed message as the failure policy decided
//! (`crate::policy`): wait out the backoff and take a permit again, send the
//! message's dead letter, or stop the run on it. Recovery never attempts the
//! message itself: it hands it back to the loop that does (`handle`).

use bytes::Bytes;
use tokio::sync::OwnedSemaphorePermit;

use super::LaneTask;
use super::permits::Wait;
use super::wait::DeliveryFailed;
use crate::dead_letter::{self, Failure, Letter};
use crate::delivery::Outcome;
use crate::error::Error;
use crate::events::WorkerEvent;
use crate::message::Message;
use crate::metrics::Counted;
use crate::policy::Decision;
use crate::sink::Sink;
use crate::source::Acker;
use crate::worker::Worker;

/// What became of a failed message.
pub(super) enum Recovered {
    /// To be attempted again: its wait is over and it has a permit again.
    Again(Message<Option<Bytes>>, OwnedSemaphorePermit),
    /// Its dead letter is sent, to be acknowledged once delivered; with the
    /// permit it no longer needs.
    DeadLettered(OwnedSemaphorePermit),
    /// The lane was asked to stop while the message waited to be retried.
    Stopped,
    /// A delivery failed while the message waited; the run is stopping.
    Failed,
}

impl<W: Worker, K: Sink, A: Acker> LaneTask<W, K, A> {
    /// Carries out `decision` about `raw`, which failed with `failure`; an
    /// `Err` stops the run. Called on the boxed path of a failed message
    /// only, so it adds nothing to the future of every message.
    pub(super) async fn recover(
        &self,
        raw: Message<Option<Bytes>>,
        failure: Failure,
        decision: Decision,
        permit: OwnedSemaphorePermit,
    ) -> Result<Recovered, Error> {
        match decision {
            Decision::Retry { after } => Ok(self.retry_after(raw, &failure, after, permit).await),
            Decision::DeadLetter(kind) => {
                let failure = Failure { kind, ..failure };
                self.dead_letter(raw, failure, permit).await
            }
            Decision::Stop => Err(self.stopped_on(raw.offset(), failure)),
        }
    }

    /// Waits `wait` before `raw` is attempted again, settling deliveries
    /// meanwhile, then takes a permit again.
    async fn retry_after(
        &self,
        raw: Message<Option<Bytes>>,
        failure: &Failure,
        wait: std::time::Duration,
        permit: OwnedSemaphorePermit,
    ) -> Recovered {
        if let Some(metrics) = &self.metrics {
            metrics.count(Counted::Retried);
            metrics.flush();
        }
        tracing::warn!(
            message = %format_args!("{}@{}", self.partition, raw.offset()),
            attempt = failure.attempts,
            ?wait,
            error = %failure.reason,
            "process failed; retrying"
        );
        self.shared.events.emit(|| WorkerEvent::Retrying {
            partition: self.partition.clone(),
            offset: raw.offset(),
            attempts: failure.attempts,
            after: wait,
            error: failure.reason.clone(),
        });
        // Only this partition waits: the permit goes back meanwhile.
        drop(permit);
        self.flush_acks();
        self.clock.break_chain();
        let backoff = tokio::time::sleep(wait);
        match self.settling(self.unless_stopped(backoff)).await {
            Ok(Some(())) => match self.permit().await {
                Wait::Permit(permit) => Recovered::Again(raw, permit),
                Wait::Stop => Recovered::Stopped,
                Wait::Fail => Recovered::Failed,
            },
            Ok(None) => Recovered::Stopped,
            Err(DeliveryFailed) => Recovered::Failed,
        }
    }

    /// Sends the dead letter of `raw`, reduced if it would not fit the sink's
    /// limit; its delivery report is settled with the lane's others.
    async fn dead_letter(
        &self,
        raw: Message<Option<Bytes>>,
        failure: Failure,
        permit: OwnedSemaphorePermit,
    ) -> Result<Recovered, Error> {
        let offset = raw.offset();
        let Some(config) = &self.shared.policy.dead_letter else {
            return Err(self.stopped_on(offset, failure));
        };
        let topic = config.topic_for(self.partition.topic());
        let limit = self.shared.sink.max_record_bytes();
        let Letter { record, fallback } =
            dead_letter::letter(raw, topic, self.shared.ctx.worker(), &failure, limit);
        let topic = record.topic.as_deref().unwrap_or_default();
        let Failure {
            kind,
            attempts,
            reason,
        } = &failure;
        match record.headers.get_str(dead_letter::header::TRUNCATED) {
            None => tracing::warn!(
                message = %format_args!("{}@{offset}", self.partition),
                %kind,
                attempts,
                %reason,
                dead_letter_topic = %topic,
                "dead-lettering message"
            ),
            Some(truncated) => tracing::warn!(
                message = %format_args!("{}@{offset}", self.partition),
                %kind,
                attempts,
                %reason,
                dead_letter_topic = %topic,
                truncated,
                limit,
                "dead-lettering message, reduced to fit the producer's limit"
            ),
        }
        self.shared.events.emit(|| WorkerEvent::DeadLettered {
            partition: self.partition.clone(),
            offset,
            kind: *kind,
            reason: reason.clone(),
        });
        self.letters.sent(offset, fallback);
        let receipt = self.ledger.receipt(offset, Outcome::DeadLettered, 1);
        self.shared.sink.send(record, receipt).await;
        Ok(Recovered::DeadLettered(permit))
    }

    /// The error that stops the run on the message at `offset`: dead letters
    /// are off.
    fn stopped_on(&self, offset: i64, failure: Failure) -> Error {
        Error::Process {
            partition: self.partition.clone(),
            offset,
            kind: failure.kind,
            reason: failure.reason,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::dead_letter::{FailureKind, header};
    use crate::lane::stub;

    fn failure(kind: FailureKind, attempts: u32) -> Failure {
        Failure {
            kind,
            reason: format!("{kind} failure"),
            attempts,
        }
    }

    fn permit(stub: &stub::Stub) -> OwnedSemaphorePermit {
        stub.task
            .shared
            .permits
            .clone()
            .try_acquire_owned()
            .unwrap()
    }

    #[tokio::test(start_paused = true)]
    async fn a_retry_waits_without_its_permit_then_hands_the_message_back() {
        let stub = stub::lane(stub::policy());
        let after = Duration::from_millis(50);
        let permits = &stub.task.shared.permits;
        let started = tokio::time::Instant::now();
        let recovering = stub.task.recover(
            stub::message(4, "fail"),
            failure(FailureKind::Transient, 1),
            Decision::Retry { after },
            permit(&stub),
        );
        let check = async {
            tokio::time::sleep(after / 2).await;
            assert_eq!(
                permits.available_permits(),
                stub::PERMITS,
                "given back meanwhile"
            );
        };
        let (recovered, ()) = tokio::join!(recovering, check);
        let Ok(Recovered::Again(raw, _permit)) = recovered else {
            panic!("handed back");
        };
        assert_eq!(raw.offset(), 4);
        assert_eq!(started.elapsed(), after);
        assert_eq!(
            permits.available_permits(),
            stub::PERMITS - 1,
            "taken again"
        );
        assert!(stub.counted("retried", 1));
        assert!(stub.sink.sent().is_empty());
    }

    #[tokio::test]
    async fn a_stop_during_the_wait_ends_the_retry() {
        let stub = stub::lane(stub::policy());
        stub.task.stop.cancel();
        let recovered = stub
            .task
            .recover(
                stub::message(4, "fail"),
                failure(FailureKind::Transient, 1),
                Decision::Retry {
                    after: Duration::from_secs(3600),
                },
                permit(&stub),
            )
            .await;
        assert!(matches!(recovered, Ok(Recovered::Stopped)));
    }

    #[tokio::test]
    async fn a_dead_letter_carries_the_failure_and_acknowledges_its_message_once_delivered() {
        let stub = stub::lane(stub::policy());
        stub.hold(1);
        let recovered = stub
            .task
            .recover(
                stub::message(9, "permanent").with_key("k"),
                failure(FailureKind::Permanent, 1),
                Decision::DeadLetter(FailureKind::Permanent),
                permit(&stub),
            )
            .await;
        assert!(matches!(recovered, Ok(Recovered::DeadLettered(_))));
        let sent = stub.sink.sent();
        let [letter] = &sent[..] else {
            panic!("one dead letter: {sent:?}");
        };
        assert_eq!(letter.topic.as_deref(), Some("t.dlq"));
        assert_eq!(letter.key.as_deref(), Some(&b"k"[..]));
        assert_eq!(stub::payloads(&sent), ["permanent"], "the original payload");
        for (name, value) in [
            (header::KIND, "permanent"),
            (header::REASON, "permanent failure"),
            (header::ATTEMPTS, "1"),
            (header::TOPIC, "t"),
            (header::PARTITION, "0"),
            (header::OFFSET, "9"),
            (header::WORKER, "w"),
        ] {
            assert_eq!(letter.headers.get_str(name), Some(value), "{name}");
        }
        assert!(stub.task.settle());
        assert_eq!(stub.acks.offsets(), [9]);
        assert!(stub.counted("dead_lettered", 1));
    }

    #[tokio::test]
    async fn a_stop_decision_is_the_error_that_stops_the_run() {
        let stub = stub::lane(stub::policy());
        let recovered = stub
            .task
            .recover(
                stub::message(2, "x"),
                failure(FailureKind::Decode, 0),
                Decision::Stop,
                permit(&stub),
            )
            .await;
        let Err(Error::Process {
            offset,
            kind,
            reason,
            ..
        }) = recovered
        else {
            panic!("stopped");
        };
        assert_eq!(
            (offset, kind, reason.as_str()),
            (2, FailureKind::Decode, "decode failure")
        );
        assert!(stub.sink.sent().is_empty());
    }
}
