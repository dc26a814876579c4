//! Batched scheduling (`batch_size` above 1): up to `batch_size` messages at
//! a time, or what arrived within `batch_timeout`, handed to
//! `process_batch` together, in offset order.

use bytes::Bytes;
use tokio::sync::OwnedSemaphorePermit;

use super::LaneTask;
use super::attempt::process_failure;
use super::handle::{Handled, Step, encode_failure};
use super::inbox::Inbox;
use super::permits::Wait;
use crate::error::{Error, ProcessError};
use crate::message::Message;
use crate::output::Outputs;
use crate::panic::panic_text;
use crate::policy::Decision;
use crate::sink::Sink;
use crate::source::Acker;
use crate::trace::continue_trace;
use crate::worker::Worker;

impl<W: Worker, K: Sink, A: Acker> LaneTask<W, K, A> {
    pub(super) async fn run_batched(&self, mut inbox: Inbox) {
        let policy = &self.shared.policy;
        let (size, timeout) = (policy.batch_size, policy.batch_timeout);
        let mut stopping = false;
        let stopped = self.stop.clone().cancelled_owned();
        tokio::pin!(stopped);
        loop {
            if !inbox.has_waiting() {
                self.flush_acks();
            }
            if stopping {
                let _ = self.settle_pending().await;
                return;
            }
            let first = match self.settling(inbox.recv_until(&mut stopped)).await {
                Ok(Some(first)) => first,
                Ok(None) => {
                    stopping = true;
                    continue;
                }
                Err(_) => return,
            };
            let mut batch = Vec::with_capacity(size);
            batch.push(first);
            inbox.fill(&mut batch, size, timeout, &mut stopped).await;
            let permits = match self.permits(batch.len()).await {
                Ok(permits) => permits,
                Err(Wait::Fail) => return,
                Err(_) => Vec::new(),
            };
            if permits.len() < batch.len() {
                // Stopped before the batch could start: none of it ran.
                stopping = true;
                continue;
            }
            match self.handle_batch(batch, permits).await {
                Step::Next => {}
                Step::Stop => stopping = true,
                Step::End => return,
            }
        }
    }

    /// Decodes a batch, runs `process_batch` on what decoded, and sends each
    /// message's outputs or dead letter. A failed message gets the rest of its
    /// attempts one by one; a panicking batch is processed message by message.
    /// When the lane is stopped midway, the rest of the batch is dropped
    /// unacknowledged.
    async fn handle_batch(
        &self,
        batch: Vec<Message<Option<Bytes>>>,
        permits: Vec<OwnedSemaphorePermit>,
    ) -> Step {
        let mut raws = Vec::with_capacity(batch.len());
        let mut decoded = Vec::with_capacity(batch.len());
        for (raw, permit) in batch.into_iter().zip(permits) {
            let failure = match self.decode(&raw, 0) {
                Ok(message) => {
                    decoded.push(message);
                    raws.push((raw, permit));
                    continue;
                }
                Err(failure) => failure,
            };
            let decision = self.shared.policy.decide(&failure);
            let span = tracing::Span::none();
            let handled = self
                .after_failure(raw, failure, decision, permit, None, span)
                .await;
            match self.absorb(handled).0 {
                Step::Next => {}
                stop => return stop,
            }
        }
        if raws.is_empty() {
            return Step::Next;
        }
        let count = raws.len();
        let started = std::time::Instant::now();
        let result = self
            .run_handler(&tracing::Span::none(), || {
                self.shared.worker.process_batch(decoded, &self.shared.ctx)
            })
            .await;
        if let Some(metrics) = &self.metrics {
            metrics.observe_duration(started.elapsed().as_secs_f64() / count as f64);
        }
        let results: Vec<Option<Result<Outputs<W::Output>, ProcessError>>> = match result {
            Ok(results) if results.len() == count => results.into_iter().map(Some).collect(),
            Ok(results) => {
                self.fail(Error::Lane {
                    partition: self.partition.clone(),
                    reason: format!(
                        "process_batch returned {} results for {count} messages",
                        results.len()
                    ),
                });
                return Step::End;
            }
            Err(panic) => {
                tracing::warn!(
                    partition = %self.partition,
                    panic = %panic_text(&*panic),
                    "process_batch panicked; processing the batch message by message"
                );
                (0..count).map(|_| None).collect()
            }
        };
        for ((raw, permit), result) in raws.into_iter().zip(results) {
            let handled = self.finish_item(raw, permit, result).await;
            match self.absorb(handled).0 {
                Step::Next => {}
                stop => return stop,
            }
        }
        Step::Next
    }

