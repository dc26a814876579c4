//! A worker's observability: the `/metrics` and `/health/*` endpoint, and the
//! monitor that keeps the consumer's series true.
//!
//! Readiness follows the fetch task's connection (it sets the broker state
//! of the shared [`Health`] as the client connects and loses the server) and
//! the run's phase. The monitor is a task with a connection of its own:
//! every `metrics.lag_interval` it reads the consumer's info and this
//! instance's counts.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use async_nats::jetstream;
use pythia_core::connector::{Bound, Endpoint, Health, Server};
use pythia_core::{Metrics, Status};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::config::Config;
use crate::error::NatsError;
use crate::metrics::{ConsumerMetrics, ConsumerState, InstanceState};
use crate::source::Stats;
use crate::topology;

/// What a worker observes itself with, when `metrics.address` is set.
pub(crate) struct Observer {
    pub(crate) metrics: Metrics,
    consumer_metrics: ConsumerMetrics,
    health: Health,
    bound: Bound,
    config: Config,
}

/// A running observer: dropping it stops the server and the monitor.
pub(crate) struct Running {
    _server: Server,
    monitor: JoinHandle<()>,
}

impl Drop for Running {
    fn drop(&mut self) {
        self.monitor.abort();
    }
}

impl Observer {
    /// Binds the endpoint now, so a bad or taken address fails at start.
    pub(crate) fn new(config: &Config, health: Health) -> Result<Option<Self>, pythia_core::Error> {
        let Some(address) = config.metrics.socket_address()? else {
            return Ok(None);
        };
        let metrics = Metrics::new();
        let consumer_metrics = ConsumerMetrics::register(
            &metrics,
            config.name(),
            &config.nats.stream_name(),
            &config.consumer_name(),
        )
        .map_err(|e| NatsError::jetstream("registering the consumer metrics", e))?;
        let bound = Endpoint::new(metrics.clone())
            .health(health.clone())
            .bind(address, "metrics.address")?;
        Ok(Some(Self {
            metrics,
            consumer_metrics,
            health,
            bound,
            config: config.clone(),
        }))
    }

    /// Starts serving and monitoring the run whose status is `status`.
    pub(crate) fn start(
        self,
        status: watch::Receiver<Status>,
        stats: Arc<Stats>,
        unacked: impl Fn() -> usize + Send + 'static,
    ) -> Running {
        self.health.watch(status);
        let server = self.bound.spawn();
        let monitor = Monitor {
            config: self.config,
            metrics: self.consumer_metrics,
            stats,
            context: None,
        };
        let interval = monitor.config.metrics.lag_interval;
        let monitor = tokio::spawn(monitor.run(interval, unacked));
        Running {
            _server: server,
            monitor,
        }
    }
}

struct Monitor {
    config: Config,
    metrics: ConsumerMetrics,
    stats: Arc<Stats>,
    context: Option<jetstream::Context>,
}

impl Monitor {
    async fn run(mut self, interval: Duration, unacked: impl Fn() -> usize) {
        let mut ticks = tokio::time::interval(interval);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            ticks.tick().await;
            self.metrics.set_instance(InstanceState {
                unacked: unacked(),
                redeliveries: self.stats.redeliveries.load(Ordering::Relaxed),
                given_up: self.stats.given_up.load(Ordering::Relaxed),
            });
            match tokio::time::timeout(interval.max(Duration::from_secs(1)), self.read()).await {
                Ok(Ok(())) => {}
                Ok(Err(error)) => tracing::debug!(%error, "cannot read the consumer's info"),
                Err(_) => tracing::debug!("the consumer's info did not come in time"),
            }
        }
    }

    async fn read(&mut self) -> Result<(), NatsError> {
        if self.context.is_none() {
            let name = format!("{}-monitor", self.config.name());
            let client = topology::connect(&self.config.nats, &name, None).await?;
            self.context = Some(topology::jetstream(client));
        }
        let Some(js) = &self.context else {
            return Ok(());
        };
        let stream = js
            .get_stream_no_info(self.config.nats.stream_name())
            .await
            .map_err(|e| NatsError::jetstream("stream lookup", e))?;
        let info = stream
            .consumer_info(self.config.consumer_name())
            .await
            .map_err(|e| NatsError::jetstream("consumer info", e))?;
        self.metrics.set_consumer(ConsumerState {
            pending: info.num_pending,
            ack_pending: info.num_ack_pending,
            redelivered: info.num_redelivered,
        });
        Ok(())
    }
}
