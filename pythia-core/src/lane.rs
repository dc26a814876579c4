//! A lane: the ordered, sequential processing of one partition.
//!
//! Each assigned partition gets a lane task. It decodes, processes and sends the
//! outputs of its messages one at a time, in offset order; deliveries complete in
//! the background and acknowledge the input when all its outputs are confirmed.

use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};

use bytes::Bytes;
use futures::stream::FuturesUnordered;
use futures::{FutureExt, StreamExt};
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore, mpsc};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::codec::{Decode, Encode};
use crate::error::Error;
use crate::message::{Message, PartitionId};
use crate::sink::{Record, Sink, SinkError};
use crate::source::Acker;
use crate::worker::{Context, Worker};

/// What the runtime and a lane share about it.
#[derive(Debug, Default)]
pub(crate) struct LaneState {
    /// Messages dispatched to the lane and not yet acknowledged or dropped.
    held: AtomicUsize,
    /// Whether the runtime paused the partition's fetching.
    paused: AtomicBool,
}

impl LaneState {
    pub(crate) fn held(&self) -> usize {
        self.held.load(Ordering::Acquire)
    }

    pub(crate) fn is_paused(&self) -> bool {
        self.paused.load(Ordering::Acquire)
    }

    pub(crate) fn set_paused(&self, paused: bool) {
        self.paused.store(paused, Ordering::Release);
    }
}

/// What every lane of a run shares.
pub(crate) struct Shared<W, K, A> {
    pub(crate) worker: Arc<W>,
    pub(crate) sink: Arc<K>,
    pub(crate) acker: A,
    pub(crate) permits: Arc<Semaphore>,
    pub(crate) ctx: Context,
    /// Wakes the runtime to resume paused partitions.
    pub(crate) wake: Arc<Notify>,
    /// A held count at or below which a paused partition resumes.
    pub(crate) resume_at: usize,
    pub(crate) failures: mpsc::UnboundedSender<Error>,
    pub(crate) processed: AtomicU64,
}

/// The runtime's handle on a running lane.
pub(crate) struct Lane {
    tx: mpsc::UnboundedSender<Message<Option<Bytes>>>,
    pub(crate) state: Arc<LaneState>,
    stop: CancellationToken,
    task: JoinHandle<()>,
}

impl Lane {
    pub(crate) fn spawn<W, K, A>(partition: PartitionId, shared: Arc<Shared<W, K, A>>) -> Self
    where
        W: Worker,
        K: Sink,
        A: Acker,
    {
        let (tx, rx) = mpsc::unbounded_channel();
        let state = Arc::new(LaneState::default());
        let stop = CancellationToken::new();
        let run = LaneTask {
            partition,
            rx,
            state: state.clone(),
            stop: stop.clone(),
            shared,
        };
        Self {
            tx,
            state,
            stop,
            task: tokio::spawn(run.run()),
        }
    }

    /// Queues a message; returns the number the lane now holds.
    pub(crate) fn push(&self, message: Message<Option<Bytes>>) -> usize {
        let held = self.state.held.fetch_add(1, Ordering::AcqRel) + 1;
        // The receiver lives until the task ends, which only happens after `stop`.
        let _ = self.tx.send(message);
        held
    }

    /// Asks the lane to finish the message it is on, wait for pending deliveries,
    /// and drop the rest.
    pub(crate) fn stop(&self) {
        self.stop.cancel();
    }

    /// Stops the lane and waits for it, abandoning its work after `deadline`.
    /// Returns whether it finished in time.
    pub(crate) async fn finish(self, deadline: tokio::time::Instant) -> bool {
        self.stop.cancel();
        let mut task = self.task;
        match tokio::time::timeout_at(deadline, &mut task).await {
            Ok(_) => true,
            Err(_) => {
                task.abort();
                false
            }
        }
    }

    /// Abandons the lane at once.
    pub(crate) fn abort(self) {
        self.task.abort();
    }
}

type Pending = Pin<Box<dyn std::future::Future<Output = (i64, Result<(), SinkError>)> + Send>>;

struct LaneTask<W, K, A> {
    partition: PartitionId,
    rx: mpsc::UnboundedReceiver<Message<Option<Bytes>>>,
    state: Arc<LaneState>,
    stop: CancellationToken,
    shared: Arc<Shared<W, K, A>>,
}

