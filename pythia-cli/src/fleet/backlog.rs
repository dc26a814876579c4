//! What a fleet scales on: a Kafka group's lag, read from the brokers as
//! `pythia lag` does, or a RabbitMQ queue's backlog — the messages ready (a
//! passive `queue.declare`, as `pythia depth` does) plus the deliveries the
//! instances hold unacknowledged (the sum of their
//! `pythia_queue_unacked_messages`), since AMQP does not tell those.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use lapin::Connection;
use pythia_core::metrics::PartitionLag;
use pythia_kafka::LagReader;
use pythia_rabbitmq::AmqpUrl;

use super::policy::Observation;
use crate::{probe, rabbit};

/// The longest wait for the broker, per read.
const BROKER_TIMEOUT: Duration = Duration::from_secs(5);
/// The longest wait for an instance's `/metrics`.
const PROBE_TIMEOUT: Duration = Duration::from_secs(2);

/// The fleet's scaling signal; cheap to clone.
#[derive(Clone)]
pub(crate) enum Signal {
    Lag(GroupLag),
    Queue(QueueBacklog),
}

/// What the broker says now, for `fleet status`.
pub(crate) enum Reading {
    /// The group's lag per partition.
    Lags(Vec<PartitionLag>),
    /// The queue's depth (unacked is counted from the instances).
    Queue(rabbit::Depth),
}

impl Signal {
    /// What the policy decides on. `instances` are the metrics addresses of
    /// every instance, stopping ones included: what they hold is in progress.
    pub(crate) async fn observe(&self, instances: &[String]) -> Result<Observation, String> {
        match self {
            Self::Lag(group) => {
                let lags = group.read().await?;
                Ok(Observation::Lag {
                    lag: lags.iter().map(|p| p.lag).sum(),
                    partitions: lags.len(),
                    lagging: lags.iter().filter(|p| p.lag > 0).count(),
                })
            }
            Self::Queue(queue) => {
                let depth = queue.depth().await?;
                Ok(Observation::Queue {
                    ready: depth.ready.into(),
                    unacked: queue.unacked(instances).await,
                })
            }
        }
    }

    /// The lag per partition or the queue's depth.
    pub(crate) async fn read(&self) -> Result<Reading, String> {
        match self {
            Self::Lag(group) => group.read().await.map(Reading::Lags),
            Self::Queue(queue) => queue.depth().await.map(Reading::Queue),
        }
    }

    /// The group or queue, for `fleet status`.
    pub(crate) fn describe(&self) -> serde_json::Value {
        match self {
            Self::Lag(group) => serde_json::json!({"group": group.group}),
            Self::Queue(queue) => serde_json::json!({"queue": queue.queue}),
        }
    }
}

/// A consumer group's lag over its topics.
#[derive(Clone)]
pub(crate) struct GroupLag {
    pub(crate) group: String,
    pub(crate) topics: Vec<String>,
    pub(crate) reader: Arc<Mutex<LagReader>>,
}

impl GroupLag {
    async fn read(&self) -> Result<Vec<PartitionLag>, String> {
        let (reader, topics) = (self.reader.clone(), self.topics.clone());
        let group = self.group.clone();
        tokio::task::spawn_blocking(move || {
            reader
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .read(&topics, None)
                .map_err(|e| format!("reading the lag of group `{group}`: {e}"))
        })
        .await
        .unwrap_or_else(|e| Err(format!("the lag reader panicked: {e}")))
    }
}

/// A RabbitMQ queue, read over one connection kept between reads (opened
/// again after a failure).
#[derive(Clone)]
pub(crate) struct QueueBacklog {
    pub(crate) queue: String,
    url: AmqpUrl,
    connection: Arc<tokio::sync::Mutex<Option<Connection>>>,
}

impl QueueBacklog {
    pub(crate) fn new(queue: String, url: AmqpUrl) -> Self {
        Self {
            queue,
            url,
            connection: Arc::default(),
        }
    }

    /// Messages ready and consumers; errors never show the password.
    async fn depth(&self) -> Result<rabbit::Depth, String> {
        let mut held = self.connection.lock().await;
        let read = tokio::time::timeout(BROKER_TIMEOUT, async {
            if !held.as_ref().is_some_and(|c| c.status().connected()) {
                *held = Some(rabbit::connect(&self.url, "pythia-fleet").await?);
            }
            let connection = held.as_ref().expect("connected above");
            rabbit::depth(connection, &self.queue).await
        })
        .await;
        let error = match read {
            Ok(Ok(depth)) => return Ok(depth),
            Ok(Err(error)) => format!("{error:#}"),
            Err(_) => format!(
                "RabbitMQ at {} did not answer within {BROKER_TIMEOUT:?}",
                self.url
            ),
        };
        // Opened again on the next read.
        if let Some(connection) = held.take() {
            let _ = connection.close(200, "fleet: reconnecting".into()).await;
        }
        Err(format!(
            "reading the depth of queue `{}`: {error}",
            self.queue
        ))
    }

    /// The deliveries of the queue the instances hold unacknowledged; an
    /// instance that does not answer (starting, stopped) counts none.
    async fn unacked(&self, instances: &[String]) -> u64 {
        let reads = instances.iter().map(|address| async move {
            match probe::metrics(address, PROBE_TIMEOUT).await {
                Ok(body) => probe::unacked_in(&body, &self.queue).unwrap_or(0),
                Err(error) => {
                    tracing::debug!(%address, %error, "no unacked count from this instance");
                    0
                }
            }
        });
        futures::future::join_all(reads).await.into_iter().sum()
    }

    /// Closes the connection, if open.
    pub(crate) async fn close(&self) {
        if let Some(connection) = self.connection.lock().await.take() {
            let _ = connection.close(200, "fleet stopped".into()).await;
        }
    }
}
