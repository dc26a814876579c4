//! Settling delivery reports: a message whose outputs, or dead letter, are
//! all delivered is acknowledged. An output the broker refused is handed to
//! the failure policy (its message is dead-lettered by reference, or the run
//! stops); a dead letter that was not delivered goes out reduced, is
//! skipped, or stops the run, as `dead_letter::undelivered` decides.

use std::collections::HashMap;
use std::sync::Mutex;

use super::LaneTask;
use super::acks::lock;
use crate::dead_letter::{self, Failure, FailureKind, OnFailure, Undelivered};
use crate::delivery::{Delivered, Outcome};
use crate::error::{Error, SinkError};
use crate::policy::Decision;
use crate::sink::{Record, Sink};
use crate::source::Acker;
use crate::worker::Worker;

/// Dead letters awaiting delivery, by offset, with the reduced form to send
/// if the broker refuses them (`None`: reduced already).
#[derive(Default)]
pub(super) struct Letters(Mutex<HashMap<i64, Option<Record>>>);

impl Letters {
    /// The dead letter of the message at `offset` is sent; `fallback` is its
    /// reduced form.
    pub(super) fn sent(&self, offset: i64, fallback: Option<Record>) {
        lock(&self.0).insert(offset, fallback);
    }

    /// The reduced form to send if the dead letter at `offset` was refused.
    fn settled(&self, offset: i64) -> Option<Record> {
        lock(&self.0).remove(&offset).flatten()
    }
}

impl<W: Worker, K: Sink, A: Acker> LaneTask<W, K, A> {
    /// Acknowledges the messages whose outputs are now delivered; on a failed
    /// delivery reports it and returns false.
    pub(super) fn settle(&self) -> bool {
        let mut resend = Vec::new();
        let settled = self.ledger.drain(|delivered| {
            let Delivered {
                offset,
                outcome,
                result,
            } = delivered;
            if outcome == Outcome::DeadLettered {
                return self.letter_settled(offset, result, &mut resend);
            }
            match result {
                Ok(()) => {
                    self.ack(offset, outcome);
                    true
                }
                Err(source) => match self.refused_output(offset, &source) {
                    Some(letter) => {
                        resend.push((offset, letter));
                        true
                    }
                    None => {
                        self.fail(Error::Delivery {
                            partition: self.partition.clone(),
                            offset,
                            source,
                        });
                        false
                    }
                },
            }
        });
        for (offset, record) in resend {
            self.resend(offset, record);
        }
        self.flush_acks();
        settled
    }

    /// A dead letter's delivery report: acknowledges the message, or decides
    /// what follows a failure (see [`dead_letter::undelivered`]); a reduced
    /// form to send is pushed to `resend`. Returns false when the run stops.
    fn letter_settled(
        &self,
        offset: i64,
        result: Result<(), SinkError>,
        resend: &mut Vec<(i64, Record)>,
    ) -> bool {
        let fallback = self.letters.settled(offset);
        let source = match result {
            Ok(()) => {
                self.ack(offset, Outcome::DeadLettered);
                return true;
            }
            Err(source) => source,
        };
        let on_failure = (self.shared.policy.dead_letter.as_ref())
            .map_or(OnFailure::Stop, |config| config.on_failure);
        let message = format!("{}@{offset}", self.partition);
        match dead_letter::undelivered(source.is_refused(), fallback.is_none(), on_failure) {
            Undelivered::SendReduced => {
                tracing::warn!(%message, error = %source, "dead letter refused; sending it reduced");
                resend.extend(fallback.map(|record| (offset, record)));
                true
            }
            Undelivered::Skip => {
                tracing::error!(
                    %message,
                    error = %source,
                    "dead letter refused even reduced; skipping the message and committing past it (worker.dead_letter.on_failure = \"skip\")"
                );
                self.ack(offset, Outcome::Skipped);
                true
            }
            Undelivered::Stop => {
                self.fail(Error::DeadLetter {
                    partition: self.partition.clone(),
                    offset,
                    source,
                });
                false
            }
            Undelivered::Fail => {
                self.fail(Error::Delivery {
                    partition: self.partition.clone(),
                    offset,
                    source,
                });
                false
            }
        }
    }

