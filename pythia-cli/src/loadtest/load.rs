//! The load: numbered messages produced to a topic, as fast as possible or at a
//! fixed rate.
//!
//! Message `i` goes to partition `i % partitions`, so every partition gets the
//! same share, and carries `i` in its first 8 bytes (little-endian); the rest of
//! the payload is filler up to the message size.
//!
//! Before the load, one warm-up message numbered [`WARM_UP_ID`] is delivered, so
//! the producer has its metadata and idempotent producer id before the clock
//! starts; the instances process it like any other and the tally ignores it.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, mpsc};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use rdkafka::ClientConfig;
use rdkafka::ClientContext;
use rdkafka::producer::{BaseProducer, BaseRecord, DeliveryResult, Producer, ProducerContext};

/// Counts the broker's delivery reports.
#[derive(Default)]
pub(crate) struct Deliveries {
    /// Messages the broker acknowledged.
    pub(crate) delivered: AtomicU64,
    /// Messages that could not be delivered.
    pub(crate) failed: AtomicU64,
}

struct Context(Arc<Deliveries>);

impl ClientContext for Context {}

impl ProducerContext for Context {
    type DeliveryOpaque = ();

    fn delivery(&self, result: &DeliveryResult<'_>, _: ()) {
        let counter = match result {
            Ok(_) => &self.0.delivered,
            Err(_) => &self.0.failed,
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }
}

/// How fast to produce.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Pace {
    /// As fast as the producer takes them.
    Flat,
    /// This many messages per second.
    Rate(f64),
}

/// What to produce.
#[derive(Clone, Debug)]
pub(crate) struct Plan {
    pub(crate) topic: String,
    pub(crate) partitions: i32,
    pub(crate) messages: u64,
    pub(crate) message_size: usize,
    pub(crate) pace: Pace,
    /// Deliver a warm-up message first (see [`WARM_UP_ID`]).
    pub(crate) warm_up: bool,
}

/// The number of the warm-up message.
pub(crate) const WARM_UP_ID: u64 = u64::MAX;

/// The payload of message `id`.
pub(crate) fn payload(id: u64, size: usize) -> Vec<u8> {
    let mut payload: Vec<u8> = (0..size.max(8)).map(|i| b'a' + (i % 26) as u8).collect();
    payload[..8].copy_from_slice(&id.to_le_bytes());
    payload
}

/// A producer running on its own thread.
pub(crate) struct Load {
    pub(crate) deliveries: Arc<Deliveries>,
    ready: mpsc::Receiver<()>,
    go: mpsc::Sender<()>,
    thread: JoinHandle<anyhow::Result<()>>,
}

impl Load {
    /// Prepares to produce `plan` with a producer made from `client`: warms up,
    /// then waits for [`Load::go`].
    pub(crate) fn prepare(client: &ClientConfig, plan: Plan) -> anyhow::Result<Self> {
        let deliveries = Arc::new(Deliveries::default());
        let producer: BaseProducer<Context> = client
            .create_with_context(Context(deliveries.clone()))
            .context("creating the load producer")?;
        let (ready_tx, ready) = mpsc::channel();
        let (go, go_rx) = mpsc::channel();
        let counters = deliveries.clone();
        let thread = std::thread::Builder::new()
            .name("pythia-load".into())
            .spawn(move || {
                if plan.warm_up {
                    warm_up(&producer, &plan)?;
                    counters.delivered.store(0, Ordering::Relaxed);
                }
                let _ = ready_tx.send(());
                if go_rx.recv().is_err() {
                    return Ok(());
                }
                produce(&producer, &plan)
            })
            .context("starting the load thread")?;
        Ok(Self {
            deliveries,
            ready,
            go,
            thread,
        })
    }

    /// Prepares and starts at once.
    pub(crate) fn start(client: &ClientConfig, plan: Plan) -> anyhow::Result<Self> {
        let load = Self::prepare(client, plan)?;
        load.wait_ready()?;
        load.go();
        Ok(load)
    }

    /// Waits until the warm-up message is delivered.
    pub(crate) fn wait_ready(&self) -> anyhow::Result<()> {
        if self.ready.recv().is_err() {
            // The thread ended early: its result says why.
            return Err(anyhow::anyhow!(
                "the load producer stopped while warming up"
            ));
        }
        Ok(())
    }

    /// Starts the load.
    pub(crate) fn go(&self) {
        let _ = self.go.send(());
    }

    /// Whether every message has been sent and reported on.
    pub(crate) fn is_finished(&self) -> bool {
        self.thread.is_finished()
    }

    /// Waits for the end of the load.
    pub(crate) fn join(self) -> anyhow::Result<()> {
        self.thread
            .join()
            .map_err(|_| anyhow::anyhow!("the load thread panicked"))?
    }
}

fn warm_up(producer: &BaseProducer<Context>, plan: &Plan) -> anyhow::Result<()> {
    let body = payload(WARM_UP_ID, plan.message_size);
    let record: BaseRecord<'_, [u8], [u8]> =
        BaseRecord::to(&plan.topic).payload(&body[..]).partition(0);
    producer
        .send(record)
        .map_err(|(error, _)| error)
        .context("producing the warm-up message")?;
    producer
        .flush(Duration::from_secs(30))
        .context("the warm-up message was not delivered within 30 s; check the brokers")?;
    Ok(())
}

fn produce(producer: &BaseProducer<Context>, plan: &Plan) -> anyhow::Result<()> {
    let started = Instant::now();
    let mut body = payload(0, plan.message_size);
    for id in 0..plan.messages {
        if let Pace::Rate(rate) = plan.pace {
            let due = started + Duration::from_secs_f64(id as f64 / rate);
            let now = Instant::now();
            if due > now {
                producer.poll(Duration::ZERO);
                std::thread::sleep(due - now);
            }
        }
        body[..8].copy_from_slice(&id.to_le_bytes());
        let mut record: BaseRecord<'_, [u8], [u8]> = BaseRecord::to(&plan.topic)
            .payload(&body[..])
            .partition((id % plan.partitions as u64) as i32);
        loop {
            match producer.send(record) {
                Ok(()) => break,
                Err((
                    rdkafka::error::KafkaError::MessageProduction(
                        rdkafka::types::RDKafkaErrorCode::QueueFull,
                    ),
                    back,
                )) => {
                    record = back;
                    producer.poll(Duration::from_millis(5));
                }
                Err((error, _)) => {
                    return Err(error).context("producing the load");
                }
            }
        }
        if id.is_multiple_of(1024) {
            producer.poll(Duration::ZERO);
        }
    }
    producer
        .flush(Duration::from_secs(60))
        .context("the load was not delivered within 60 s")?;
    Ok(())
}
