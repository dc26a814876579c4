//! End-to-end tests of a worker on an in-process broker: give it inputs, run
//! it until every input is committed, then look at what it wrote.
//!
//! [`TestRun`] starts an [`EmbeddedBroker`], creates the topics the worker
//! declares (its inputs, output, sinks and dead-letter topics), produces the
//! inputs, and runs the worker as it runs in production: a member of its
//! consumer group, with its own producer. Once the group has committed every
//! partition of every input topic up to its end, the worker is stopped
//! gracefully and [`Finished`] holds what the broker has: the outputs of each
//! topic, the dead letters and the group's committed offsets. All of it is
//! read back with clients of the kit's own, not asked of the worker, so a test
//! checks what a downstream consumer would see.
//!
//! ```
//! use pythia_kafka::prelude::*;
//! use pythia_kafka::testing::TestRun;
//!
//! #[derive(serde::Serialize, serde::Deserialize)]
//! struct Order { id: u64, amount_cents: u64 }
//!
//! #[derive(serde::Serialize, serde::Deserialize, Debug, PartialEq)]
//! struct Invoice { order_id: u64, total_cents: u64 }
//!
//! #[derive(Worker)]
//! #[pythia(topic = "orders", output = "invoices")]
//! struct Billing;
//!
//! impl Process for Billing {
//!     type Input = Order;
//!     type Output = Invoice;
//!
//!     async fn process(&self, msg: Message<Order>, _: &Context) -> Result<Outputs<Invoice>, ProcessError> {
//!         let order = msg.into_payload();
//!         if order.amount_cents == 0 {
//!             return Ok(Outputs::none());
//!         }
//!         Ok(Outputs::one(Invoice { order_id: order.id, total_cents: order.amount_cents }))
//!     }
//! }
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! // In a `#[tokio::test] async fn ... -> Result<(), Box<dyn std::error::Error>>`:
//! let run = TestRun::of(Billing)
//!     .input_json(&Order { id: 7, amount_cents: 1250 })
//!     .input_json(&Order { id: 8, amount_cents: 0 })
//!     .input_raw("not json") // a poison message
//!     .run_until_idle()
//!     .await?;
//!
//! assert_eq!(run.outputs_json::<Invoice>("invoices")?, [Invoice { order_id: 7, total_cents: 1250 }]);
//! let dead = run.dead_letters();
//! assert_eq!(dead.len(), 1);
//! assert_eq!((dead[0].kind.as_str(), dead[0].offset), ("decode", 2));
//! assert_eq!(run.committed()[&("orders".to_owned(), 0)], 3);
//! assert_eq!(run.summary().processed, 3);
//! # Ok(()) }
//! ```
//!
//! What a run sets up:
//!
//! - **Configuration**: the worker's declaration (`#[derive(Worker)]`), then
//!   the kit's settings for the embedded broker (`kafka.group_protocol =
//!   "consumer"`, i.e. KIP-848, and `kafka.commit_interval = "100ms"`), then
//!   what [`TestRun::config`] sets. No `pythia.toml` is read and no `PYTHIA_*`
//!   variable is, so neither leaks into a test. `kafka.brokers` is ignored.
//! - **Partitions**: each input topic has [`TestRun::partitions`] (1 unless
//!   set). Output, sink and dead-letter topics have one each, so that each
//!   reads back in the order its records were written.
//! - **Where an input goes**: to the partition [`TestRun::input_to`] names;
//!   with a key, to the partition librdkafka's partitioner gives the key;
//!   else to the partitions of its topic in turn, the first to partition 0.
//!
//! It needs a Tokio runtime with the time driver, as `#[tokio::test]` gives
//! (either flavor).

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use pythia_core::{ConfigError, Headers, Record, Worker};
use serde::Serialize;

use crate::config::{Config, EMBEDDED};
use crate::embedded::{EmbeddedBroker, EmbeddedError};
use crate::run::KafkaWorker;
use io::{Probe, blocking, dead_letter_topics, produce, read_topics, wait_until_idle};
use pythia_core::events::WorkerEvent;

mod error;
mod finished;
mod io;

pub use error::{TestRunError, Uncommitted};
pub use finished::{DeadLetter, Finished};

/// How long [`TestRun::run_until_idle`] waits for the worker to be idle,
/// unless [`TestRun::timeout`] says otherwise.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);

/// How often the group's commits are compared with the inputs' ends.
pub(super) const POLL_INTERVAL: Duration = Duration::from_millis(50);

