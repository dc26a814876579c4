//! The monitor that keeps the consumer's series true: a task with a
//! connection of its own that, every `metrics.lag_interval`, reads the
//! consumer's info and this instance's counts. The endpoint around it is
//! [`Observer`](pythia_core::connector::Observer)'s.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use async_nats::jetstream;
use pythia_core::Metrics;
use pythia_core::connector::Monitor;

use crate::config::Config;
use crate::error::NatsError;
use crate::metrics::{ConsumerMetrics, ConsumerState, InstanceState};
use crate::source::{InFlight, Stats};
use crate::topology;

/// Reads the consumer's series into [`ConsumerMetrics`].
pub(crate) struct ConsumerMonitor {
    config: Config,
    metrics: ConsumerMetrics,
    stats: Arc<Stats>,
    in_flight: Arc<InFlight>,
    context: Option<jetstream::Context>,
}

impl ConsumerMonitor {
    /// Registers the consumer's series on `metrics`.
    pub(crate) fn new(
        config: &Config,
        metrics: &Metrics,
        stats: Arc<Stats>,
        in_flight: Arc<InFlight>,
    ) -> Result<Self, pythia_core::Error> {
        let metrics = ConsumerMetrics::register(
            metrics,
            config.name(),
            &config.nats.stream_name(),
            &config.consumer_name(),
        )
        .map_err(|e| NatsError::jetstream("registering the consumer metrics", e))?;
        Ok(Self {
            config: config.clone(),
            metrics,
            stats,
            in_flight,
            context: None,
        })
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

impl Monitor for ConsumerMonitor {
    async fn tick(&mut self) {
        self.metrics.set_instance(InstanceState {
            unacked: self.in_flight.len(),
            redeliveries: self.stats.redeliveries.load(Ordering::Relaxed),
            given_up: self.stats.given_up.load(Ordering::Relaxed),
        });
        let interval = self.config.metrics.lag_interval;
        match tokio::time::timeout(interval.max(Duration::from_secs(1)), self.read()).await {
            Ok(Ok(())) => {}
            Ok(Err(error)) => tracing::debug!(%error, "cannot read the consumer's info"),
            Err(_) => tracing::debug!("the consumer's info did not come in time"),
        }
    }
}