    /// The dead letter of the message at `offset` whose output the broker
    /// refused, when the policy says so: a reference to the message (its
    /// payload is gone by now). `None` when the failure is not about the
    /// record (an outage, a timeout) or dead letters are off: the run stops,
    /// and the message is redelivered.
    fn refused_output(&self, offset: i64, source: &SinkError) -> Option<Record> {
        if !source.is_refused() {
            return None;
        }
        // The record itself was refused (too large for the topic, say):
        // sending it again would fail again.
        let failure = Failure {
            kind: FailureKind::OutputRefused,
            reason: format!("an output was refused by the broker: {source}"),
            attempts: 1,
        };
        let Decision::DeadLetter(kind) = self.shared.policy.decide(&failure) else {
            return None;
        };
        let config = self.shared.policy.dead_letter.as_ref()?;
        let topic = config.topic_for(self.partition.topic());
        tracing::warn!(
            message = %format_args!("{}@{offset}", self.partition),
            error = %source,
            dead_letter_topic = %topic,
            "an output was refused; dead-lettering a reference to its message"
        );
        Some(dead_letter::reference(
            self.partition.clone(),
            offset,
            topic,
            self.shared.ctx.worker(),
            &Failure { kind, ..failure },
            self.shared.sink.max_record_bytes(),
        ))
    }

    /// Sends the reduced dead letter of the message at `offset`, on a task of
    /// its own: a lane settles reports where it cannot wait for the sink.
    fn resend(&self, offset: i64, record: Record) {
        self.letters.sent(offset, None);
        let receipt = self.ledger.receipt(offset, Outcome::DeadLettered, 1);
        let sink = self.shared.sink.clone();
        tokio::spawn(async move { sink.send(record, receipt).await });
    }
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;

    use super::*;
    use crate::dead_letter::{DeadLetterConfig, header};
    use crate::lane::stub;
    use crate::message::Message;

    fn refused() -> SinkError {
        SinkError::Refused {
            topic: "out".into(),
            reason: "Broker: Message size too large".into(),
        }
    }

    #[tokio::test]
    async fn delivered_outputs_and_dead_letters_acknowledge_their_messages() {
        let stub = stub::lane(stub::policy());
        stub.hold(2);
        let output = stub.task.ledger.receipt(0, Outcome::Processed, 1);
        let letter = stub.task.ledger.receipt(1, Outcome::DeadLettered, 1);
        stub.task.letters.sent(1, None);
        output.settle(Ok(()));
        letter.settle(Ok(()));
        assert!(stub.task.settle());
        assert_eq!(stub.acks.offsets(), [0, 1]);
        assert!(stub.counted("ok", 1) && stub.counted("dead_lettered", 1));
    }

    #[tokio::test]
    async fn a_refused_output_dead_letters_a_reference_to_its_message() {
        let stub = stub::lane(stub::policy());
        stub.hold(1);
        let output = stub.task.ledger.receipt(5, Outcome::Processed, 1);
        output.settle(Err(refused()));
        assert!(stub.task.settle(), "the run goes on");
        assert!(
            stub.acks.offsets().is_empty(),
            "not before its dead letter is delivered"
        );
        stub::until(|| !stub.sink.sent().is_empty()).await;
        let sent = stub.sink.sent();
        assert_eq!(sent[0].topic.as_deref(), Some("t.dlq"));
        assert_eq!(sent[0].payload, None, "the payload is gone by now");
        assert_eq!(
            sent[0].headers.get_str(header::KIND),
            Some("output_refused")
        );
        assert_eq!(sent[0].headers.get_str(header::OFFSET), Some("5"));
        let reason = sent[0].headers.get_str(header::REASON).unwrap();
        assert!(
            reason.starts_with("an output was refused by the broker: "),
            "{reason}"
        );
        stub::until(|| stub.task.ledger.has_settled()).await;
        assert!(stub.task.settle());
        assert_eq!(stub.acks.offsets(), [5]);
        assert!(stub.counted("dead_lettered", 1));
    }

    #[tokio::test]
    async fn an_undelivered_output_stops_the_run_unless_refused_with_dead_letters_on() {
        let mut off = stub::policy();
        off.dead_letter = None;
        for (policy, error) in [(off, refused()), (stub::policy(), SinkError::Dropped)] {
            let mut stub = stub::lane(policy);
            let output = stub.task.ledger.receipt(5, Outcome::Processed, 1);
            output.settle(Err(error));
            assert!(!stub.task.settle());
            assert!(matches!(
                stub.failures.try_recv(),
                Ok(Error::Delivery { offset: 5, .. })
            ));
            assert!(stub.sink.sent().is_empty() && stub.acks.offsets().is_empty());
        }
    }

    /// A run of the lane in each way it schedules, over dead letters the sink
    /// refuses: how they are reduced, skipped, or stop the run.
    mod refused_dead_letters {
        use super::*;
        use crate::spec::MessageOrder;

        struct Ran {
            failure: Option<Error>,
            acks: Vec<i64>,
            sent: Vec<Record>,
            metrics: String,
        }