/// Longest wait for one request of the kit's own clients, and for reading
/// the written topics back.
pub(super) const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// The group the kit's reader is configured with; it never joins or commits.
pub(super) const READER_GROUP: &str = "pythia-testing-reader";

/// A test run of a worker on an embedded broker, being set up.
///
/// Give it inputs and settings, then [`run_until_idle`](TestRun::run_until_idle).
/// The [module documentation](self) has an example.
pub struct TestRun<W> {
    worker: W,
    inputs: Vec<Input>,
    /// `(key, value)` pairs for [`ConfigLoader::set`](pythia_core::ConfigLoader::set).
    settings: Vec<(String, String)>,
    timeout: Duration,
    /// The first input that could not be encoded: reported by the run.
    invalid: Option<TestRunError>,
}

/// An input waiting to be produced.
pub(super) struct Input {
    /// `None`: the worker's first input topic.
    topic: Option<String>,
    partition: Option<i32>,
    key: Option<Bytes>,
    payload: Option<Bytes>,
    headers: Headers,
}

impl Input {
    fn new(payload: Option<Bytes>) -> Self {
        Self {
            topic: None,
            partition: None,
            key: None,
            payload,
            headers: Headers::new(),
        }
    }
}

impl<W: Worker> TestRun<W> {
    /// A run of `worker`, with no inputs yet.
    pub fn of(worker: W) -> Self {
        Self {
            worker,
            inputs: Vec::new(),
            settings: Vec::new(),
            timeout: DEFAULT_TIMEOUT,
            invalid: None,
        }
    }

    /// Gives each input topic `partitions` partitions (1 unless set): the
    /// same as `.config("kafka.embedded_partitions", partitions)`.
    pub fn partitions(self, partitions: i32) -> Self {
        self.config("kafka.embedded_partitions", partitions)
    }

    /// Sets the configuration key `key` (dotted, as in `pythia.toml`:
    /// `"worker.retry.max_attempts"`, `"worker.dead_letter.enabled"`) to
    /// `value`, over the worker's declaration and the kit's settings. The
    /// value is written as text and read as the key's type, as an environment
    /// variable would be: `1`, `false`, `"2s"`.
    ///
    /// ```
    /// # use pythia_kafka::testing::TestRun;
    /// # fn demo<W: pythia_kafka::Worker>(worker: W) -> TestRun<W> {
    /// TestRun::of(worker)
    ///     .config("worker.retry.max_attempts", 1)
    ///     .config("worker.retry.initial_backoff", "10ms")
    /// # }
    /// ```
    pub fn config(mut self, key: &str, value: impl fmt::Display) -> Self {
        self.settings.push((key.to_owned(), value.to_string()));
        self
    }

    /// How long [`run_until_idle`](TestRun::run_until_idle) waits for every
    /// input to be committed before it fails ([`DEFAULT_TIMEOUT`] unless set).
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Adds an input with a key, to the worker's first input topic.
    ///
    /// ```
    /// # use pythia_kafka::testing::TestRun;
    /// # fn demo<W: pythia_kafka::Worker>(worker: W) -> TestRun<W> {
    /// TestRun::of(worker)
    ///     .partitions(4)
    ///     .input("order-1", r#"{"id":1,"amount_cents":1250}"#) // the key's partition
    ///     .input_to(3, r#"{"id":2,"amount_cents":99}"#)        // partition 3
    ///     .input_raw(b"\xff not json")                         // partitions in turn
    /// # }
    /// ```
    pub fn input(self, key: impl AsRef<[u8]>, payload: impl AsRef<[u8]>) -> Self {
        let mut input = Input::new(Some(Bytes::copy_from_slice(payload.as_ref())));
        input.key = Some(Bytes::copy_from_slice(key.as_ref()));
        self.push(input)
    }

    /// Adds an input without a key, to `partition` of the worker's first
    /// input topic.
    pub fn input_to(self, partition: i32, payload: impl AsRef<[u8]>) -> Self {
        let mut input = Input::new(Some(Bytes::copy_from_slice(payload.as_ref())));
        input.partition = Some(partition);
        self.push(input)
    }

    /// Adds an input without a key whose payload is these bytes: a message
    /// in the worker's format, or one that is not, to see it dead-lettered.
    pub fn input_raw(self, payload: impl AsRef<[u8]>) -> Self {
        self.push(Input::new(Some(Bytes::copy_from_slice(payload.as_ref()))))
    }

