//! The one way to set up a worker's run on NATS JetStream: a builder.

use pythia_core::Worker;
use pythia_core::connector::{QueueBuilder, Sink};
use pythia_core::events::WorkerEvent;
use pythia_core::layer::{Layer, Layered};

use crate::config::Config;
use crate::run::NatsWorker;
use crate::sink::NatsSink;

/// Sets up a worker's run: its configuration, layers around `process`, and
/// callbacks for its events. Start with [`NatsWorker::builder`].
///
/// ```no_run
/// use pythia_nats::prelude::*;
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
///     NatsWorker::builder(Jobs)
///         .build()?            // loads the configuration: subject "jobs", 4 at once
///         .run_until_signal()  // until SIGTERM or SIGINT; then drain, ack, close
///         .await?;
///     Ok(())
/// }
/// ```
///
/// `K` is the sink of outputs and dead letters: the NATS publisher of the
/// configuration unless [`Builder::sink`] gives another.
#[must_use = "a builder does nothing until built and run"]
pub struct Builder<W, K = NatsSink> {
    inner: QueueBuilder<W, Config, K, NatsSink>,
}

impl<W: Worker> Builder<W> {
    pub(crate) fn new(worker: W) -> Self {
        // The publisher is made with the connection's name; the run closes it.
        let inner = QueueBuilder::new(worker, |config, name| {
            let sink = NatsSink::new(config, name);
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

    /// Sends outputs and dead letters to `sink` instead of publishing them
    /// with the configuration's JetStream publisher: another NATS server, or
    /// another broker's sink (such as `pythia_kafka::KafkaSink`), with the
    /// worker's `process` unchanged.
    ///
    /// A message is still acknowledged only when its outputs are confirmed,
    /// now by `sink`. Dead letters go through `sink` too: the runtime
    /// addresses each to `worker.dead_letter.topic` with `{topic}` standing
    /// for the subject (`jobs.dlq` for `jobs`). The run does not close `sink`.
    ///
    /// ```no_run
    /// use pythia_nats::prelude::*;
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
    ///     // Outputs to another NATS server than the one consumed.
    ///     let archive = Config::from_loader(
    ///         Config::loader_for::<Jobs>().set("nats.url", "nats://archive:4222"),
    ///     )?;
    ///     let sink = pythia_nats::NatsSink::new(&archive, "jobs-archive");
    ///     NatsWorker::builder(Jobs).sink(sink).build()?.run_until_signal().await?;
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
    /// up; it connects when [`NatsWorker::run`] starts.
    ///
    /// # Errors
    ///
    /// A configuration error naming the key, or a metrics address that
    /// cannot be bound.
    pub fn build(self) -> Result<NatsWorker<W, K>, pythia_core::Error> {
        self.inner
            .build(Config::for_worker::<W>, NatsWorker::connect)
    }
}

impl<W, K> std::fmt::Debug for Builder<W, K> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.inner.fmt(f)
    }
}
