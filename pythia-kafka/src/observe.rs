//! A worker's observability: its metrics, the `/metrics`, `/health/*` and
//! `/status` endpoint, and the lag monitor that keeps lag, readiness and liveness true.
//!
//! The lag monitor is a thread of its own with its own broker clients (see
//! [`crate::lag`]): every `metrics.lag_interval` it reads the lag of the
//! partitions assigned to this member, updates their gauges (removing those of
//! revoked partitions) and records which partitions are stuck (liveness).
//! Nothing it does waits on the worker, so a busy, paused or hung worker still
//! reports true lag.
//!
//! Readiness follows a broker probe, another thread with a client of its own:
//! every `PROBE_INTERVAL` it asks for metadata and waits at most
//! `PROBE_TIMEOUT`. It is not left to the lag monitor, whose read of many
//! partitions can take several request timeouts: a network partition that
//! began during a read went unseen until the read ended, after the partition
//! had healed (measured by `tests/chaos_network.rs`: a 10 s partition that
//! readiness missed entirely).

use std::sync::mpsc as std_mpsc;
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use axum::Router;
use pythia_core::connector::{Bound, Endpoint, Health, Server, StallDetector};
use pythia_core::{Metrics, PartitionId, Status};
use rdkafka::consumer::{BaseConsumer, Consumer};
use tokio::sync::watch;

use crate::config::Config;
use crate::error::KafkaError;
use crate::lag::LagReader;

/// Longest wait for one broker request of the lag monitor.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

/// How often the broker probe asks whether the broker answers.
const PROBE_INTERVAL: Duration = Duration::from_secs(1);

/// How long the probe waits for an answer before the worker is not ready: a
/// silent broker (a network partition, a black hole) is seen within
/// `PROBE_INTERVAL + PROBE_TIMEOUT`.
const PROBE_TIMEOUT: Duration = Duration::from_secs(3);

/// What a worker observes itself with, when `metrics.address` is set.
pub(crate) struct Observer {
    pub(crate) metrics: Metrics,
    health: Health,
    /// The run's status once it starts, for `/status`.
    status: StatusSlot,
    bound: Bound,
    config: Config,
}

/// A running observer: dropping it stops the server, the lag monitor and the
/// broker probe.
pub(crate) struct Running {
    _server: Server,
    /// Dropping a sender stops its thread.
    stops: Vec<std_mpsc::Sender<()>>,
    threads: Vec<thread::JoinHandle<()>>,
}

impl Observer {
    /// Binds the endpoint now, so a bad or taken address fails at start.
    /// `routes` are served beside `/metrics`, `/health/*` and `/status`;
    /// `member` is the consumer's `client.id`.
    pub(crate) fn new(
        config: &Config,
        member: &str,
        routes: Router,
    ) -> Result<Option<Self>, KafkaError> {
        let Some(address) = config.metrics.socket_address()? else {
            return Ok(None);
        };
        let metrics = Metrics::new();
        let health = Health::new();
        let status = StatusSlot::default();
        let about = About {
            client_id: member.to_owned(),
            group: config.kafka.group.clone().unwrap_or_default(),
        };
        let bound = Endpoint::new(metrics.clone())
            .health(health.clone())
            .merge(status_route(about, health.clone(), status.clone()))
            .merge(routes)
            .bind(address, "metrics.address")?;
        Ok(Some(Self {
            metrics,
            health,
            status,
            bound,
            config: config.clone(),
        }))
    }

    /// Starts serving and monitoring the run whose status is `status`.
    pub(crate) fn start(self, status: watch::Receiver<Status>) -> Result<Running, KafkaError> {
        self.health.watch(status.clone());
        *self.status.lock().unwrap_or_else(|p| p.into_inner()) = Some(status.clone());
        let server = self.bound.spawn();
        let group = self.config.kafka.group.clone().unwrap_or_default();
        let reader = LagReader::new(&self.config.kafka, &group, REQUEST_TIMEOUT)?;
        let monitor = Monitor {
            reader,
            topics: self.config.kafka.topics.clone(),
            metrics: self.metrics,
            health: self.health.clone(),
            detector: StallDetector::new(self.config.health.stall_timeout),
            status,
            reported: Vec::new(),
        };
        let mut client = self.config.kafka.base();
        client.set("client.id", format!("pythia-probe-{group}"));
        let probe = Probe {
            client: client.create()?,
            topic: self.config.kafka.topics.first().cloned(),
            health: self.health,
        };
        let interval = self.config.metrics.lag_interval;
        let (monitor_stop, monitor_stopped) = std_mpsc::channel();
        let (probe_stop, probe_stopped) = std_mpsc::channel();
        let threads = vec![
            spawn(format!("pythia-lag-{group}"), move || {
                monitor.run(interval, monitor_stopped)
            })?,
            spawn(format!("pythia-probe-{group}"), move || {
                probe.run(probe_stopped)
            })?,
        ];
        Ok(Running {
            _server: server,
            stops: vec![monitor_stop, probe_stop],
            threads,
        })
    }
}

