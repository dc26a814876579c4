//! Entry points: run a worker on Kafka from its configuration.

use std::future::Future;
use std::sync::Arc;

use axum::Router;
use pythia_core::connector::{Identity, Runtime, Sink};
use pythia_core::events::{Events, WorkerEvent};
use pythia_core::{RunSummary, Status, Worker};
use tokio::sync::{broadcast, watch};

use crate::admin::DeadLetterTopics;
use crate::builder::{Builder, SinkSetup};
use crate::config::{Config, GroupProtocol};
use crate::embedded::EmbeddedBroker;
use crate::error::KafkaError;
use crate::observe::Observer;
use crate::sink::KafkaSink;
use crate::source::KafkaSource;
use pythia_core::events::{Listener, call_listeners};

/// Consumer property set for the embedded broker unless given.
///
/// The mock cluster holds every fetch that finds no data for the whole wait,
/// even when data arrives sooner. A partition whose queue is over
/// `queued.min.messages` is left out of fetches, so once the member's other
/// partitions are caught up, that partition's next refill waits the whole of
/// it: at 100 ms this stalled the last partitions of a busy run. Loopback
/// fetches every 10 ms cost next to nothing.
pub const EMBEDDED_FETCH_WAIT: (&str, &str) = ("fetch.wait.max.ms", "10");

impl Config {
    /// When `kafka.brokers = "embedded"`, starts the in-process broker, creates
    /// the input and output topics (`kafka.embedded_partitions` each), and points
    /// the config at it. Keep the returned broker alive as long as it is used.
    /// Returns `None` for real brokers.
    ///
    /// ```
    /// use pythia_core::ConfigLoader;
    /// let mut config = pythia_kafka::Config::from_loader(
    ///     ConfigLoader::new().no_file().env::<&str, &str>([])
    ///         .set("kafka.brokers", "embedded")
    ///         .set("kafka.group", "g")
    ///         .set("kafka.topics", "orders"),
    /// )?;
    /// let broker = config.start_embedded()?;
    /// assert!(broker.is_some());
    /// assert_ne!(config.kafka.brokers.as_deref(), Some("embedded"));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn start_embedded(&mut self) -> Result<Option<EmbeddedBroker>, KafkaError> {
        if !self.kafka.is_embedded() {
            return Ok(None);
        }
        let broker = EmbeddedBroker::start()?;
        self.use_embedded(&broker)?;
        Ok(Some(broker))
    }

    /// Points the config at a running embedded broker and creates the topics
    /// it reads and writes there (`kafka.embedded_partitions` each), with the
    /// settings that suit the mock cluster. A dead-letter topic gets its
    /// input's partition count: the mock would auto-create it with 4.
    pub fn use_embedded(&mut self, broker: &EmbeddedBroker) -> Result<(), KafkaError> {
        let partitions = self.kafka.embedded_partitions;
        let topics =
            (self.kafka.topics.iter().map(String::as_str)).chain(self.kafka.output_topics());
        for topic in topics {
            broker.create_topic(topic, partitions)?;
        }
        if self.worker.dead_letter.enabled {
            for input in &self.kafka.topics {
                // Created just above with `partitions`, or left as it was if
                // it existed: the same count as far as this broker knows.
                broker.create_topic(&self.worker.dead_letter.topic_for(input), partitions)?;
            }
        }
        if self.kafka.group_protocol == GroupProtocol::Auto {
            self.kafka.group_protocol = GroupProtocol::Consumer;
        }
        // The mock broker holds a fetch that finds nothing for the whole of
        // fetch.wait.max.ms (a real broker answers once data arrives): keep it short.
        if self.kafka.consumer.get(EMBEDDED_FETCH_WAIT.0).is_none() {
            self.kafka
                .consumer
                .set(EMBEDDED_FETCH_WAIT.0, EMBEDDED_FETCH_WAIT.1);
        }
        self.kafka.brokers = Some(broker.bootstrap_servers().to_owned());
        Ok(())
    }
}

