//! The one way to set up a worker's run on RabbitMQ: a builder.

use pythia_core::Worker;
use pythia_core::connector::{QueueBuilder, Sink};
use pythia_core::events::WorkerEvent;
use pythia_core::layer::{Layer, Layered};

use crate::config::Config;
use crate::run::RabbitWorker;
use crate::sink::RabbitSink;

/// Sets up a worker's run: its configuration, layers around `process`, and
/// callbacks for its events. Start with [`RabbitWorker::builder`].
///
/// ```no_run
/// use pythia_rabbitmq::prelude::*;
///
/// #[derive(Worker)]
/// #[pythia(topic = "jobs", codec = "utf8")]
/// struct Jobs;
///
/// impl Process for Jobs {
///     type Input = String;
///     type Output = ();
///     async fn process(&self, msg: Message<String>, _: &Context) -> Result<Outputs<()>, ProcessError> {
///         println!("{}", msg.payload());
///         Ok(Outputs::none())
///     }
/// }
///
/// #[tokio::main]
/// async fn main() -> Result<(), pythia_core::Error> {
///     RabbitWorker::builder(Jobs)
///         .build()?            // loads the configuration: queue "jobs", prefetch 10
///         .run_until_signal()  // until SIGTERM or SIGINT; then drain, ack, close
///         .await?;
///     Ok(())
/// }
/// ```
///
/// `K` is the sink of outputs and dead letters: the RabbitMQ publisher of the
/// configuration unless [`Builder::sink`] gives another.
#[must_use = "a builder does nothing until built and run"]
pub struct Builder<W, K = RabbitSink> {
    inner: QueueBuilder<W, Config, K, RabbitSink>,
}

impl<W: Worker> Builder<W> {
    pub(crate) fn new(worker: W) -> Self {
        // The publisher is made with the connection's name; the run closes it.
        let inner = QueueBuilder::new(worker, |config, name| {
            let sink = RabbitSink::new(config, name);
            (sink.clone(), Some(sink))
        });
        Self { inner }
    }
}

impl<W: Worker, K: Sink> Builder<W, K> {
    /// Runs with `config` instead of loading the worker's own
    /// ([`Config::for_worker`]: its declared defaults, `pythia.toml`,
    /// `PYTHIA_*` variables).
    pub fn config(self, config: Config) -> Self {
        Self {
            inner: self.inner.config(config),
        }
    }

    /// Wraps the worker's `process` in `layer`; the layer added last runs
    /// first (see [`pythia_core::layer`]).
    pub fn layer<L: Layer<W>>(self, layer: L) -> Builder<Layered<W, L>, K> {
        Builder {
            inner: self.inner.layer(layer),
        }
    }

    /// Sends outputs and dead letters to `sink` instead of publishing them to
    /// RabbitMQ: a worker that consumes a queue and produces to Kafka, say,
    /// with its `process` unchanged.
    ///
    /// A delivery is still acknowledged only when its outputs are confirmed,
    /// now by `sink` (for Kafka: the producer's delivery report). Dead
    /// letters go through `sink` too: the runtime addresses each to
    /// `worker.dead_letter.topic` with `{topic}` standing for the queue, so
    /// with a Kafka sink the dead letters of queue `jobs` land on the Kafka
    /// topic `jobs.dlq`. The run does not close `sink`.
    ///
    /// ```no_run
    /// use pythia_rabbitmq::prelude::*;
    ///
    /// #[derive(Worker)]
    /// #[pythia(topic = "jobs", output = "jobs.done", codec = "utf8")]
    /// struct Jobs;
    ///
    /// impl Process for Jobs {
    ///     type Input = String;
    ///     type Output = String;
    ///     async fn process(&self, msg: Message<String>, _: &Context) -> Result<Outputs<String>, ProcessError> {
    ///         Ok(Outputs::one(msg.payload().to_uppercase()))
    ///     }
    /// }
    ///
    /// #[tokio::main]
    /// async fn main() -> Result<(), Box<dyn std::error::Error>> {
    ///     // [kafka] and [rabbitmq] in one pythia.toml (or PYTHIA_KAFKA__* and
    ///     // PYTHIA_RABBITMQ__* variables): each connector reads its own.
    ///     let kafka: pythia_kafka::Config = pythia_kafka::Config::loader_for::<Jobs>().load()?;
    ///     kafka.kafka.validate_clients()?; // a producer needs no group or topics
    ///     let sink = pythia_kafka::KafkaSink::new(&kafka.kafka)?; // outputs to Kafka `jobs.done`
    ///     RabbitWorker::builder(Jobs) // consumes the RabbitMQ queue `jobs`
    ///         .sink(sink)
    ///         .build()?
    ///         .run_until_signal()
    ///         .await?;
    ///     Ok(())
    /// }
    /// ```
    pub fn sink<S: Sink>(self, sink: S) -> Builder<W, S> {
        Builder {
            inner: self.inner.sink(sink),
        }
    }

    /// Calls `listener` with each of the run's events, in order, on a task
    /// of its own.
    pub fn on_event(self, listener: impl Fn(&WorkerEvent) + Send + Sync + 'static) -> Self {
        Self {
            inner: self.inner.on_event(listener),
        }
    }

    /// Loads the configuration (unless given), validates it and sets the run
    /// up; it connects when [`RabbitWorker::run`] starts.
    ///
    /// # Errors
    ///
    /// A configuration error naming the key, or a metrics address that
    /// cannot be bound.
    pub fn build(self) -> Result<RabbitWorker<W, K>, pythia_core::Error> {
        self.inner
            .build(Config::for_worker::<W>, RabbitWorker::connect)
    }
}

impl<W, K> std::fmt::Debug for Builder<W, K> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.inner.fmt(f)
    }
}