type StatusSlot = Arc<Mutex<Option<watch::Receiver<Status>>>>;

/// Who the instance is, for `/status`.
struct About {
    client_id: String,
    group: String,
}

/// `GET /status`: the instance's identity, assigned partitions, liveness and
/// readiness with their reasons, as JSON (read by `pythia console`).
fn status_route(about: About, health: Health, status: StatusSlot) -> Router {
    use axum::{Json, routing::get};
    let about = Arc::new(about);
    Router::new().route(
        "/status",
        get(move || {
            let (about, health, status) = (about.clone(), health.clone(), status.clone());
            async move {
                let status = status
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .as_ref()
                    .map(|s| s.borrow().clone())
                    .unwrap_or_default();
                Json(status_json(&about, &status, health.live(), health.ready()))
            }
        }),
    )
}

fn status_json(
    about: &About,
    status: &Status,
    live: Result<(), String>,
    ready: Result<String, String>,
) -> serde_json::Value {
    let assigned: Vec<serde_json::Value> = status
        .assigned
        .iter()
        .map(|p| serde_json::json!({"topic": p.topic(), "partition": p.index()}))
        .collect();
    let (ready, ready_why) = match ready {
        Ok(summary) => (true, summary),
        Err(reason) => (false, reason),
    };
    serde_json::json!({
        "client_id": about.client_id,
        "group": about.group,
        "phase": format!("{:?}", status.phase).to_lowercase(),
        "assigned": assigned,
        "live": live.is_ok(),
        "live_reason": live.err(),
        "ready": ready,
        "ready_reason": ready_why,
    })
}

fn spawn(
    name: String,
    body: impl FnOnce() + Send + 'static,
) -> Result<thread::JoinHandle<()>, KafkaError> {
    thread::Builder::new()
        .name(name)
        .spawn(body)
        .map_err(|e| KafkaError::Io(e.to_string()))
}

impl Drop for Running {
    fn drop(&mut self) {
        self.stops.clear();
        let threads = std::mem::take(&mut self.threads);
        // They stop within one broker request; don't block a runtime thread.
        thread::spawn(move || {
            for thread in threads {
                let _ = thread.join();
            }
        });
    }
}

/// Asks the broker for metadata every `PROBE_INTERVAL`; readiness follows
/// the answers.
struct Probe {
    client: BaseConsumer,
    /// Metadata of one topic is enough, and cheap; all topics without one.
    topic: Option<String>,
    health: Health,
}

impl Probe {
    fn run(self, stopped: std_mpsc::Receiver<()>) {
        let mut answered = None;
        loop {
            let result = self
                .client
                .fetch_metadata(self.topic.as_deref(), PROBE_TIMEOUT)
                .map(drop)
                .map_err(|e| e.to_string());
            match (&result, answered) {
                (Err(error), Some(true) | None) => {
                    tracing::warn!(%error, "the broker does not answer: not ready");
                }
                (Ok(()), Some(false)) => tracing::info!("the broker answers again: ready"),
                _ => {}
            }
            answered = Some(result.is_ok());
            self.health.set_broker(result);
            match stopped.recv_timeout(PROBE_INTERVAL) {
                Err(std_mpsc::RecvTimeoutError::Timeout) => {}
                _ => return,
            }
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
                // Readiness is the probe's: a lag read can fail for reasons
                // of its own (a coordinator loading its offsets, say).
                tracing::warn!(%error, "cannot read consumer lag");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_names_the_instance_its_partitions_and_why_it_is_not_ready() {
        let about = About {
            client_id: "billing-0".into(),
            group: "billing".into(),
        };
        let mut status = Status::default();
        status.phase = pythia_core::Phase::Running;
        status.assigned = vec![PartitionId::new("orders", 1), PartitionId::new("orders", 3)];
        let json = status_json(
            &about,
            &status,
            Err("stalled: orders/1".into()),
            Err("broker unreachable: timeout".into()),
        );
        assert_eq!(json["client_id"], "billing-0");
        assert_eq!(json["phase"], "running");
        assert_eq!(json["assigned"][1]["partition"], 3);
        assert_eq!(json["live"], false);
        assert_eq!(json["live_reason"], "stalled: orders/1");
        assert_eq!(json["ready"], false);
        assert_eq!(json["ready_reason"], "broker unreachable: timeout");
    }
}
