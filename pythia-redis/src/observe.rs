//! A worker's observability: the `/metrics` and `/health/*` endpoint, and the
//! monitor that keeps the input's series true.
//!
//! Readiness follows the consume task's connection (it sets the broker state
//! of the shared [`Health`] as it connects and loses the connection) and the
//! run's phase. The monitor is a task with a connection of its own: every
//! `metrics.lag_interval` it reads the stream's length and its group
//! (`XLEN`, `XINFO GROUPS`) or the list's and the processing list's lengths
//! (`LLEN`), and this instance's own counts.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use pythia_core::connector::{Bound, Endpoint, Health, Server};
use pythia_core::{Metrics, Status};
use redis::aio::MultiplexedConnection;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::config::{Config, Mode};
use crate::connection::{self, query};
use crate::error::RedisError;
use crate::metrics::{self, InputMetrics};
use crate::source::{Stats, processing_key};

/// What a worker observes itself with, when `metrics.address` is set.
pub(crate) struct Observer {
    pub(crate) metrics: Metrics,
    input_metrics: InputMetrics,
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
        let input_metrics = InputMetrics::register(&metrics)
            .map_err(|e| RedisError::command("registering the input metrics", e))?;
        let bound = Endpoint::new(metrics.clone())
            .health(health.clone())
            .bind(address, "metrics.address")?;
        Ok(Some(Self {
            metrics,
            input_metrics,
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
            input: self.config.redis.input_name().to_owned(),
            consumer: self.config.consumer(),
            config: self.config,
            metrics: self.input_metrics,
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
    input: String,
    consumer: String,
    config: Config,
    metrics: InputMetrics,
    stats: Arc<Stats>,
    connection: Option<MultiplexedConnection>,
}

impl Monitor {
    async fn run(mut self, interval: Duration, unacked: impl Fn() -> usize) {
        let mut ticks = tokio::time::interval(interval);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            ticks.tick().await;
            self.metrics.set_instance(
                &self.group,
                &self.input,
                unacked(),
                self.stats.recovered.load(Ordering::Relaxed),
                self.stats.dead_lettered.load(Ordering::Relaxed),
            );
            if let Err(error) = self.read_input().await {
                self.connection = None;
                tracing::debug!(%error, "cannot read the input's series");
            }
        }
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
