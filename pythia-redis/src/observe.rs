//! The monitor that keeps the input's series true: a task with a connection
//! of its own that, every `metrics.lag_interval`, reads the stream's length
//! and its group (`XLEN`, `XINFO GROUPS`) or the list's and the processing
//! list's lengths (`LLEN`), and this instance's own counts. The endpoint
//! around it is [`Observer`](pythia_core::connector::Observer)'s.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use pythia_core::Metrics;
use pythia_core::connector::Monitor;
use redis::aio::MultiplexedConnection;

use crate::config::{Config, Mode};
use crate::connection::{self, query};
use crate::error::RedisError;
use crate::metrics::{self, InputMetrics};
use crate::source::{InFlight, Stats, processing_key};

/// Reads the input's series into [`InputMetrics`].
pub(crate) struct InputMonitor {
    group: String,
    input: String,
    consumer: String,
    config: Config,
    metrics: InputMetrics,
    stats: Arc<Stats>,
    in_flight: Arc<InFlight>,
    connection: Option<MultiplexedConnection>,
}

impl InputMonitor {
    /// Registers the input's series on `metrics`.
    pub(crate) fn new(
        config: &Config,
        metrics: &Metrics,
        stats: Arc<Stats>,
        in_flight: Arc<InFlight>,
    ) -> Result<Self, pythia_core::Error> {
        let metrics = InputMetrics::register(metrics)
            .map_err(|e| RedisError::command("registering the input metrics", e))?;
        Ok(Self {
            group: config.name().to_owned(),
            input: config.redis.input_name().to_owned(),
            consumer: config.consumer(),
            config: config.clone(),
            metrics,
            stats,
            in_flight,
            connection: None,
        })
    }

    async fn read_input(&mut self) -> Result<(), RedisError> {
        if self.connection.is_none() {
            let conn =
                connection::connect(&self.config.redis.url, self.config.redis.command_timeout)
                    .await?;
            self.connection = Some(conn);
        }
        let Some(conn) = self.connection.as_mut() else {
            return Ok(());
        };
        match self.config.redis.mode {
            Mode::Stream => {
                let length: i64 = query(conn, "XLEN", redis::cmd("XLEN").arg(&self.input)).await?;
                let groups: redis::Value = query(
                    conn,
                    "XINFO GROUPS",
                    redis::cmd("XINFO").arg("GROUPS").arg(&self.input),
                )
                .await?;
                let group = self.config.group();
                let info = metrics::group_info(&groups, group).unwrap_or_default();
                self.metrics.set_stream(group, &self.input, length, info);
            }
            Mode::List => {
                let length: i64 = query(conn, "LLEN", redis::cmd("LLEN").arg(&self.input)).await?;
                let processing = processing_key(&self.input, &self.consumer);
                let held: i64 = query(conn, "LLEN", redis::cmd("LLEN").arg(&processing)).await?;
                self.metrics
                    .set_list(&self.group, &self.input, &self.consumer, length, held);
            }
        }
        Ok(())
    }
}

impl Monitor for InputMonitor {
    async fn tick(&mut self) {
        self.metrics.set_instance(
            &self.group,
            &self.input,
            self.in_flight.len(),
            self.stats.recovered.load(Ordering::Relaxed),
            self.stats.dead_lettered.load(Ordering::Relaxed),
        );
        if let Err(error) = self.read_input().await {
            self.connection = None;
            tracing::debug!(%error, "cannot read the input's series");
        }
    }
}
