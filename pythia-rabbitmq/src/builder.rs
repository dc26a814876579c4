//! The one way to set up a worker's run on RabbitMQ: a builder.

use pythia_core::Worker;
use pythia_core::events::{Listener, WorkerEvent};
use pythia_core::layer::{Layer, LayerExt, Layered};

use crate::config::Config;
use crate::run::RabbitWorker;

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
#[must_use = "a builder does nothing until built and run"]
pub struct Builder<W> {
    worker: W,
    config: Option<Config>,
    listeners: Vec<Listener>,
}

impl<W: Worker> Builder<W> {
    pub(crate) fn new(worker: W) -> Self {
        Self {
            worker,
            config: None,
            listeners: Vec::new(),
        }
    }

    /// Runs with `config` instead of loading the worker's own
    /// ([`Config::for_worker`]: its declared defaults, `pythia.toml`,
    /// `PYTHIA_*` variables).
    pub fn config(mut self, config: Config) -> Self {
        self.config = Some(config);
        self
    }

    /// Wraps the worker's `process` in `layer`; the layer added last runs
    /// first (see [`pythia_core::layer`]).
    pub fn layer<L: Layer<W>>(self, layer: L) -> Builder<Layered<W, L>> {
        Builder {
            worker: self.worker.layer(layer),
            config: self.config,
            listeners: self.listeners,
        }
    }

    /// Calls `listener` with each of the run's events, in order, on a task
    /// of its own.
    pub fn on_event(mut self, listener: impl Fn(&WorkerEvent) + Send + Sync + 'static) -> Self {
        self.listeners.push(Box::new(listener));
        self
    }

    /// Loads the configuration (unless given), validates it and sets the run
    /// up; it connects when [`RabbitWorker::run`] starts.
    ///
    /// # Errors
    ///
    /// A configuration error naming the key, or a metrics address that
    /// cannot be bound.
    pub fn build(self) -> Result<RabbitWorker<W>, pythia_core::Error> {
        let config = match self.config {
            Some(config) => config,
            None => Config::for_worker::<W>()?,
        };
        let mut worker = RabbitWorker::connect(self.worker, config)?;
        if !self.listeners.is_empty() {
            worker.listen(self.listeners);
        }
        Ok(worker)
    }
}

impl<W> std::fmt::Debug for Builder<W> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Builder")
            .field("worker", &std::any::type_name::<W>())
            .field("config", &self.config)
            .field("listeners", &self.listeners.len())
            .finish()
    }
}