        /// Each way a lane runs: in order, concurrently, by key, in batches.
        fn modes() -> [(MessageOrder, usize); 4] {
            use MessageOrder::{Key, None, Partition};
            [(Partition, 1), (None, 1), (Key, 1), (Partition, 4)]
        }

        async fn run(on_failure: OnFailure, (ordering, batch_size): (MessageOrder, usize)) -> Ran {
            let mut policy = stub::policy();
            policy.max_message_bytes = None;
            policy.ordering = ordering;
            policy.batch_size = batch_size;
            policy.dead_letter = Some(DeadLetterConfig {
                on_failure,
                ..DeadLetterConfig::default()
            });
            let poison = |size: usize| Some(Bytes::from(vec![0xff; size]));
            let messages: Vec<_> = [
                (None, Some(Bytes::from("none"))),
                (None, poison(10)),            // whole
                (None, poison(20_000)),        // over the producer's limit: reduced first
                (None, poison(8_000)),         // refused by the broker, then reduced
                (Some("refused"), poison(10)), // refused even reduced
                (None, Some(Bytes::from("none"))),
            ]
            .into_iter()
            .enumerate()
            .map(|(offset, (key, payload))| {
                let message = Message::new(crate::PartitionId::new("t", 0), offset as i64, payload);
                match key {
                    Some(key) => message.with_key(key),
                    None => message,
                }
            })
            .collect();
            let stub = stub::lane(policy);
            stub.hold(6);
            let stub::Stub {
                task,
                sink,
                acks,
                mut failures,
                metrics,
                ..
            } = stub;
            let (_runtime, inbox) = stub::inbox([messages]);
            let all_acked = stub::until(|| acks.offsets().len() >= 6);
            tokio::select! {
                () = task.run(inbox) => {}
                () = all_acked => {}
            }
            Ran {
                failure: failures.try_recv().ok(),
                acks: acks.offsets(),
                sent: sink.sent(),
                metrics: metrics.encode(),
            }
        }

        #[tokio::test]
        async fn refused_dead_letters_go_out_reduced_and_one_refused_even_so_is_skipped() {
            for mode in modes() {
                let ran = run(OnFailure::Skip, mode).await;
                assert!(ran.failure.is_none(), "{mode:?}: the run goes on");
                let mut acks = ran.acks.clone();
                acks.sort();
                assert_eq!(
                    acks,
                    [0, 1, 2, 3, 4, 5],
                    "{mode:?}: every offset acknowledged"
                );
                // Reduced forms after a refusal are sent on tasks of their own:
                // compared in offset order.
                let mut sent: Vec<(&str, Option<&str>, usize)> = (ran.sent.iter())
                    .map(|r| {
                        (
                            r.headers.get_str(header::OFFSET).unwrap(),
                            r.headers.get_str(header::TRUNCATED),
                            r.payload.as_ref().map_or(0, Bytes::len),
                        )
                    })
                    .collect();
                sent.sort();
                assert_eq!(
                    sent,
                    [
                        ("1", None, 10),
                        ("2", Some("payload"), 4096),
                        ("3", None, 8_000),
                        ("3", Some("payload"), 0),
                        ("4", None, 10),
                        ("4", Some("payload"), 0),
                    ],
                    "{mode:?}"
                );
                for (outcome, count) in [("ok", 2), ("dead_lettered", 3), ("skipped", 1)] {
                    let line = format!(r#"outcome="{outcome}",topic="t",worker="w"}} {count}"#);
                    assert!(
                        ran.metrics.contains(&line),
                        "{mode:?}: {line}\n{}",
                        ran.metrics
                    );
                }
            }
        }

        #[tokio::test]
        async fn a_dead_letter_refused_even_reduced_stops_the_run_by_default_naming_the_way_past() {
            assert_eq!(DeadLetterConfig::default().on_failure, OnFailure::Stop);
            for mode in modes() {
                let ran = run(OnFailure::Stop, mode).await;
                let error = ran.failure.expect("the run stops");
                assert!(
                    matches!(&error, Error::DeadLetter { offset: 4, source, .. } if source.is_refused()),
                    "{mode:?}: {error:?}"
                );
                let text = error.to_string();
                for needle in [
                    "t/0@4",
                    "worker.dead_letter.on_failure = \"skip\"",
                    "--topic t:0 --to-offset 5",
                ] {
                    assert!(text.contains(needle), "{needle:?} in {text}");
                }
                // Later messages may be done meanwhile; the offset tracker
                // commits none past the first unacknowledged one.
                assert!(
                    !ran.acks.contains(&4),
                    "{mode:?}: the message is not acknowledged"
                );
            }
        }
    }
}