    /// What follows `process_batch` for one of its messages: its outputs
    /// sent, or its failure decided by the policy — where that says retry,
    /// the message is retried alone at once with `process`. `None`: the
    /// batch panicked, and the message is processed alone.
    async fn finish_item(
        &self,
        raw: Message<Option<Bytes>>,
        permit: OwnedSemaphorePermit,
        result: Option<Result<Outputs<W::Output>, ProcessError>>,
    ) -> Result<Handled, Error> {
        let (failure, trace, span) = match result {
            None => return self.handle_from(raw, permit, 0).await,
            Some(Ok(outputs)) => {
                // Each message of the batch is a step of its own trace: its
                // span covers the sending of its outputs.
                let span = self.message_span(raw.offset());
                let trace = continue_trace(&span, raw.headers());
                let outputs = outputs.into_repr();
                match self
                    .emit(raw.offset(), outputs, trace.as_ref(), &span)
                    .await
                {
                    Ok(()) => return Ok(Handled::Sent(permit)),
                    Err(reason) => (encode_failure(reason, 1), trace, span),
                }
            }
            Some(Err(error)) => (process_failure(&error, 1), None, tracing::Span::none()),
        };
        let decision = self.shared.policy.decide(&failure);
        if let Decision::Retry { .. } = decision {
            // The remaining attempts, one message at a time.
            tracing::warn!(
                message = %format_args!("{}@{}", self.partition, raw.offset()),
                error = %failure.reason,
                "batch item failed; retrying it alone"
            );
            return self.handle_from(raw, permit, failure.attempts).await;
        }
        self.after_failure(raw, failure, decision, permit, trace, span)
            .await
    }
}

#[cfg(test)]
mod tests {
    use crate::dead_letter::header;
    use crate::lane::stub;

    fn batched(size: usize) -> crate::lane::FailurePolicy {
        let mut policy = stub::policy();
        policy.batch_size = size;
        policy
    }

    #[tokio::test]
    async fn messages_go_to_process_batch_together_and_out_in_offset_order() {
        let stub = stub::lane(batched(3));
        stub.hold(5);
        let payloads = ["m0", "m1", "m2", "m3", "m4"];
        let messages = (0..)
            .zip(payloads)
            .map(|(o, p)| stub::message(o, p))
            .collect();
        let (_runtime, inbox) = stub::inbox([messages]);
        let all_acked = stub::until(|| stub.acks.offsets().len() == 5);
        tokio::select! {
            () = stub.task.run_batched(inbox) => panic!("the lane ended"),
            () = all_acked => {}
        }
        // Full at once, then what is left once the timeout passed.
        assert_eq!(*stub.worker.batches.lock().unwrap(), [3, 2]);
        let sent = stub::payloads(&stub.sink.sent());
        assert_eq!(sent, payloads.map(|p| format!("\"{p}\"")));
        assert_eq!(stub.acks.offsets(), [0, 1, 2, 3, 4]);
    }

    #[tokio::test]
    async fn failed_items_are_retried_alone_or_dead_lettered_by_the_policy() {
        let stub = stub::lane(batched(5));
        stub.hold(5);
        let too_large = "x".repeat(101);
        let (_runtime, inbox) = stub::inbox([vec![
            stub::message(0, "ok"),
            stub::message(1, "fail once"),
            stub::message(2, "permanent"),
            stub::message(3, &too_large),
            stub::message(4, "unencodable"),
        ]]);
        let all_acked = stub::until(|| stub.acks.offsets().len() == 5);
        tokio::select! {
            () = stub.task.run_batched(inbox) => panic!("the lane ended"),
            () = all_acked => {}
        }
        assert_eq!(
            *stub.worker.batches.lock().unwrap(),
            [4],
            "the too large one is not in it"
        );
        // Retried alone at once, without counting as a retry.
        assert_eq!(stub.worker.attempts(1), 2);
        assert!(!stub.counted("retried", 1));
        let sent = stub.sink.sent();
        let letters: Vec<(&str, &str, &str)> = (sent.iter())
            .filter_map(|r| {
                let kind = r.headers.get_str(header::KIND)?;
                let attempts = r.headers.get_str(header::ATTEMPTS)?;
                Some((r.headers.get_str(header::OFFSET)?, kind, attempts))
            })
            .collect();
        assert_eq!(
            letters,
            [
                ("3", "too_large", "0"),
                ("2", "permanent", "1"),
                ("4", "encode", "1")
            ]
        );
        let outputs: Vec<_> = sent.iter().filter(|r| r.topic.is_none()).collect();
        assert_eq!(
            stub::payloads(&outputs.into_iter().cloned().collect::<Vec<_>>()),
            [r#""ok""#, r#""fail once""#]
        );
    }

    #[tokio::test]
    async fn a_panicking_batch_is_processed_message_by_message() {
        let stub = stub::lane(batched(3));
        stub.hold(3);
        let (_runtime, inbox) = stub::inbox([vec![
            stub::message(0, "zero"),
            stub::message(1, "panic"),
            stub::message(2, "two"),
        ]]);
        let all_acked = stub::until(|| stub.acks.offsets().len() == 3);
        tokio::select! {
            () = stub.task.run_batched(inbox) => panic!("the lane ended"),
            () = all_acked => {}
        }
        // The batch stopped at the panic; then each alone: the panicking one
        // is dead-lettered.
        assert_eq!([0, 1, 2].map(|o| stub.worker.attempts(o)), [2, 2, 1]);
        let sent = stub.sink.sent();
        let kinds: Vec<_> = sent
            .iter()
            .filter_map(|r| r.headers.get_str(header::KIND))
            .collect();
        assert_eq!(kinds, ["panic"]);
    }
}
