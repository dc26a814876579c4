//! Entry points: run a worker on a NATS JetStream consumer from its configuration.

use std::future::Future;

use pythia_core::connector::{Health, Identity, Observer, QueueInstance, Runtime, Sink, SinkSetup};
use pythia_core::events::{Events, Listener};
use pythia_core::{RunSummary, Status, Worker};
use tokio::sync::watch;

use crate::builder::Builder;
use crate::config::Config;
use crate::observe::ConsumerMonitor;
use crate::sink::NatsSink;
use crate::source::NatsSource;

/// A worker set up on a NATS JetStream consumer, not yet consuming: what
/// [`Builder::build`] returns. It connects when the run starts, and again
/// whenever the connection is lost.
///
/// ```no_run
/// # async fn demo<W: pythia_core::Worker>(worker: W, config: pythia_nats::Config) -> Result<(), pythia_core::Error> {
/// let instance = pythia_nats::NatsWorker::builder(worker).config(config).build()?;
/// let mut status = instance.status();
/// let run = tokio::spawn(instance.run(std::future::pending()));
/// status.wait_for(|s| !s.assigned.is_empty()).await.ok(); // consuming
/// # Ok(()) }
/// ```
///
/// `K` is where outputs and dead letters go: by default the NATS
/// publisher of the configuration ([`NatsSink`]); any other [`Sink`], such
/// as a Kafka producer or another server's publisher, with [`Builder::sink`].
pub struct NatsWorker<W: Worker, K: Sink = NatsSink> {
    inner: QueueInstance<W, NatsSource, K, NatsSink>,
}

impl<W: Worker> NatsWorker<W> {
    /// Starts setting up `worker`'s run on NATS: configuration, layers,
    /// event callbacks, the sink; then [`Builder::build`].
    pub fn builder(worker: W) -> Builder<W> {
        Builder::new(worker)
    }
}

impl<W: Worker, K: Sink> NatsWorker<W, K> {
    /// Validates `config` and sets up the source, the sink and the endpoint;
    /// `listeners` are called with each event of the run.
    ///
    /// The connections are named `<worker name>-<instance>` (and
    /// `…-publisher`, `…-monitor`), so the server's `/connz` (`nats server report connections`)
    /// tells the copies apart.
    pub(crate) fn connect(
        worker: W,
        config: Config,
        sink: SinkSetup<Config, K, NatsSink>,
        listeners: Vec<Listener>,
    ) -> Result<Self, pythia_core::Error> {
        config.validate()?;
        let name = config.name().to_owned();
        let identity = Identity::new(&config.worker.instance_name());
        let member = format!("{name}-{}", identity.instance());
        let health = Health::new();
        let source = NatsSource::new(&config, &member, health.clone());
        let (stats, in_flight) = source.stats();
        let (sink, publisher) = sink.resolve(&config, &format!("{member}-publisher"));
        let observer = Observer::new(&config.metrics, health, |metrics| {
            ConsumerMonitor::new(&config, metrics, stats, in_flight)
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

    /// Watches the phase and the assigned subject (assigned once consuming).
    pub fn status(&self) -> watch::Receiver<Status> {
        self.inner.status()
    }

    /// The run's events. Subscribe before [`run`](Self::run) to see them all.
    pub fn events(&self) -> &Events {
        self.inner.events()
    }

    /// Runs until `shutdown` resolves (or a message fails), then stops
    /// consuming, lets the messages in flight finish, acknowledges them and
    /// closes; messages not finished are given back to the consumer (`-NAK`).
    ///
    /// A message is acknowledged only once its outputs are confirmed by the
    /// sink, whichever it is, so nothing acknowledged is still on its way
    /// when this returns. The NATS publisher the run made is closed; a
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
