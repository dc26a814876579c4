//! Entry points: run a worker on a RabbitMQ queue from its configuration.

use std::future::Future;

use pythia_core::connector::{Health, Identity, Observer, QueueInstance, Runtime, Sink, SinkSetup};
use pythia_core::events::{Events, Listener};
use pythia_core::{RunSummary, Status, Worker};
use tokio::sync::watch;

use crate::builder::Builder;
use crate::config::Config;
use crate::observe::QueueMonitor;
use crate::sink::RabbitSink;
use crate::source::RabbitSource;

/// A worker set up on a RabbitMQ queue, not yet consuming: what
/// [`Builder::build`] returns. It connects when the run starts, and again
/// whenever the connection is lost.
///
/// ```no_run
/// # async fn demo<W: pythia_core::Worker>(worker: W, config: pythia_rabbitmq::Config) -> Result<(), pythia_core::Error> {
/// let instance = pythia_rabbitmq::RabbitWorker::builder(worker).config(config).build()?;
/// let mut status = instance.status();
/// let run = tokio::spawn(instance.run(std::future::pending()));
/// status.wait_for(|s| !s.assigned.is_empty()).await.ok(); // consuming
/// # Ok(()) }
/// ```
///
/// `K` is where outputs and dead letters go: by default the RabbitMQ
/// publisher of the configuration ([`RabbitSink`]); any other [`Sink`], such
/// as a Kafka producer, with [`Builder::sink`].
pub struct RabbitWorker<W: Worker, K: Sink = RabbitSink> {
    inner: QueueInstance<W, RabbitSource, K, RabbitSink>,
}

impl<W: Worker> RabbitWorker<W> {
    /// Starts setting up `worker`'s run on RabbitMQ: configuration, layers,
    /// event callbacks, the sink; then [`Builder::build`].
    pub fn builder(worker: W) -> Builder<W> {
        Builder::new(worker)
    }
}

impl<W: Worker, K: Sink> RabbitWorker<W, K> {
    /// Validates `config` and sets up the source, the sink and the endpoint;
    /// `listeners` are called with each event of the run.
    ///
    /// The connections are named `<worker name>-<instance>` (and
    /// `…-publisher`, `…-monitor`), so `rabbitmqctl list_connections name`
    /// tells the copies apart.
    pub(crate) fn connect(
        worker: W,
        config: Config,
        sink: SinkSetup<Config, K, RabbitSink>,
        listeners: Vec<Listener>,
    ) -> Result<Self, pythia_core::Error> {
        config.validate()?;
        let name = config.name().to_owned();
        let identity = Identity::new(&config.worker.instance_name());
        let member = format!("{name}-{}", identity.instance());
        let health = Health::new();
        let mut source = RabbitSource::new(&config, &member, health.clone());
        let (stats, in_flight) = source.stats();
        let (sink, publisher) = sink.resolve(&config, &format!("{member}-publisher"));
        if publisher.is_none() {
            // Its outputs and dead letters go elsewhere: the queues of the
            // configuration's routes are not the source's to declare.
            source = source.without_output_queues();
        }
        let observer = Observer::new(&config.metrics, health, |metrics| {
            QueueMonitor::new(&config, metrics, stats, in_flight)
        })?;
        let runtime = Runtime::new(config.worker.clone(), &name, worker, source, sink)
            .with_identity(identity);
        let mut inner = QueueInstance::new(runtime, publisher, observer);
        inner.listen(listeners);
        Ok(Self { inner })
    }

    /// The metrics this worker exports when `metrics.address` is set.
    pub fn metrics(&self) -> Option<&pythia_core::Metrics> {
        self.inner.metrics()
    }

    /// Watches the phase and the assigned queue (assigned once consuming).
    pub fn status(&self) -> watch::Receiver<Status> {
        self.inner.status()
    }

    /// The run's events. Subscribe before [`run`](Self::run) to see them all.
    pub fn events(&self) -> &Events {
        self.inner.events()
    }

    /// Runs until `shutdown` resolves (or a message fails), then stops
    /// consuming, lets the messages in flight finish, acknowledges them and
    /// closes; deliveries not acknowledged go back to the queue.
    ///
    /// A message is acknowledged only once its outputs are confirmed by the
    /// sink, whichever it is, so nothing acknowledged is still on its way
    /// when this returns. The RabbitMQ publisher the run made is closed; a
    /// sink given with [`Builder::sink`] is left to its owner.
    pub async fn run(
        self,
        shutdown: impl Future<Output = ()> + Send,
    ) -> Result<RunSummary, pythia_core::Error> {
        self.inner.run(shutdown).await
    }

    /// Runs until SIGTERM or SIGINT, then drains, acknowledges and closes.
    ///
    /// Installs a log subscriber on stderr (`RUST_LOG`, default `info`) if
    /// none is set. A second signal during the drain exits at once (what was
    /// not acknowledged is redelivered).
    pub async fn run_until_signal(self) -> Result<RunSummary, pythia_core::Error> {
        crate::init_tracing();
        self.run(pythia_core::shutdown::drain_signal()).await
    }
}
