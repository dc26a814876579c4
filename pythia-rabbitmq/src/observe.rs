//! A worker's observability: the `/metrics` and `/health/*` endpoint, and the
//! monitor that keeps the queue's series true.
//!
//! Readiness follows the consume task's connection (it sets the broker state
//! of the shared [`Health`] as it connects and loses the connection) and the
//! run's phase. The monitor is a task with a connection of its own: every
//! `metrics.lag_interval` it reads the queue's depth with a passive declare
//! and this instance's unacknowledged deliveries and redeliveries.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use lapin::{Channel, Connection};
use pythia_core::connector::{Bound, Endpoint, Health, Server};
use pythia_core::{Metrics, Status};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::config::Config;
use crate::error::RabbitError;
use crate::metrics::QueueMetrics;
use crate::source::Stats;
use crate::topology;

/// What a worker observes itself with, when `metrics.address` is set.
pub(crate) struct Observer {
    pub(crate) metrics: Metrics,
    queue_metrics: QueueMetrics,
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
        let queue_metrics = QueueMetrics::register(&metrics)
            .map_err(|e| RabbitError::amqp("registering the queue metrics", e))?;
        let bound = Endpoint::new(metrics.clone())
            .health(health.clone())
            .bind(address, "metrics.address")?;
        Ok(Some(Self {
            metrics,
            queue_metrics,
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
            group: self.config.name().to_owned(),
            queue: self.config.rabbitmq.queue_name().to_owned(),
            config: self.config,
            metrics: self.queue_metrics,
            stats,
            connection: None,
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
    group: String,
    queue: String,
    config: Config,
    metrics: QueueMetrics,
    stats: Arc<Stats>,
    connection: Option<(Connection, Channel)>,
}

impl Monitor {
    async fn run(mut self, interval: Duration, unacked: impl Fn() -> usize) {
        let mut ticks = tokio::time::interval(interval);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            ticks.tick().await;
            let redeliveries = self.stats.redeliveries.load(Ordering::Relaxed);
            self.metrics
                .set_instance(&self.group, &self.queue, unacked(), redeliveries);
            if let Err(error) = self.read_depth().await {
                self.connection = None;
                tracing::debug!(%error, "cannot read the queue depth");
            }
        }
    }

    async fn read_depth(&mut self) -> Result<(), RabbitError> {
        if self.connection.is_none() {
            let name = format!("{}-monitor", self.group);
            let connection = topology::connect(&self.config.rabbitmq.url, &name).await?;
            let channel = connection
                .create_channel()
                .await
                .map_err(|e| RabbitError::amqp("channel.open", e))?;
            self.connection = Some((connection, channel));
        }
        let Some((_, channel)) = &self.connection else {
            return Ok(());
        };
        let depth = topology::depth(channel, &self.queue).await?;
        self.metrics
            .set_depth(&self.group, &self.queue, depth.ready, depth.consumers);
        Ok(())
    }
}
