//! The one way to set up a worker's run on Kafka: a builder.

use axum::Router;
use pythia_core::Worker;
use pythia_core::connector::Sink;
use pythia_core::events::{Listener, WorkerEvent};
use pythia_core::layer::{Layer, LayerExt, Layered};

use crate::config::{Config, KafkaConfig};
use crate::error::KafkaError;
use crate::run::KafkaWorker;
use crate::sink::KafkaSink;

/// Sets up a worker's run: its configuration, layers around `process`, and
/// callbacks for its events. Start with [`KafkaWorker::builder`].
///
/// ```no_run
/// use std::time::Duration;
/// use pythia_kafka::core::events::WorkerEvent;
/// use pythia_kafka::core::layer::Timeout;
/// use pythia_kafka::prelude::*;
///
/// #[derive(Worker)]
/// #[pythia(topic = "orders", codec = "utf8")]
/// struct Audit;
///
/// impl Process for Audit {
///     type Input = String;
///     type Output = ();
///     async fn process(&self, msg: Message<String>, _: &Context) -> Result<Outputs<()>, ProcessError> {
///         println!("{}", msg.payload());
///         Ok(Outputs::none())
///     }
/// }
///
/// #[tokio::main]
/// async fn main() -> Result<(), pythia_kafka::Error> {
///     KafkaWorker::builder(Audit)
///         .layer(Timeout::new(Duration::from_secs(5)))
///         .on_event(|event| {
///             if let WorkerEvent::DeadLettered { partition, offset, reason, .. } = event {
///                 eprintln!("dead-lettered {partition}@{offset}: {reason}");
///             }
///         })
///         .build()?            // loads the configuration, connects, subscribes
///         .run_until_signal()  // until SIGTERM or SIGINT; then drain, commit, leave
///         .await?;
///     Ok(())
/// }
/// ```
///
/// `Audit.run()` ([`WorkerExt::run`](crate::WorkerExt::run)) is the short
/// form of `KafkaWorker::builder(Audit).build()?.run_until_signal()`.
///
/// `K` is the sink of outputs and dead letters: the Kafka producer of the
/// configuration unless [`Builder::sink`] gives another.
#[must_use = "a builder does nothing until built and run"]
pub struct Builder<W, K = KafkaSink> {
    worker: W,
    config: Option<Config>,
    listeners: Vec<Listener>,
    routes: Router,
    sink: SinkSetup<K>,
}

/// Where a run's sink comes from.
pub(crate) enum SinkSetup<K> {
    /// The Kafka producer, made from `[kafka]` when the run is set up.
    Producer(fn(&KafkaConfig) -> Result<K, KafkaError>),
    /// Given by the caller, who keeps it.
    Given(K),
}

impl SinkSetup<KafkaSink> {
    /// The worker's own Kafka producer.
    pub(crate) fn producer() -> Self {
        Self::Producer(KafkaSink::new)
    }
}

impl<W: Worker> Builder<W> {
    pub(crate) fn new(worker: W) -> Self {
        Self {
            worker,
            config: None,
            listeners: Vec::new(),
            routes: Router::new(),
            sink: SinkSetup::producer(),
        }
    }
}

impl<W: Worker, K: Sink> Builder<W, K> {
    /// Runs with `config` instead of loading the worker's own
    /// ([`Config::for_worker`]: its declared defaults, `pythia.toml`,
    /// `PYTHIA_*` variables).
    pub fn config(mut self, config: Config) -> Self {
        self.config = Some(config);
        self
    }

    /// Wraps the worker's `process` in `layer`; the layer added last runs
    /// first (see [`pythia_core::layer`]).
    pub fn layer<L: Layer<W>>(self, layer: L) -> Builder<Layered<W, L>, K> {
        Builder {
            worker: self.worker.layer(layer),
            config: self.config,
            listeners: self.listeners,
            routes: self.routes,
            sink: self.sink,
        }
    }

