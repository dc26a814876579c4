//! Stubs for the lane's unit tests, no broker: a worker scripted by its
//! payloads, a sink and an acker that record what they get, and a lane task
//! over them.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use serde::Serialize;
use tokio::sync::{Notify, Semaphore, mpsc};
use tokio_util::sync::CancellationToken;

use super::inbox::Inbox;
use super::{FailurePolicy, LaneState, LaneTask, Shared};
use crate::codec::{Json, Utf8};
use crate::dead_letter::DeadLetterConfig;
use crate::sink::{Receipt, Sink};
use crate::source::Acker;
use crate::{
    Context, Error, Message, Metrics, Outputs, PartitionId, Process, ProcessError, Record,
    RetryConfig, SinkError, Worker,
};

/// The run's processing permits in a stub lane.
pub(super) const PERMITS: usize = 8;

/// An output of [`Scripted`]: text, or a value JSON cannot encode.
#[derive(Debug)]
pub(super) enum Out {
    Text(String),
    Unencodable,
}

impl Serialize for Out {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self {
            Self::Text(text) => serializer.serialize_str(text),
            Self::Unencodable => Err(serde::ser::Error::custom("scripted to fail")),
        }
    }
}

/// Does what its UTF-8 payload says: `none`, `many` (outputs `a`, `b`, `c`),
/// `fail` (transient), `fail once`, `permanent`, `panic`, `panic early`
/// (while its future is made), `unencodable`; anything else is echoed as
/// one output, after 10 ms if it starts with `sleep`. Counts the attempts at
/// each offset.
#[derive(Default)]
pub(super) struct Scripted {
    attempts: Mutex<HashMap<i64, u32>>,
    /// The batches `process_batch` got, by size.
    pub(super) batches: Mutex<Vec<usize>>,
}

impl Scripted {
    pub(super) fn attempts(&self, offset: i64) -> u32 {
        self.attempts
            .lock()
            .unwrap()
            .get(&offset)
            .copied()
            .unwrap_or(0)
    }
}

impl Process for Scripted {
    type Input = String;
    type Output = Out;

    fn process(
        &self,
        message: Message<String>,
        _: &Context,
    ) -> impl Future<Output = Result<Outputs<Out>, ProcessError>> + Send {
        let attempt = {
            let mut attempts = self.attempts.lock().unwrap();
            let attempt = attempts.entry(message.offset()).or_default();
            *attempt += 1;
            *attempt
        };
        let script = message.into_payload();
        assert!(script != "panic early", "scripted early panic");
        async move {
            match script.as_str() {
                "none" => Ok(Outputs::none()),
                "many" => Ok(Outputs::many(["a", "b", "c"].map(|s| Out::Text(s.into())))),
                "fail" => Err(ProcessError::msg("scripted transient failure")),
                "fail once" if attempt == 1 => Err(ProcessError::msg("scripted transient failure")),
                "permanent" => Err(ProcessError::permanent("scripted permanent failure")),
                "panic" => panic!("scripted panic"),
                "unencodable" => Ok(Outputs::one(Out::Unencodable)),
                _ => {
                    if script.starts_with("sleep") {
                        tokio::time::sleep(Duration::from_millis(10)).await;
                    }
                    Ok(Outputs::one(Out::Text(script)))
                }
            }
        }
    }

    async fn process_batch(
        &self,
        messages: Vec<Message<String>>,
        ctx: &Context,
    ) -> Vec<Result<Outputs<Out>, ProcessError>> {
        self.batches.lock().unwrap().push(messages.len());
        let mut results = Vec::with_capacity(messages.len());
        for message in messages {
            results.push(self.process(message, ctx).await);
        }
        results
    }
}

impl Worker for Scripted {
    type Codec = (Utf8, Json);
}

/// Records what it is handed, in order, and how many calls it took.
#[derive(Clone, Default)]
pub(super) struct Acks {
    offsets: Arc<Mutex<Vec<i64>>>,
    calls: Arc<AtomicUsize>,
}

impl Acks {
    pub(super) fn offsets(&self) -> Vec<i64> {
        self.offsets.lock().unwrap().clone()
    }

    pub(super) fn calls(&self) -> usize {
        self.calls.load(Ordering::Relaxed)
    }
}

impl Acker for Acks {
    fn ack(&self, partition: &PartitionId, offset: i64) {
        self.ack_many(partition, &[offset]);
    }

    fn ack_many(&self, _: &PartitionId, offsets: &[i64]) {
        self.calls.fetch_add(1, Ordering::Relaxed);
        self.offsets.lock().unwrap().extend_from_slice(offsets);
    }
}

/// Records the records it is sent; settles each at once as delivered, as
/// refused when its key is `refused` or its payload over 5,000 bytes (the
/// "broker's" limit), or holds them for the test to settle. Its producer's
/// limit is 10,000 bytes.
#[derive(Default)]
pub(super) struct Recorder {
    sent: Mutex<Vec<Record>>,
    held: Mutex<Vec<Receipt>>,
    pub(super) hold: AtomicBool,
}

impl Recorder {
    pub(super) fn sent(&self) -> Vec<Record> {
        self.sent.lock().unwrap().clone()
    }

