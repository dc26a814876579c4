//! The monitor that keeps the queue's series true: a task with a
//! connection of its own that, every `metrics.lag_interval`, reads the
//! queue's depth with a passive declare and this instance's unacknowledged
//! deliveries and redeliveries. The endpoint around it is
//! [`Observer`](pythia_core::connector::Observer)'s.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use lapin::{Channel, Connection};
use pythia_core::Metrics;
use pythia_core::connector::Monitor;

use crate::config::Config;
use crate::error::RabbitError;
use crate::metrics::QueueMetrics;
use crate::source::{InFlight, Stats};
use crate::topology;

/// Reads the queue's series into [`QueueMetrics`].
pub(crate) struct QueueMonitor {
    group: String,
    queue: String,
    config: Config,
    metrics: QueueMetrics,
    stats: Arc<Stats>,
    in_flight: Arc<InFlight>,
    connection: Option<(Connection, Channel)>,
}

impl QueueMonitor {
    /// Registers the queue's series on `metrics`.
    pub(crate) fn new(
        config: &Config,
        metrics: &Metrics,
        stats: Arc<Stats>,
        in_flight: Arc<InFlight>,
    ) -> Result<Self, pythia_core::Error> {
        let metrics = QueueMetrics::register(metrics)
            .map_err(|e| RabbitError::amqp("registering the queue metrics", e))?;
        Ok(Self {
            group: config.name().to_owned(),
            queue: config.rabbitmq.queue_name().to_owned(),
            config: config.clone(),
            metrics,
            stats,
            in_flight,
            connection: None,
        })
    }

    async fn read_depth(&mut self) -> Result<(), RabbitError> {
        if self.connection.is_none() {
            let name = format!("{}-monitor", self.group);
            let connection = topology::connect(&self.config.rabbitmq, &name).await?;
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

impl Monitor for QueueMonitor {
    async fn tick(&mut self) {
        let redeliveries = self.stats.redeliveries.load(Ordering::Relaxed);
        self.metrics
            .set_instance(&self.group, &self.queue, self.in_flight.len(), redeliveries);
        if let Err(error) = self.read_depth().await {
            self.connection = None;
            tracing::debug!(%error, "cannot read the queue depth");
        }
    }
}