impl<W: Worker, K: Sink, A: Acker> LaneTask<W, K, A> {
    async fn run(mut self) {
        let mut pending: FuturesUnordered<Pending> = FuturesUnordered::new();
        let mut stopping = false;
        loop {
            tokio::select! {
                biased;
                Some((offset, result)) = pending.next(), if !pending.is_empty() => {
                    if let Err(source) = result {
                        self.fail(Error::Delivery { partition: self.partition.clone(), offset, source });
                        return;
                    }
                    self.ack(offset);
                }
                () = self.stop.cancelled(), if !stopping => stopping = true,
                message = self.rx.recv(), if !stopping => {
                    let Some(message) = message else { stopping = true; continue };
                    let permit = tokio::select! {
                        biased;
                        () = self.stop.cancelled() => { stopping = true; continue }
                        permit = self.shared.permits.clone().acquire_owned() => match permit {
                            Ok(permit) => permit,
                            Err(_) => return, // the run is over
                        },
                    };
                    match self.handle(message, permit).await {
                        Ok(Some(delivery)) => pending.push(delivery),
                        Ok(None) => {}
                        Err(error) => {
                            self.fail(error);
                            return;
                        }
                    }
                }
                else => return,
            }
        }
    }

    /// Decodes, processes and sends one message. Returns the pending delivery of
    /// its outputs, or `None` when it had none and is already acknowledged.
    async fn handle(
        &self,
        raw: Message<Option<Bytes>>,
        permit: OwnedSemaphorePermit,
    ) -> Result<Option<Pending>, Error> {
        let offset = raw.offset();
        let span = tracing::debug_span!(
            "message",
            worker = %self.shared.ctx.worker(),
            topic = %self.partition.topic(),
            partition = self.partition.index(),
            offset,
        );
        async {
            let message = raw
                .try_map(|payload| W::Codec::decode(payload.as_ref()))
                .map_err(|source| Error::Decode {
                    partition: self.partition.clone(),
                    offset,
                    source,
                })?;
            let result = AssertUnwindSafe(self.shared.worker.process(message, &self.shared.ctx))
                .catch_unwind()
                .await;
            let outputs = match result {
                Ok(Ok(outputs)) => outputs.into_vec(),
                Ok(Err(error)) => {
                    return Err(Error::Process {
                        partition: self.partition.clone(),
                        offset,
                        reason: error.to_string(),
                    });
                }
                Err(panic) => {
                    return Err(Error::Process {
                        partition: self.partition.clone(),
                        offset,
                        reason: format!("process panicked: {}", panic_text(&*panic)),
                    });
                }
            };
            if outputs.is_empty() {
                drop(permit);
                self.ack(offset);
                return Ok(None);
            }
            let mut deliveries = Vec::with_capacity(outputs.len());
            for output in outputs {
                let payload = W::Codec::encode(&output.value).map_err(|source| Error::Encode {
                    partition: self.partition.clone(),
                    offset,
                    source,
                })?;
                let record = Record {
                    topic: output.topic,
                    key: output.key,
                    payload,
                    headers: output.headers,
                };
                let delivery =
                    self.shared
                        .sink
                        .send(record)
                        .await
                        .map_err(|source| Error::Delivery {
                            partition: self.partition.clone(),
                            offset,
                            source,
                        })?;
                deliveries.push(delivery);
            }
            tracing::debug!(outputs = deliveries.len(), "outputs sent");
            let pending: Pending = Box::pin(async move {
                let result = futures::future::try_join_all(deliveries).await.map(drop);
                drop(permit);
                (offset, result)
            });
            Ok(Some(pending))
        }
        .instrument(span)
        .await
    }

    fn ack(&self, offset: i64) {
        self.shared.acker.ack(&self.partition, offset);
        self.shared.processed.fetch_add(1, Ordering::Relaxed);
        let held = self.state.held.fetch_sub(1, Ordering::AcqRel) - 1;
        if held <= self.shared.resume_at && self.state.is_paused() {
            self.shared.wake.notify_one();
        }
    }

    fn fail(&self, error: Error) {
        // Logged once, by the runtime, which stops the run.
        let _ = self.shared.failures.send(error);
    }
}

fn panic_text(panic: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = panic.downcast_ref::<&str>() {
        (*s).to_owned()
    } else if let Some(s) = panic.downcast_ref::<String>() {
        s.clone()
    } else {
        "non-string panic payload".to_owned()
    }
}
