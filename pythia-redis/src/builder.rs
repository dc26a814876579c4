//! The one way to set up a worker's run on Redis: a builder.

use pythia_core::Worker;
use pythia_core::connector::{QueueBuilder, Sink};
use pythia_core::events::WorkerEvent;
use pythia_core::layer::{Layer, Layered};

use crate::config::Config;
use crate::run::RedisWorker;
use crate::sink::RedisSink;

/// Sets up a worker's run: its configuration, layers around `process`, and
/// callbacks for its events. Start with [`RedisWorker::builder`].
///
/// ```no_run
/// use pythia_redis::prelude::*;
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
///     RedisWorker::builder(Jobs)
///         .build()?            // loads the configuration: stream "jobs", prefetch 10
///         .run_until_signal()  // until SIGTERM or SIGINT; then drain, ack, close
///         .await?;
///     Ok(())
/// }
/// ```
///
/// `K` is the sink of outputs and dead letters: the Redis writer of the
/// configuration unless [`Builder::sink`] gives another.
#[must_use = "a builder does nothing until built and run"]
pub struct Builder<W, K = RedisSink> {
    inner: QueueBuilder<W, Config, K, RedisSink>,
}

impl<W: Worker> Builder<W> {
    pub(crate) fn new(worker: W) -> Self {
        // The writer is the run's, closed at its end.
        let inner = QueueBuilder::new(worker, |config, _| {
            let sink = RedisSink::new(config);
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

    /// Sends outputs and dead letters to `sink` instead of writing them to
    /// Redis: a worker that consumes a stream and produces to Kafka, say,
    /// with its `process` unchanged.
    ///
    /// A message is still acknowledged only when its outputs are confirmed,
    /// now by `sink`. Dead letters go through `sink` too: the runtime
    /// addresses each to `worker.dead_letter.topic` with `{topic}` standing
    /// for the input, so with a Kafka sink the dead letters of stream `jobs`
    /// land on the Kafka topic `jobs.dlq`. (Messages over
    /// `redis.max_deliveries` never reach the runtime: the source adds them
    /// to the Redis stream `jobs.dlq` itself.) The run does not close `sink`.
    ///
    /// ```no_run
    /// use pythia_core::connector::{Receipt, Sink};
    /// use pythia_redis::prelude::*;
    ///
    /// #[derive(Worker)]
    /// #[pythia(topic = "jobs", codec = "utf8")]
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
    /// /// Prints each output.
    /// struct Print;
    ///
    /// impl Sink for Print {
    ///     async fn send(&self, record: pythia_core::Record, receipt: Receipt) {
    ///         println!("{:?}", record.payload);
    ///         receipt.settle(Ok(()));
    ///     }
    /// }
    ///
    /// #[tokio::main]
    /// async fn main() -> Result<(), pythia_core::Error> {
    ///     RedisWorker::builder(Jobs).sink(Print).build()?.run_until_signal().await?;
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
    /// up; it connects when [`RedisWorker::run`] starts.
    ///
    /// # Errors
    ///
    /// A configuration error naming the key, or a metrics address that
    /// cannot be bound.
    pub fn build(self) -> Result<RedisWorker<W, K>, pythia_core::Error> {
        self.inner
            .build(Config::for_worker::<W>, RedisWorker::connect)
    }
}

impl<W, K> std::fmt::Debug for Builder<W, K> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.inner.fmt(f)
    }
}