    /// Settles every held receipt with `result`.
    pub(super) fn settle_held(&self, result: impl Fn() -> Result<(), SinkError>) {
        for receipt in std::mem::take(&mut *self.held.lock().unwrap()) {
            receipt.settle(result());
        }
    }
}

impl Sink for Recorder {
    async fn send(&self, record: Record, receipt: Receipt) {
        let refused = record.key.as_deref() == Some(b"refused")
            || record.payload.as_ref().is_some_and(|p| p.len() > 5_000);
        self.sent.lock().unwrap().push(record);
        if self.hold.load(Ordering::Relaxed) {
            self.held.lock().unwrap().push(receipt);
        } else if refused {
            receipt.settle(Err(SinkError::Refused {
                topic: "t".into(),
                reason: "Broker: Message size too large".into(),
            }));
        } else {
            receipt.settle(Ok(()));
        }
    }

    fn max_record_bytes(&self) -> Option<usize> {
        Some(10_000)
    }
}

/// Retries of 1 ms at most 3 attempts, dead letters on, payloads of at most
/// 100 bytes, in order one at a time.
pub(super) fn policy() -> FailurePolicy {
    FailurePolicy {
        retry: RetryConfig {
            max_attempts: 3,
            initial_backoff: Duration::from_millis(1),
            max_backoff: Duration::from_millis(1),
            multiplier: 1.0,
            jitter: 0.0,
        },
        dead_letter: Some(DeadLetterConfig::default()),
        max_message_bytes: Some(100),
        ordering: crate::MessageOrder::Partition,
        batch_size: 1,
        batch_timeout: Duration::from_millis(5),
    }
}

/// A lane task of partition `t/0` over the stubs, with what the test looks at.
pub(super) struct Stub {
    pub(super) task: LaneTask<Scripted, Recorder, Acks>,
    pub(super) worker: Arc<Scripted>,
    pub(super) sink: Arc<Recorder>,
    pub(super) acks: Acks,
    pub(super) failures: mpsc::UnboundedReceiver<Error>,
    pub(super) metrics: Metrics,
}

pub(super) fn lane(policy: FailurePolicy) -> Stub {
    let (failures, failed) = mpsc::unbounded_channel();
    let worker = Arc::new(Scripted::default());
    let sink = Arc::new(Recorder::default());
    let acks = Acks::default();
    let metrics = Metrics::new();
    let shared = Arc::new(Shared {
        worker: worker.clone(),
        sink: sink.clone(),
        acker: acks.clone(),
        permits: Arc::new(Semaphore::new(PERMITS)),
        ctx: Context::detached("w"),
        wake: Arc::new(Notify::new()),
        resume_at: 1,
        resume_bytes: usize::MAX,
        failures,
        processed: AtomicU64::new(0),
        policy,
        metrics: Some(metrics.clone()),
        events: crate::events::Events::new(),
    });
    let task = LaneTask::new(
        PartitionId::new("t", 0),
        shared,
        Arc::new(LaneState::default()),
        CancellationToken::new(),
    );
    Stub {
        task,
        worker,
        sink,
        acks,
        failures: failed,
        metrics,
    }
}

/// The message at `offset` of `t/0` with this payload.
pub(super) fn message(offset: i64, payload: &str) -> Message<Option<Bytes>> {
    Message::new(
        PartitionId::new("t", 0),
        offset,
        Some(Bytes::copy_from_slice(payload.as_bytes())),
    )
}

/// The payloads of records, as text.
pub(super) fn payloads(records: &[Record]) -> Vec<String> {
    records
        .iter()
        .map(|r| String::from_utf8_lossy(r.payload.as_deref().unwrap_or_default()).into_owned())
        .collect()
}

impl Stub {
    /// Counts `n` messages as dispatched to the lane, as the runtime does.
    pub(super) fn hold(&self, n: usize) {
        self.task.state.held.fetch_add(n, Ordering::AcqRel);
    }

    /// Asks the lane to stop, as [`Lane::stop`](super::Lane::stop) does.
    pub(super) fn stop(&self) {
        self.task.state.stopping.store(true, Ordering::Release);
        self.task.stop.cancel();
    }

    /// A line of the `pythia_messages_total` counter, present or not.
    pub(super) fn counted(&self, outcome: &str, count: u64) -> bool {
        let line = format!(r#"outcome="{outcome}",topic="t",worker="w"}} {count}"#);
        self.task.metrics.as_ref().unwrap().flush();
        self.metrics.encode().contains(&line)
    }
}

/// An inbox holding `runs`, and the runtime's end of it.
pub(super) fn inbox(
    runs: impl IntoIterator<Item = Vec<Message<Option<Bytes>>>>,
) -> (mpsc::UnboundedSender<Vec<Message<Option<Bytes>>>>, Inbox) {
    let (tx, rx) = mpsc::unbounded_channel();
    for run in runs {
        tx.send(run).unwrap();
    }
    (tx, Inbox::new(rx))
}

/// Waits until `done` holds, for at most 5 seconds.
pub(super) async fn until(done: impl Fn() -> bool) {
    let waited = tokio::time::timeout(Duration::from_secs(5), async {
        while !done() {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    });
    waited.await.expect("in time");
}