/// The one-line way to run a [`Worker`] on Kafka.
///
/// ```no_run
/// use pythia_kafka::prelude::*;
///
/// #[derive(Worker)]
/// #[pythia(topic = "orders")]
/// struct Audit;
///
/// impl Process for Audit {
///     type Input = serde_json::Value;
///     type Output = ();
///     async fn process(&self, msg: Message<serde_json::Value>, _: &Context) -> Result<Outputs<()>, ProcessError> {
///         println!("{}", msg.payload());
///         Ok(Outputs::none())
///     }
/// }
///
/// #[tokio::main]
/// async fn main() -> Result<(), pythia_kafka::Error> {
///     // The derive's defaults < pythia.toml < PYTHIA_* variables.
///     Audit.run().await?;
///     Ok(())
/// }
/// ```
///
/// For a configuration of your own, layers, event callbacks or a shutdown
/// of your own, use [`KafkaWorker::builder`].
pub trait WorkerExt: Worker + Sized {
    /// Loads the worker's configuration ([`Config::for_worker`]: its declared
    /// defaults, `pythia.toml`, `PYTHIA_*` variables) and runs it until SIGTERM
    /// or SIGINT, then drains, commits and leaves:
    /// `KafkaWorker::builder(self).build()?.run_until_signal()`.
    fn run(self) -> impl Future<Output = Result<RunSummary, pythia_core::Error>> + Send {
        async move { KafkaWorker::builder(self).build()?.run_until_signal().await }
    }
}

impl<W: Worker> WorkerExt for W {}

/// A worker connected to Kafka and subscribed, not yet processing: what
/// [`Builder::build`] returns.
///
/// ```no_run
/// # async fn demo<W: pythia_core::Worker>(worker: W, config: pythia_kafka::Config) -> Result<(), pythia_core::Error> {
/// let instance = pythia_kafka::KafkaWorker::builder(worker).config(config).build()?;
/// let mut status = instance.status();
/// let run = tokio::spawn(instance.run(std::future::pending()));
/// status.wait_for(|s| !s.assigned.is_empty()).await.ok();
/// # Ok(()) }
/// ```
///
/// `K` is where outputs and dead letters go: by default the Kafka producer
/// of the configuration ([`KafkaSink`]); any other [`Sink`], such as a
/// RabbitMQ publisher, with [`Builder::sink`].
pub struct KafkaWorker<W: Worker, K: Sink = KafkaSink> {
    runtime: Runtime<W, KafkaSource, K>,
    /// What `run_until_signal` sets logs and trace export up from.
    telemetry: Config,
    /// Event callbacks, and their receiver subscribed before the run.
    listeners: Option<(broadcast::Receiver<WorkerEvent>, Vec<Listener>)>,
    observer: Option<Observer>,
    /// Created at the start of the run when the brokers are reached by
    /// address and dead letters go to Kafka.
    dead_letter_topics: Option<DeadLetterTopics>,
    // Lives as long as the run when `kafka.brokers = "embedded"`.
    _broker: Option<EmbeddedBroker>,
}

impl<W: Worker> KafkaWorker<W> {
    /// Starts setting up `worker`'s run: configuration, layers, event
    /// callbacks; then [`Builder::build`]. An `Arc<W>` runs one more
    /// instance of a worker shared with other runs.
    pub fn builder(worker: W) -> Builder<W> {
        Builder::new(worker)
    }

    /// Validates `config`, starts the embedded broker if asked, connects and subscribes.
    ///
    /// The consumer's `client.id` is `<worker name>-<instance>` (see
    /// `worker.instance`), so group tools such as `kafka-consumer-groups
    /// --describe` tell the copies apart; the member id the group gives it
    /// is logged with each assignment and reachable as
    /// [`Context::member_id`](pythia_core::Context::member_id).
    pub(crate) fn connect(worker: W, config: Config) -> Result<Self, pythia_core::Error> {
        KafkaWorker::connect_with_routes(worker, config, Router::new(), SinkSetup::producer())
    }
}

impl<W: Worker, K: Sink> KafkaWorker<W, K> {
    /// [`KafkaWorker::connect`], with `routes` merged into the endpoint and
    /// the sink of `sink`.
    pub(crate) fn connect_with_routes(
        worker: W,
        mut config: Config,
        routes: Router,
        sink: SinkSetup<K>,
    ) -> Result<Self, pythia_core::Error> {
        config.validate()?;
        let telemetry = config.clone();
        let worker = Arc::new(worker);
        let broker = config.start_embedded()?;
        let name = config.name().to_owned();
        let identity = Identity::new(&config.worker.instance_name());
        let member = format!("{name}-{}", identity.instance());
        let observer = Observer::new(&config, &member, routes)?;
        let metrics = observer.as_ref().map(|o| o.metrics.clone());
        let (sink, to_kafka) = match sink {
            SinkSetup::Producer(make) => (make(&config.kafka)?, true),
            SinkSetup::Given(sink) => (sink, false),
        };
        let source =
            KafkaSource::with_metrics(&config, &member, metrics.clone(), Some(identity.clone()))?;
        let dead_letter_topics = to_kafka
            .then(|| DeadLetterTopics::new(&config.kafka, &config.worker.dead_letter))
            .flatten();
        let events = Events::new();
        source.tracker().report_to(events.clone());
        let mut runtime =
            Runtime::with_shared(config.worker, &name, worker, source, Arc::new(sink))
                .with_identity(identity)
                .with_events(events);
        if let Some(metrics) = metrics {
            runtime = runtime.with_metrics(metrics);
        }
        Ok(Self {
            runtime,
            telemetry,
            listeners: None,
            observer,
            dead_letter_topics,
            _broker: broker,
        })
    }

