//! The one way to set up a worker's run on Kafka: a builder.

use axum::Router;
use pythia_core::Worker;
use pythia_core::events::{Listener, WorkerEvent};
use pythia_core::layer::{Layer, LayerExt, Layered};

use crate::config::Config;
use crate::run::KafkaWorker;

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
#[must_use = "a builder does nothing until built and run"]
pub struct Builder<W> {
    worker: W,
    config: Option<Config>,
    listeners: Vec<Listener>,
    routes: Router,
}

impl<W: Worker> Builder<W> {
    pub(crate) fn new(worker: W) -> Self {
        Self {
            worker,
            config: None,
            listeners: Vec::new(),
            routes: Router::new(),
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
            routes: self.routes,
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
    pub fn build(self) -> Result<KafkaWorker<W>, pythia_core::Error> {
        let config = match self.config {
            Some(config) => config,
            None => Config::for_worker::<W>()?,
        };
        let mut worker = KafkaWorker::connect_with_routes(self.worker, config, self.routes)?;
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
            .field("config", &self.config.is_some())
            .field("listeners", &self.listeners.len())
            .finish_non_exhaustive()
    }
}
