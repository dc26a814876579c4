//! A worker's observability: its metrics, the `/metrics` and `/health/*`
//! endpoint, and the lag monitor that keeps lag, readiness and liveness true.
//!
//! The lag monitor is a thread of its own with its own broker clients (see
//! [`crate::lag`]): every `metrics.lag_interval` it reads the lag of the
//! partitions assigned to this member, updates their gauges (removing those of
//! revoked partitions), records whether the broker answered (readiness) and
//! which partitions are stuck (liveness). Nothing it does waits on the worker,
//! so a busy, paused or hung worker still reports true lag.

use std::sync::mpsc as std_mpsc;
use std::thread;
use std::time::{Duration, Instant};

use pythia_core::endpoint::{Bound, Endpoint, Server};
use pythia_core::health::{Health, StallDetector};
use pythia_core::{Metrics, PartitionId, Status};
use tokio::sync::watch;

use crate::config::Config;
use crate::error::KafkaError;
use crate::lag::LagReader;

/// Longest wait for one broker request of the lag monitor.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

/// What a worker observes itself with, when `metrics.address` is set.
pub(crate) struct Observer {
    pub(crate) metrics: Metrics,
    health: Health,
    bound: Bound,
    config: Config,
}

/// A running observer: dropping it stops the server and the lag monitor.
pub(crate) struct Running {
    _server: Server,
    stop: Option<std_mpsc::Sender<()>>,
    thread: Option<thread::JoinHandle<()>>,
}

impl Observer {
    /// Binds the endpoint now, so a bad or taken address fails at start.
    pub(crate) fn new(config: &Config) -> Result<Option<Self>, KafkaError> {
        let Some(address) = config.metrics.socket_address()? else {
            return Ok(None);
        };
        let metrics = Metrics::new();
        let health = Health::new();
        let bound = Endpoint::new(metrics.clone())
            .health(health.clone())
            .bind(address, "metrics.address")?;
        Ok(Some(Self {
            metrics,
            health,
            bound,
            config: config.clone(),
        }))
    }

    /// Starts serving and monitoring the run whose status is `status`.
    pub(crate) fn start(self, status: watch::Receiver<Status>) -> Result<Running, KafkaError> {
        self.health.watch(status.clone());
        let server = self.bound.spawn();
        let group = self.config.kafka.group.clone().unwrap_or_default();
        let reader = LagReader::new(&self.config.kafka, &group, REQUEST_TIMEOUT)?;
        let monitor = Monitor {
            reader,
            topics: self.config.kafka.topics.clone(),
            metrics: self.metrics,
            health: self.health,
            detector: StallDetector::new(self.config.health.stall_timeout),
            status,
            reported: Vec::new(),
        };
        let interval = self.config.metrics.lag_interval;
        let (stop, stopped) = std_mpsc::channel();
        let thread = thread::Builder::new()
            .name(format!("pythia-lag-{group}"))
            .spawn(move || monitor.run(interval, stopped))
            .map_err(|e| KafkaError::Io(e.to_string()))?;
        Ok(Running {
            _server: server,
            stop: Some(stop),
            thread: Some(thread),
        })
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        drop(self.stop.take());
        if let Some(thread) = self.thread.take() {
            // It stops within one broker request; don't block a runtime thread.
            thread::spawn(move || thread.join());
        }
    }
}

struct Monitor {
    reader: LagReader,
    topics: Vec<String>,
    metrics: Metrics,
    health: Health,
    detector: StallDetector,
    status: watch::Receiver<Status>,
    /// Partitions whose gauges are set.
    reported: Vec<PartitionId>,
}

impl Monitor {
    fn run(mut self, interval: Duration, stopped: std_mpsc::Receiver<()>) {
        loop {
            let started = Instant::now();
            self.tick();
            let wait = interval.saturating_sub(started.elapsed());
            match stopped.recv_timeout(wait) {
                Err(std_mpsc::RecvTimeoutError::Timeout) => {}
                _ => return,
            }
        }
    }

    fn tick(&mut self) {
        let group = self.reader.group().to_owned();
        let assigned = self.status.borrow().assigned.clone();
        self.metrics.set_assigned(&group, assigned.len());
        match self.reader.read(&self.topics, Some(&assigned)) {
            Ok(lags) => {
                self.health.set_broker(Ok(()));
                for lag in &lags {
                    self.metrics.set_partition_lag(&group, lag);
                }
                let now: Vec<PartitionId> = lags
                    .iter()
                    .map(|l| PartitionId::new(l.topic.as_str(), l.partition))
                    .collect();
                for gone in self.reported.iter().filter(|p| !now.contains(p)) {
                    self.metrics
                        .remove_partition(&group, gone.topic(), gone.index());
                }
                self.reported = now;
                let stalled = self.detector.observe(&lags, Instant::now());
                if !stalled.is_empty() {
                    tracing::warn!(?stalled, "partitions are not making progress");
                }
                self.health.set_stalled(stalled);
            }
            Err(error) => {
                tracing::warn!(%error, "cannot read consumer lag; the broker does not answer");
                self.health.set_broker(Err(error.to_string()));
            }
        }
    }
}
