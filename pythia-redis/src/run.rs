//! Entry points: run a worker on a Redis stream or list from its configuration.

use std::future::Future;

use pythia_core::connector::{Health, Identity, Observer, QueueInstance, Runtime, Sink, SinkSetup};
use pythia_core::events::{Events, Listener};
use pythia_core::{RunSummary, Status, Worker};
use tokio::sync::watch;

use crate::builder::Builder;
use crate::config::Config;
use crate::observe::InputMonitor;
use crate::sink::RedisSink;
use crate::source::RedisSource;

/// A worker set up on a Redis stream or list, not yet consuming: what
/// [`Builder::build`] returns. It connects when the run starts, and again
/// whenever the connection is lost.
///
/// ```no_run
/// # async fn demo<W: pythia_core::Worker>(worker: W, config: pythia_redis::Config) -> Result<(), pythia_core::Error> {
/// let instance = pythia_redis::RedisWorker::builder(worker).config(config).build()?;
/// let mut status = instance.status();
/// let run = tokio::spawn(instance.run(std::future::pending()));
/// status.wait_for(|s| !s.assigned.is_empty()).await.ok(); // consuming
/// # Ok(()) }
/// ```
///
/// `K` is where outputs and dead letters go: by default the Redis writer of
/// the configuration ([`RedisSink`]); any other [`Sink`], such as a Kafka
/// producer, with [`Builder::sink`].
pub struct RedisWorker<W: Worker, K: Sink = RedisSink> {
    inner: QueueInstance<W, RedisSource, K, RedisSink>,
}

impl<W: Worker> RedisWorker<W> {
    /// Starts setting up `worker`'s run on Redis: configuration, layers,
    /// event callbacks, the sink; then [`Builder::build`].
    pub fn builder(worker: W) -> Builder<W> {
        Builder::new(worker)
    }
}

impl<W: Worker, K: Sink> RedisWorker<W, K> {
    /// Validates `config` and sets up the source, the sink and the endpoint;
    /// `listeners` are called with each event of the run.
    pub(crate) fn connect(
        worker: W,
        config: Config,
        sink: SinkSetup<Config, K, RedisSink>,
        listeners: Vec<Listener>,
    ) -> Result<Self, pythia_core::Error> {
        config.validate()?;
        let name = config.name().to_owned();
        let identity = Identity::new(&config.consumer());
        let health = Health::new();
        let source = RedisSource::new(&config, health.clone());
        let (stats, in_flight) = source.stats();
        let (sink, writer) = sink.resolve(&config, &config.consumer());
        let observer = Observer::new(&config.metrics, health, |metrics| {
            InputMonitor::new(&config, metrics, stats, in_flight)
        })?;
        let runtime = Runtime::new(config.worker.clone(), &name, worker, source, sink)
            .with_identity(identity);
        let mut inner = QueueInstance::new(runtime, writer, observer);
        inner.listen(listeners);
        Ok(Self { inner })
    }

    /// The metrics this worker exports when `metrics.address` is set.
    pub fn metrics(&self) -> Option<&pythia_core::Metrics> {
        self.inner.metrics()
    }

    /// Watches the phase and the assigned input (assigned once consuming).
    pub fn status(&self) -> watch::Receiver<Status> {
        self.inner.status()
    }

    /// The run's events. Subscribe before [`run`](Self::run) to see them all.
    pub fn events(&self) -> &Events {
        self.inner.events()
    }

    /// Runs until `shutdown` resolves (or a message fails), then stops
    /// taking, lets the messages in flight finish, acknowledges them and
    /// closes; what is not acknowledged is given back for the other
    /// instances to claim at once.
    ///
    /// A message is acknowledged only once its outputs are confirmed by the
    /// sink, whichever it is, so nothing acknowledged is still on its way
    /// when this returns. The Redis writer the run made is closed; a sink
    /// given with [`Builder::sink`] is left to its owner.
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
    /// not acknowledged goes to the other instances after `redis.claim_idle`).
    pub async fn run_until_signal(self) -> Result<RunSummary, pythia_core::Error> {
        crate::init_tracing();
        self.run(pythia_core::shutdown::drain_signal()).await
    }
}
