//! Emitting a processed message's outputs: each encoded into a record that
//! continues the input's trace, and handed to the sink with a receipt; the
//! message is acknowledged once all its receipts are settled (see `settle`).

use std::future::Future;
use std::pin::Pin;

use super::LaneTask;
use super::span::within;
use crate::codec::Encode;
use crate::delivery::{Outcome, Receipt};
use crate::output::{Output, Repr};
use crate::sink::{Record, Sink};
use crate::source::Acker;
use crate::trace::TraceParent;
use crate::worker::Worker;

impl<W: Worker, K: Sink, A: Acker> LaneTask<W, K, A> {
    /// Encodes and sends the outputs of the message at `offset`; a message
    /// with none is acknowledged at once. `Err` with the reason when an
    /// output cannot be encoded: then none of them is sent.
    pub(super) async fn emit(
        &self,
        offset: i64,
        outputs: Repr<W::Output>,
        trace: Option<&TraceParent>,
        span: &tracing::Span,
    ) -> Result<(), String> {
        match outputs {
            Repr::None => {
                self.ack(offset, Outcome::Processed);
                Ok(())
            }
            Repr::One(output) => {
                let record = self.record(output, trace)?;
                let receipt = self.ledger.receipt(offset, Outcome::Processed, 1);
                self.send_record(record, receipt, span).await;
                span.in_scope(|| tracing::debug!(outputs = 1, "outputs sent"));
                Ok(())
            }
            Repr::Many(outputs) => self.emit_many(offset, outputs, trace, span).await,
        }
    }

    /// Encodes and sends several outputs of a message. Boxed, so that it does
    /// not add to the size of every message's future; such a message
    /// allocates its outputs anyway.
    fn emit_many<'a>(
        &'a self,
        offset: i64,
        outputs: Vec<Output<W::Output>>,
        trace: Option<&'a TraceParent>,
        span: &'a tracing::Span,
    ) -> Pin<Box<dyn Future<Output = Result<(), String>> + Send + 'a>> {
        Box::pin(async move {
            // All are encoded before any is sent: an output that cannot be
            // encoded fails the message with none of its outputs sent.
            let mut records = Vec::with_capacity(outputs.len());
            for output in outputs {
                records.push(self.record(output, trace)?);
            }
            let parts = u32::try_from(records.len()).unwrap_or(u32::MAX);
            for record in records {
                let receipt = self.ledger.receipt(offset, Outcome::Processed, parts);
                self.send_record(record, receipt, span).await;
            }
            span.in_scope(|| tracing::debug!(outputs = parts, "outputs sent"));
            Ok(())
        })
    }

    /// Hands one record to the sink within the message's span. Not an `async
    /// fn`: it adds no layer of state around the sink's own future.
    fn send_record<'a>(
        &'a self,
        record: Record,
        receipt: Receipt,
        span: &'a tracing::Span,
    ) -> impl Future<Output = ()> + Send + 'a {
        within(
            span,
            span.in_scope(|| self.shared.sink.send(record, receipt)),
        )
    }

    /// An output as a record, continuing the input's trace.
    fn record(
        &self,
        output: Output<W::Output>,
        trace: Option<&TraceParent>,
    ) -> Result<Record, String> {
        let payload = W::Codec::encode(&output.value)
            .map_err(|error| format!("an output could not be encoded: {error}"))?;
        let mut record = Record {
            topic: output.topic,
            sink: output.sink.or(W::SPEC.default_sink),
            key: output.key,
            payload: Some(payload),
            headers: output.headers,
        };
        if let Some(trace) = trace {
            trace.inject(&mut record.headers);
        }
        Ok(record)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::Ordering;

    use super::*;
    use crate::lane::stub::{self, Out};
    use crate::trace::TRACEPARENT;

    const PARENT: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    fn text(value: &str) -> Output<Out> {
        Output::new(Out::Text(value.into()))
    }

    #[tokio::test]
    async fn an_output_goes_out_as_a_record_continuing_the_trace() {
        let stub = stub::lane(stub::policy());
        stub.hold(1);
        let trace = TraceParent::parse(PARENT).unwrap();
        let span = tracing::Span::none();
        let output = text("hello").key("k").to_topic("elsewhere");
        let emitted = stub
            .task
            .emit(7, Repr::One(output), Some(&trace), &span)
            .await;
        assert_eq!(emitted, Ok(()));
        let sent = stub.sink.sent();
        assert_eq!(
            stub::payloads(&sent),
            [r#""hello""#],
            "encoded by the codec"
        );
        assert_eq!(sent[0].key.as_deref(), Some(&b"k"[..]));
        assert_eq!(sent[0].topic.as_deref(), Some("elsewhere"));
        // The trace context the message's step continues (`continue_trace`).
        let carried = TraceParent::from_headers(&sent[0].headers).unwrap();
        assert_eq!(carried.trace_id(), trace.trace_id());
        assert_eq!(carried.parent_id(), trace.parent_id());
        // Delivered: acknowledged once the report is settled.
        assert!(stub.task.settle());
        assert_eq!(stub.acks.offsets(), [7]);
    }

    #[tokio::test]
    async fn a_message_of_several_outputs_is_acknowledged_once_all_are_delivered() {
        let stub = stub::lane(stub::policy());
        stub.sink.hold.store(true, Ordering::Relaxed);
        stub.hold(1);
        let span = tracing::Span::none();
        let outputs = Repr::Many(vec![text("a"), text("b"), text("c")]);
        stub.task.emit(3, outputs, None, &span).await.unwrap();
        let sent = stub.sink.sent();
        assert_eq!(stub::payloads(&sent), [r#""a""#, r#""b""#, r#""c""#]);
        assert!(
            sent.iter().all(|r| r.headers.get(TRACEPARENT).is_none()),
            "no trace to continue"
        );
        assert!(
            stub.task.settle() && stub.acks.offsets().is_empty(),
            "nothing delivered yet"
        );
        stub.sink.settle_held(|| Ok(()));
        assert!(stub.task.settle());
        assert_eq!(stub.acks.offsets(), [3], "once, for all three");
    }

    #[tokio::test]
    async fn a_message_without_outputs_is_acknowledged_at_once() {
        let stub = stub::lane(stub::policy());
        stub.hold(1);
        let span = tracing::Span::none();
        stub.task.emit(5, Repr::None, None, &span).await.unwrap();
        assert!(stub.sink.sent().is_empty());
        stub.task.flush_acks();
        assert_eq!(stub.acks.offsets(), [5]);
    }

    #[tokio::test]
    async fn an_output_that_cannot_be_encoded_fails_the_message_with_nothing_sent() {
        let stub = stub::lane(stub::policy());
        let span = tracing::Span::none();
        let unencodable = || Output::new(Out::Unencodable);
        for outputs in [
            Repr::One(unencodable()),
            Repr::Many(vec![text("a"), unencodable(), text("c")]),
        ] {
            let reason = stub.task.emit(1, outputs, None, &span).await.unwrap_err();
            assert!(
                reason.starts_with("an output could not be encoded: "),
                "{reason}"
            );
            assert!(reason.contains("scripted to fail"), "{reason}");
        }
        assert!(stub.sink.sent().is_empty());
        assert!(stub.task.ledger.is_idle(), "no receipt handed out");
    }
}