    /// Adds an input without a key whose payload is `value` as JSON. A value
    /// that does not encode fails the run ([`TestRunError::InputJson`]).
    pub fn input_json<T: Serialize + ?Sized>(mut self, value: &T) -> Self {
        match serde_json::to_vec(value) {
            Ok(json) => self.push(Input::new(Some(json.into()))),
            Err(source) => {
                let index = self.inputs.len();
                self.invalid
                    .get_or_insert(TestRunError::InputJson { index, source });
                self
            }
        }
    }

    /// Adds an input as `record` says: its topic (the worker's first input
    /// topic if it names none), key, payload (`None` for a tombstone) and
    /// headers. Its `sink` is not used.
    ///
    /// ```
    /// # use pythia_kafka::testing::TestRun;
    /// use pythia_kafka::core::{Headers, Record};
    /// # fn demo<W: pythia_kafka::Worker>(worker: W) -> TestRun<W> {
    /// let mut headers = Headers::new();
    /// headers.append("tenant", "acme");
    /// TestRun::of(worker)
    ///     .input_record(Record::new("refund 7").with_topic("refunds").with_headers(headers))
    /// # }
    /// ```
    pub fn input_record(self, record: Record) -> Self {
        self.push(Input {
            topic: record.topic.map(|t| t.to_string()),
            partition: None,
            key: record.key,
            payload: record.payload,
            headers: record.headers,
        })
    }

    fn push(mut self, input: Input) -> Self {
        self.inputs.push(input);
        self
    }

    /// Starts an embedded broker, creates the worker's topics, produces the
    /// inputs, and runs the worker until the group has committed every
    /// partition of every input topic up to its high watermark. Then stops it
    /// gracefully (it drains, commits and leaves the group) and reads back
    /// what it wrote.
    ///
    /// A run with no inputs is idle at once: the worker is started, then
    /// stopped.
    ///
    /// # Errors
    ///
    /// - [`TestRunError::Worker`]: the worker stopped with an error (a
    ///   message failed with dead letters off, an output was not delivered,
    ///   an invalid setting), before it was idle or while it stopped.
    /// - [`TestRunError::Timeout`]: not idle within the timeout; the error
    ///   lists the partitions not committed to their end. The worker is
    ///   dropped, not drained.
    /// - [`TestRunError::Config`], [`TestRunError::InputJson`]: a setting or an
    ///   input is invalid.
    /// - [`TestRunError::Broker`], [`TestRunError::Read`]: the embedded
    ///   broker or the kit's own clients failed.
    ///
    /// ```no_run
    /// use pythia_kafka::core::{Error, FailureKind};
    /// use pythia_kafka::testing::{TestRun, TestRunError};
    /// # async fn demo<W: pythia_kafka::Worker>(worker: W) -> Result<(), Box<dyn std::error::Error>> {
    /// let result = TestRun::of(worker)
    ///     .input_raw("not json")
    ///     .config("worker.dead_letter.enabled", false)
    ///     .run_until_idle()
    ///     .await;
    /// assert!(matches!(
    ///     result,
    ///     Err(TestRunError::Worker(Error::Process { kind: FailureKind::Decode, offset: 0, .. }))
    /// ));
    /// # Ok(()) }
    /// ```
    pub async fn run_until_idle(self) -> Result<Finished, TestRunError> {
        let Self {
            worker,
            inputs,
            settings,
            timeout,
            invalid,
        } = self;
        if let Some(error) = invalid {
            return Err(error);
        }
        let mut config = load::<W>(&settings)?;
        let broker = EmbeddedBroker::start()?;
        let topics = Topics::create(&broker, &config, &inputs)?;
        config.use_embedded(&broker)?;
        produce(&config.kafka, &topics, inputs).await?;

        let probe = Arc::new(Probe::new(&config.kafka)?);
        let instance = KafkaWorker::connect(worker, config.clone())?;
        let (events, collected) = collect(instance.events().subscribe());
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let run = instance.run(async {
            let _ = stopped.await;
        });
        tokio::pin!(run);
        tokio::select! {
            biased;
            result = &mut run => {
                let _summary = result?;
                let uncommitted = probe.clone().uncommitted().await?;
                return Err(TestRunError::Stopped { uncommitted });
            }
            idle = wait_until_idle(&probe, timeout) => idle?,
        }
        // Nothing is in flight: the drain is short, and ends with a commit.
        let _ = stop.send(());
        let summary = run.await?;
        let _ = events.send(());
        let seen = collected.await.unwrap_or_default();

        let committed = probe.committed().await?;
        let kafka = config.kafka.clone();
        let mut read = blocking(move || read_topics(&kafka, &topics.written())).await?;
        drop(broker);

        let outputs = (config.kafka.output_topics())
            .map(|topic| {
                let records = read.remove(topic).unwrap_or_default();
                let messages = records
                    .into_iter()
                    .map(|m| m.map(Option::unwrap_or_default));
                (topic.to_owned(), messages.collect())
            })
            .collect();
        let mut dead_letters = Vec::new();
        for topic in dead_letter_topics(&config) {
            for record in read.remove(&topic).unwrap_or_default() {
                dead_letters.push(DeadLetter::parse(record)?);
            }
        }
        dead_letters.sort_by(|a, b| {
            (&a.topic, a.partition, a.offset).cmp(&(&b.topic, b.partition, b.offset))
        });
        Ok(Finished {
            summary,
            outputs,
            dead_letters,
            committed,
            events: seen,
        })
    }
}