    /// Sends outputs and dead letters to `sink` instead of producing them to
    /// Kafka: a worker that consumes topics and publishes to RabbitMQ, say,
    /// with its `process` unchanged.
    ///
    /// An offset is still committed only when its message's outputs are
    /// confirmed, now by `sink` (for RabbitMQ: publisher confirms). Dead
    /// letters go through `sink` too, addressed to `worker.dead_letter.topic`
    /// with `{topic}` standing for the input topic (`orders.dlq` for
    /// `orders`): a RabbitMQ sink publishes them with that routing key, so
    /// the queue `orders.dlq` must exist. No Kafka dead-letter topic is
    /// created then. The run does not close `sink`.
    ///
    /// ```no_run
    /// use pythia_kafka::prelude::*;
    /// use pythia_kafka::core::connector::{Receipt, Sink};
    /// use pythia_kafka::core::Record;
    ///
    /// /// Prints each output and confirms it at once.
    /// struct Stdout;
    ///
    /// impl Sink for Stdout {
    ///     async fn send(&self, record: Record, receipt: Receipt) {
    ///         println!("{:?}: {:?}", record.topic, record.payload);
    ///         receipt.settle(Ok(()));
    ///     }
    /// }
    ///
    /// #[derive(Worker)]
    /// #[pythia(topic = "orders", output = "orders.seen", codec = "utf8")]
    /// struct Echo;
    ///
    /// impl Process for Echo {
    ///     type Input = String;
    ///     type Output = String;
    ///     async fn process(&self, msg: Message<String>, _: &Context) -> Result<Outputs<String>, ProcessError> {
    ///         Ok(Outputs::one(msg.into_payload()))
    ///     }
    /// }
    ///
    /// #[tokio::main]
    /// async fn main() -> Result<(), pythia_kafka::Error> {
    ///     // A RabbitMQ publisher: pythia_rabbitmq::RabbitSink::new(&rabbit_config, "orders-publisher")
    ///     KafkaWorker::builder(Echo).sink(Stdout).build()?.run_until_signal().await?;
    ///     Ok(())
    /// }
    /// ```
    pub fn sink<S: Sink>(self, sink: S) -> Builder<W, S> {
        Builder {
            worker: self.worker,
            config: self.config,
            listeners: self.listeners,
            routes: self.routes,
            sink: SinkSetup::Given(sink),
        }
    }

    /// Calls `listener` with each of the run's events, in order, on a task
    /// of its own: a slow listener does not hold up the worker (it misses
    /// the oldest events once 1,024 are waiting).
    pub fn on_event(mut self, listener: impl Fn(&WorkerEvent) + Send + Sync + 'static) -> Self {
        self.listeners.push(Box::new(listener));
        self
    }

    /// Serves the routes of `router` on the worker's endpoint, beside
    /// `/metrics` and `/health/*` (when `metrics.address` is set).
    ///
    /// ```no_run
    /// use axum::{Router, routing::get}; // axum 0.8
    /// # use pythia_kafka::prelude::*;
    /// # fn demo<W: pythia_kafka::Worker>(worker: W) -> Result<(), pythia_kafka::Error> {
    /// let version = Router::new().route("/version", get(|| async { env!("CARGO_PKG_VERSION") }));
    /// let worker = KafkaWorker::builder(worker).routes(version).build()?;
    /// # drop(worker); Ok(()) }
    /// ```
    ///
    /// # Panics
    ///
    /// At [`Builder::build`], when a route is one the endpoint serves already.
    pub fn routes(mut self, router: Router) -> Self {
        self.routes = self.routes.merge(router);
        self
    }

    /// Loads the configuration (unless given), validates it, starts the
    /// embedded broker if `kafka.brokers = "embedded"`, connects and
    /// subscribes. The run starts with [`KafkaWorker::run`] or
    /// [`KafkaWorker::run_until_signal`].
    pub fn build(self) -> Result<KafkaWorker<W, K>, pythia_core::Error> {
        let config = match self.config {
            Some(config) => config,
            None => Config::for_worker::<W>()?,
        };
        let mut worker =
            KafkaWorker::connect_with_routes(self.worker, config, self.routes, self.sink)?;
        if !self.listeners.is_empty() {
            worker.listen(self.listeners);
        }
        Ok(worker)
    }
}

impl<W, K> std::fmt::Debug for Builder<W, K> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Builder")
            .field("worker", &std::any::type_name::<W>())
            .field("sink", &std::any::type_name::<K>())
            .field("config", &self.config.is_some())
            .field("listeners", &self.listeners.len())
            .finish_non_exhaustive()
    }
}
