//! Entry points: run a worker on a Redis stream or list from its configuration.

use std::future::Future;
use std::sync::Arc;

use pythia_core::connector::{Health, Identity, Runtime, Sink};
use pythia_core::events::{Events, WorkerEvent};
use pythia_core::{RunSummary, Status, Worker};
use tokio::sync::{broadcast, watch};

use crate::builder::{Builder, SinkSetup};
use crate::config::Config;
use crate::observe::Observer;
use crate::sink::RedisSink;
use crate::source::RedisSource;
use pythia_core::events::{Listener, call_listeners};

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
    runtime: Runtime<W, RedisSource, K>,
    /// The writer the run made, closed at its end; `None` for a sink
    /// given to the builder, which stays its owner's.
    writer: Option<RedisSink>,
    observer: Option<Observer>,
    stats: Arc<crate::source::Stats>,
    unacked: Arc<dyn Fn() -> usize + Send + Sync>,
    listeners: Option<(broadcast::Receiver<WorkerEvent>, Vec<Listener>)>,
}

impl<W: Worker> RedisWorker<W> {
    /// Starts setting up `worker`'s run on Redis: configuration, layers,
    /// event callbacks, the sink; then [`Builder::build`].
    pub fn builder(worker: W) -> Builder<W> {
        Builder::new(worker)
    }
}

impl<W: Worker, K: Sink> RedisWorker<W, K> {
    /// Validates `config` and sets up the source, the sink and the endpoint.
    pub(crate) fn connect(
        worker: W,
        config: Config,
        sink: SinkSetup<K>,
    ) -> Result<Self, pythia_core::Error> {
        config.validate()?;
        let name = config.name().to_owned();
        let identity = Identity::new(&config.consumer());
        let health = Health::new();
        let source = RedisSource::new(&config, health.clone());
        let (stats, in_flight) = source.stats();
        let (sink, writer) = match sink {
            SinkSetup::Writer(make) => make(&config),
            SinkSetup::Given(sink) => (sink, None),
        };
        let observer = Observer::new(&config, health)?;
        let mut runtime = Runtime::with_shared(
            config.worker.clone(),
            &name,
            Arc::new(worker),
            source,
            Arc::new(sink),
        )
        .with_identity(identity)
        .with_events(Events::new());
        if let Some(observer) = &observer {
            runtime = runtime.with_metrics(observer.metrics.clone());
        }
        Ok(Self {
            runtime,
            writer,
            observer,
            stats,
            unacked: Arc::new(move || in_flight.len()),
            listeners: None,
        })
    }

    /// Calls `listeners` with each event of the run (subscribed now, so
    /// none is missed).
    pub(crate) fn listen(&mut self, listeners: Vec<Listener>) {
        self.listeners = Some((self.runtime.events().subscribe(), listeners));
    }

    /// The metrics this worker exports when `metrics.address` is set.
    pub fn metrics(&self) -> Option<&pythia_core::Metrics> {
        self.observer.as_ref().map(|o| &o.metrics)
    }

    /// Watches the phase and the assigned input (assigned once consuming).
    pub fn status(&self) -> watch::Receiver<Status> {
        self.runtime.status()
    }

    /// The run's events. Subscribe before [`run`](Self::run) to see them all.
    pub fn events(&self) -> &Events {
        self.runtime.events()
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
        let unacked = self.unacked.clone();
        let _observing = self.observer.map(|observer| {
            observer.start(self.runtime.status(), self.stats.clone(), move || unacked())
        });
        let listening = self
            .listeners
            .map(|(events, listeners)| tokio::spawn(call_listeners(events, listeners)));
        let result = self.runtime.run(shutdown).await;
        if let Some(writer) = &self.writer {
            writer.close().await;
        }
        if let Some(listening) = listening {
            let _ = tokio::time::timeout(std::time::Duration::from_secs(5), listening).await;
        }
        result
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