/// Collects a run's events as they come, so none is missed however long
/// the run; once `done` is sent, takes what is left and returns them all.
fn collect(
    mut events: tokio::sync::broadcast::Receiver<WorkerEvent>,
) -> (
    tokio::sync::oneshot::Sender<()>,
    tokio::task::JoinHandle<Vec<WorkerEvent>>,
) {
    use tokio::sync::broadcast::error::{RecvError, TryRecvError};
    let (done, mut finished) = tokio::sync::oneshot::channel::<()>();
    let collector = tokio::spawn(async move {
        let mut seen = Vec::new();
        loop {
            tokio::select! {
                event = events.recv() => match event {
                    Ok(event) => seen.push(event),
                    Err(RecvError::Lagged(_)) => {}
                    Err(RecvError::Closed) => return seen,
                },
                _ = &mut finished => break,
            }
        }
        loop {
            match events.try_recv() {
                Ok(event) => seen.push(event),
                Err(TryRecvError::Lagged(_)) => {}
                Err(_) => return seen,
            }
        }
    });
    (done, collector)
}

impl<W> fmt::Debug for TestRun<W> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TestRun")
            .field("worker", &std::any::type_name::<W>())
            .field("inputs", &self.inputs.len())
            // Keys only: a value may be a password.
            .field(
                "settings",
                &self.settings.iter().map(|(key, _)| key).collect::<Vec<_>>(),
            )
            .field("timeout", &self.timeout)
            .finish()
    }
}

/// The worker's configuration: its declaration, the kit's settings, then the
/// test's; no file, no environment.
fn load<W: Worker>(settings: &[(String, String)]) -> Result<Config, ConfigError> {
    let mut loader = Config::loader_for::<W>()
        .no_file()
        .env::<&str, &str>([])
        .default_value("kafka.group_protocol", "consumer")
        .default_value("kafka.commit_interval", "100ms")
        .default_value("kafka.embedded_partitions", 1);
    for (key, value) in settings {
        loader = loader.set(key, value.as_str());
    }
    // Whatever the test set: `use_embedded` points the config at the run's broker.
    Config::from_loader(loader.set("kafka.brokers", EMBEDDED))
}

/// The topics of a run and their partition counts.
pub(super) struct Topics {
    partitions: BTreeMap<String, i32>,
    /// Where inputs without a topic go.
    first_input: String,
    /// Output, sink and dead-letter topics.
    written: BTreeSet<String>,
}

impl Topics {
    /// Creates the inputs' topics with `kafka.embedded_partitions` each, and
    /// the topics the worker writes with one, before `use_embedded` would
    /// create them all alike.
    fn create(
        broker: &EmbeddedBroker,
        config: &Config,
        inputs: &[Input],
    ) -> Result<Self, EmbeddedError> {
        let count = config.kafka.embedded_partitions;
        let mut partitions = BTreeMap::new();
        let read =
            (config.kafka.topics.iter()).chain(inputs.iter().filter_map(|i| i.topic.as_ref()));
        for topic in read {
            broker.create_topic(topic, count)?;
            partitions.insert(topic.clone(), count);
        }
        let mut written = BTreeSet::new();
        let writes =
            (config.kafka.output_topics().map(str::to_owned)).chain(dead_letter_topics(config));
        for topic in writes {
            // A topic both read and written keeps the inputs' count.
            broker.create_topic(&topic, 1)?;
            partitions.entry(topic.clone()).or_insert(1);
            written.insert(topic);
        }
        Ok(Self {
            partitions,
            first_input: config.kafka.topics[0].clone(),
            written,
        })
    }

    fn written(&self) -> Vec<String> {
        self.written.iter().cloned().collect()
    }
}