    /// Calls `listeners` with each event of the run (subscribed now, so
    /// none is missed).
    pub(crate) fn listen(&mut self, listeners: Vec<Listener>) {
        self.listeners = Some((self.runtime.events().subscribe(), listeners));
    }

    /// The metrics this worker exports when `metrics.address` is set; register
    /// an application's own metrics in its [`registry`](pythia_core::Metrics::registry).
    pub fn metrics(&self) -> Option<&pythia_core::Metrics> {
        self.observer.as_ref().map(|o| &o.metrics)
    }

    /// Watches the phase and the assigned partitions.
    pub fn status(&self) -> watch::Receiver<Status> {
        self.runtime.status()
    }

    /// The run's events: assignments, revocations, retries, dead letters,
    /// accepted commits and the error that ends a run. Subscribe before
    /// [`run`](Self::run) to see them all.
    ///
    /// ```no_run
    /// # async fn demo<W: pythia_core::Worker>(worker: W, config: pythia_kafka::Config) -> Result<(), pythia_core::Error> {
    /// use pythia_kafka::core::events::WorkerEvent;
    /// let instance = pythia_kafka::KafkaWorker::builder(worker).config(config).build()?;
    /// let mut events = instance.events().subscribe();
    /// tokio::spawn(async move {
    ///     while let Ok(event) = events.recv().await {
    ///         if let WorkerEvent::DeadLettered { partition, offset, reason, .. } = event {
    ///             eprintln!("dead-lettered {partition}@{offset}: {reason}");
    ///         }
    ///     }
    /// });
    /// instance.run(pythia_kafka::core::shutdown::signal()).await?;
    /// # Ok(()) }
    /// ```
    pub fn events(&self) -> &Events {
        self.runtime.events()
    }

    /// Runs until `shutdown` resolves (or a message fails), then drains,
    /// commits and leaves the group.
    ///
    /// Reaching brokers by address, it also creates the dead-letter topic of
    /// each input that has none, with the input's partition count, beside the
    /// group join (which takes longer); a failure to do so is a warning, not
    /// an error.
    pub async fn run(
        self,
        shutdown: impl Future<Output = ()> + Send,
    ) -> Result<RunSummary, pythia_core::Error> {
        // Every acknowledged message's outputs were delivered already; the
        // producer purges anything else when dropped.
        let _observing = match self.observer {
            Some(observer) => Some(observer.start(self.runtime.status())?),
            None => None,
        };
        // Beside the start rather than before it: a broker that does not
        // answer (librdkafka's mock has no CreateTopics) holds up nothing.
        let creating = self
            .dead_letter_topics
            .map(|topics| tokio::spawn(topics.ensure()));
        let listening = self
            .listeners
            .map(|(events, listeners)| tokio::spawn(call_listeners(events, listeners)));
        let result = self.runtime.run(shutdown).await;
        if let Some(creating) = creating {
            creating.abort();
        }
        if let Some(listening) = listening {
            // Ends once the run's event senders are gone.
            let _ = tokio::time::timeout(std::time::Duration::from_secs(5), listening).await;
        }
        result
    }

    /// Runs until SIGTERM or SIGINT, then drains, commits and leaves.
    ///
    /// Installs a log subscriber (`RUST_LOG`, default `info`) and, when `[otel]`
    /// names a collector, trace export ([`init_telemetry`](crate::init_telemetry)),
    /// if no subscriber is set; the last spans are sent before it returns. A
    /// second signal during the drain exits at once (uncommitted messages are
    /// redelivered after a restart).
    pub async fn run_until_signal(self) -> Result<RunSummary, pythia_core::Error> {
        let telemetry = crate::init_telemetry(&self.telemetry)?;
        let result = self.run(pythia_core::shutdown::drain_signal()).await;
        // Sending the last spans blocks until the collector answers.
        let _ = tokio::task::spawn_blocking(move || telemetry.shutdown()).await;
        result
    }
}
