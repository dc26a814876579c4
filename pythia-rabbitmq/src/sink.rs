//! [`RabbitSink`]: outputs and dead letters published with publisher
//! confirms.
//!
//! A record's receipt is settled only when the broker confirms the publish
//! (`basic.ack` on a confirm channel), so its input is acknowledged only
//! after that. A publish the broker refuses (`basic.nack`, e.g. a full queue
//! with `x-overflow = reject-publish`) or cannot route (published
//! `mandatory`, returned) fails the record. A publish whose connection is
//! lost before its confirm is sent again on a new connection, until
//! `rabbitmq.publish_timeout`.
//!
//! Routing: a record for the dead-letter queue goes to
//! `rabbitmq.dead_letter_exchange` with the queue's name as routing key;
//! any other goes to `rabbitmq.output_exchange` with its topic (or its named
//! sink's routing key, or `rabbitmq.output`) as routing key. On the default
//! exchange (`""`) the routing key is the queue's name. A record's key is
//! sent as the AMQP `message_id`, its headers as AMQP headers; messages are
//! persistent.

use std::collections::BTreeMap;
use std::sync::Arc;

use lapin::Confirmation as Confirm;
use lapin::options::{BasicPublishOptions, ConfirmSelectOptions};
use lapin::{BasicProperties, Channel, Connection};
use pythia_core::connector::{Receipt, Sink};
use pythia_core::{Record, SinkError};
use tokio::sync::Mutex;
use tokio::time::Instant;

use crate::config::{Config, RabbitConfig};
use crate::error::RabbitError;
use crate::headers;
use crate::topology;
use pythia_core::connector::Backoff;

/// Where a record is published.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Route {
    pub(crate) exchange: String,
    pub(crate) routing_key: String,
}

/// Where records go, from the configuration.
#[derive(Debug, Clone)]
pub(crate) struct Routes {
    output_exchange: String,
    output: Option<String>,
    sinks: BTreeMap<String, String>,
    dead_letter_queue: Option<String>,
    dead_letter_exchange: String,
}

impl Routes {
    pub(crate) fn new(config: &Config) -> Self {
        let rabbitmq = &config.rabbitmq;
        Self {
            output_exchange: rabbitmq.output_exchange.clone(),
            output: rabbitmq.output.clone(),
            sinks: rabbitmq.sinks.clone(),
            dead_letter_queue: config.dead_letter_queue(),
            dead_letter_exchange: rabbitmq.dead_letter_exchange.clone(),
        }
    }

    /// The route of `record`, or why it has none.
    pub(crate) fn route(&self, record: &Record) -> Result<Route, SinkError> {
        let output = |routing_key: &str| Route {
            exchange: self.output_exchange.clone(),
            routing_key: routing_key.to_owned(),
        };
        if let Some(topic) = record.topic.as_deref() {
            if self.dead_letter_queue.as_deref() == Some(topic) {
                return Ok(Route {
                    exchange: self.dead_letter_exchange.clone(),
                    routing_key: topic.to_owned(),
                });
            }
            return Ok(output(topic));
        }
        if let Some(sink) = record.sink {
            return match self.sinks.get(sink) {
                Some(key) => Ok(output(key)),
                None => Err(SinkError::UnknownSink { sink: sink.into() }),
            };
        }
        match self.output.as_deref() {
            Some(key) => Ok(output(key)),
            None => Err(SinkError::NoTopic),
        }
    }
}

/// Publishes records with publisher confirms. Cheap to share: the runtime
/// holds it in an `Arc`.
///
/// ```no_run
/// # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
/// use pythia_core::connector::{Receipt, Sink};
/// use pythia_core::Record;
/// let config = pythia_rabbitmq::Config::from_loader(
///     pythia_core::ConfigLoader::new().no_file()
///         .set("rabbitmq.queue", "jobs")
///         .set("rabbitmq.output", "results"),
/// )?;
/// let sink = pythia_rabbitmq::RabbitSink::new(&config, "jobs-publisher");
/// let (receipt, confirmed) = Receipt::channel();
/// sink.send(Record::new("done"), receipt).await;
/// confirmed.await?; // the broker confirmed it
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct RabbitSink {
    inner: Arc<Inner>,
}

struct Inner {
    config: RabbitConfig,
    routes: Routes,
    name: String,
    /// The confirm channel, opened on first use and after a loss.
    publisher: Mutex<Option<Publisher>>,
    /// Connections opened so far.
    opened: std::sync::atomic::AtomicU64,
}

struct Publisher {
    connection: Connection,
    channel: Channel,
    /// Which of the sink's connections it is (channel ids repeat across them).
    generation: u64,
}

/// Why a publish did not go through.
enum Failed {
    /// The record was refused or could not be routed: final.
    Refused(SinkError),
    /// The connection failed: the record may go through on a new one.
    Lost(RabbitError),
}

impl RabbitSink {
    /// A sink for `config`'s routes, on a connection named `name` of its own
    /// (opened at the first record).
    pub fn new(config: &Config, name: &str) -> Self {
        Self {
            inner: Arc::new(Inner {
                config: config.rabbitmq.clone(),
                routes: Routes::new(config),
                name: name.to_owned(),
                publisher: Mutex::new(None),
                opened: Default::default(),
            }),
        }
    }

    /// Closes the connection, if open.
    pub async fn close(&self) {
        if let Some(publisher) = self.inner.publisher.lock().await.take() {
            let _ = publisher.connection.close(200, "done".into()).await;
        }
    }
}

/// The publisher a run made is closed at the run's end.
impl pythia_core::connector::Publisher for RabbitSink {
    async fn close(&self) {
        RabbitSink::close(self).await;
    }
}

impl std::fmt::Debug for RabbitSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RabbitSink")
            .field("routes", &self.inner.routes)
            .finish_non_exhaustive()
    }
}

impl Sink for RabbitSink {
    async fn send(&self, record: Record, receipt: Receipt) {
        let route = match self.inner.routes.route(&record) {
            Ok(route) => route,
            Err(error) => return receipt.settle(Err(error)),
        };
        let deadline = Instant::now() + self.inner.config.publish_timeout;
        // Published here, in order; confirmed in the background. The
        // client's publish future is large and every message's future holds
        // this one, outputs or not: boxed, beside the allocations a publish
        // makes anyway.
        let first = Box::pin(self.inner.publish(&route, &record, deadline)).await;
        let inner = self.inner.clone();
        tokio::spawn(async move {
            let result = match first {
                Ok(confirm) => match inner.confirmed(&route, confirm, deadline).await {
                    Err(Failed::Lost(error)) => {
                        tracing::debug!(%error, "publish not confirmed; sending it again");
                        inner.deliver(&route, &record, deadline).await
                    }
                    done => done.map_err(|failed| failed.into_sink_error(&route)),
                },
                Err(error) => Err(error),
            };
            receipt.settle(result);
        });
    }
}

impl Failed {
    fn into_sink_error(self, route: &Route) -> SinkError {
        match self {
            Self::Refused(error) => error,
            Self::Lost(error) => SinkError::Delivery {
                topic: route.routing_key.clone(),
                reason: error.to_string(),
            },
        }
    }
}

impl Inner {
    /// Publishes, connecting (again) as needed until `deadline`; the confirm
    /// is still to come.
    async fn publish(
        &self,
        route: &Route,
        record: &Record,
        deadline: Instant,
    ) -> Result<lapin::PublisherConfirm, SinkError> {
        let mut backoff = Backoff::new(self.config.reconnect_min, self.config.reconnect_max);
        loop {
            let error = match self.channel().await {
                Ok((channel, generation)) => {
                    // A publish on a connection that just died may never
                    // return: bounded, and then the connection is replaced.
                    let publish = publish_on(&channel, route, record);
                    let published = tokio::time::timeout(self.config.broker_timeout, publish)
                        .await
                        .unwrap_or_else(|_| {
                            Err(RabbitError::amqp(
                                "basic.publish",
                                "unanswered within rabbitmq.broker_timeout",
                            ))
                        });
                    match published {
                        Ok(confirm) => return Ok(confirm),
                        Err(error) => {
                            self.forget(generation).await;
                            error
                        }
                    }
                }
                Err(error) => error,
            };
            let wait = backoff.next_wait();
            if Instant::now() + wait >= deadline {
                return Err(SinkError::Delivery {
                    topic: route.routing_key.clone(),
                    reason: format!(
                        "{error}; not published within rabbitmq.publish_timeout ({:?})",
                        self.config.publish_timeout
                    ),
                });
            }
            tracing::warn!(%error, ?wait, "cannot publish to RabbitMQ; trying again");
            tokio::time::sleep(wait).await;
        }
    }

    /// Publishes until confirmed or refused, or until `deadline`.
    async fn deliver(
        &self,
        route: &Route,
        record: &Record,
        deadline: Instant,
    ) -> Result<(), SinkError> {
        loop {
            let confirm = self.publish(route, record, deadline).await?;
            match self.confirmed(route, confirm, deadline).await {
                Ok(()) => return Ok(()),
                Err(Failed::Refused(error)) => return Err(error),
                Err(Failed::Lost(error)) if Instant::now() >= deadline => {
                    return Err(Failed::Lost(error).into_sink_error(route));
                }
                Err(Failed::Lost(error)) => {
                    tracing::debug!(%error, "publish not confirmed; sending it again");
                    tokio::time::sleep(self.config.reconnect_min).await;
                }
            }
        }
    }

    /// What the broker said of a publish.
    async fn confirmed(
        &self,
        route: &Route,
        confirm: lapin::PublisherConfirm,
        deadline: Instant,
    ) -> Result<(), Failed> {
        let refused = |reason: String| {
            Failed::Refused(SinkError::Delivery {
                topic: route.routing_key.clone(),
                reason,
            })
        };
        // Bounded: a confirm on a channel that died with its connection may
        // never resolve; unconfirmed by the deadline, the record fails.
        let Ok(confirmed) = tokio::time::timeout_at(deadline, confirm).await else {
            return Err(Failed::Lost(RabbitError::amqp(
                "basic.publish",
                "no confirm within rabbitmq.publish_timeout",
            )));
        };
        match confirmed {
            Ok(Confirm::Ack(None)) => Ok(()),
            Ok(Confirm::Ack(Some(returned))) => Err(refused(format!(
                "unroutable on exchange `{}` ({} {}): bind a queue to it or fix the routing key",
                route.exchange, returned.reply_code, returned.reply_text
            ))),
            Ok(Confirm::Nack(_)) => Err(refused(
                "the broker refused the message (basic.nack: a full queue with x-overflow = reject-publish, or an internal error)".into(),
            )),
            Ok(Confirm::NotRequested) => Err(refused("publisher confirms are off".into())),
            Err(error) => Err(Failed::Lost(RabbitError::amqp("basic.publish", error))),
        }
    }

    /// The confirm channel, opened if needed, and its generation.
    async fn channel(&self) -> Result<(Channel, u64), RabbitError> {
        let mut publisher = self.publisher.lock().await;
        if let Some(open) = publisher.as_ref()
            && open.channel.status().connected()
        {
            return Ok((open.channel.clone(), open.generation));
        }
        // Rare, and its future is large: boxed, so that it does not add to
        // the size of every record's future (which each message's holds).
        // Bounded: a broker that is starting or stopping may never answer.
        let opening = Box::pin(self.open(&mut publisher));
        match tokio::time::timeout(self.config.broker_timeout, opening).await {
            Ok(opened) => opened,
            Err(_) => Err(RabbitError::Connect {
                url: self.config.url.redacted(),
                reason: format!(
                    "the publisher's connection and channel not open within rabbitmq.broker_timeout ({:?})",
                    self.config.broker_timeout
                ),
            }),
        }
    }

    /// Opens a connection and a confirm channel on it.
    async fn open(&self, publisher: &mut Option<Publisher>) -> Result<(Channel, u64), RabbitError> {
        let connection = topology::connect(&self.config, &self.name).await?;
        let channel = connection
            .create_channel()
            .await
            .map_err(|e| RabbitError::amqp("channel.open", e))?;
        channel
            .confirm_select(ConfirmSelectOptions::default())
            .await
            .map_err(|e| RabbitError::amqp("confirm.select", e))?;
        let generation = self
            .opened
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        *publisher = Some(Publisher {
            connection,
            channel: channel.clone(),
            generation,
        });
        Ok((channel, generation))
    }

    /// Drops the publisher if it still is the one of `generation`.
    async fn forget(&self, generation: u64) {
        let mut publisher = self.publisher.lock().await;
        if publisher
            .as_ref()
            .is_some_and(|p| p.generation == generation)
            && let Some(old) = publisher.take()
        {
            // A dead connection may never answer the close either.
            let closing = Box::pin(old.connection.close(200, "publish failed".into()));
            let _ = tokio::time::timeout(self.config.broker_timeout, closing).await;
        }
    }
}

/// Publishes `record` on `channel`.
async fn publish_on(
    channel: &Channel,
    route: &Route,
    record: &Record,
) -> Result<lapin::PublisherConfirm, RabbitError> {
    let mut properties = BasicProperties::default()
        .with_delivery_mode(2)
        .with_headers(headers::to_amqp(&record.headers));
    if let Some(key) = record
        .key
        .as_deref()
        .and_then(|k| std::str::from_utf8(k).ok())
    {
        properties = properties.with_message_id(key.into());
    }
    let payload = record.payload.as_deref().unwrap_or_default();
    let options = BasicPublishOptions {
        mandatory: true,
        ..BasicPublishOptions::default()
    };
    channel
        .basic_publish(
            route.exchange.as_str().into(),
            route.routing_key.as_str().into(),
            options,
            payload,
            properties,
        )
        .await
        .map_err(|e| RabbitError::amqp("basic.publish", e))
}

/// How long a test waits for a confirm at most.
#[cfg(test)]
const TEST_WAIT: std::time::Duration = std::time::Duration::from_secs(10);

#[cfg(test)]
mod tests {
    use super::*;
    use pythia_core::ConfigLoader;

    fn config(vars: &[(&str, &str)]) -> Config {
        Config::from_loader(Config::spec_defaults(
            ConfigLoader::new().no_file().env(vars.iter().copied()),
            &pythia_core::WorkerSpec::UNNAMED,
        ))
        .unwrap()
    }

    #[test]
    fn a_records_future_stays_small() {
        // The runtime holds it inside every message's future, and moves or
        // boxes that whole future once per message.
        let sink = RabbitSink::new(&config(&[("PYTHIA_RABBITMQ__QUEUE", "jobs")]), "t");
        let (receipt, _) = Receipt::channel();
        let send = sink.send(Record::new("x"), receipt);
        let size = std::mem::size_of_val(&send);
        assert!(size <= 512, "RabbitSink::send's future is {size} bytes");
    }

    #[test]
    fn records_are_routed_by_topic_sink_output_and_dead_letter_queue() {
        let routes = Routes::new(&config(&[
            ("PYTHIA_RABBITMQ__QUEUE", "jobs"),
            ("PYTHIA_RABBITMQ__OUTPUT", "results"),
            ("PYTHIA_RABBITMQ__OUTPUT_EXCHANGE", "events"),
            ("PYTHIA_RABBITMQ__SINKS__AUDIT", "audit.key"),
            ("PYTHIA_RABBITMQ__DEAD_LETTER_EXCHANGE", "dlx"),
        ]));
        let route = |record: Record| {
            let r = routes.route(&record).unwrap();
            (r.exchange, r.routing_key)
        };
        let pair = |e: &str, k: &str| (e.to_owned(), k.to_owned());
        assert_eq!(route(Record::new("x")), pair("events", "results"));
        assert_eq!(
            route(Record::new("x").with_sink("audit")),
            pair("events", "audit.key")
        );
        assert_eq!(
            route(Record::new("x").with_topic("other")),
            pair("events", "other")
        );
        assert_eq!(
            route(Record::new("x").with_topic("jobs.dlq")),
            pair("dlx", "jobs.dlq")
        );
        assert!(matches!(
            routes.route(&Record::new("x").with_sink("nope")),
            Err(SinkError::UnknownSink { .. })
        ));
        let bare = Routes::new(&config(&[("PYTHIA_RABBITMQ__QUEUE", "jobs")]));
        assert!(matches!(
            bare.route(&Record::new("x")),
            Err(SinkError::NoTopic)
        ));
    }

    #[tokio::test]
    async fn a_confirmed_publish_settles_ok_and_an_unroutable_one_fails() {
        let queue = format!("pythia-sink-test-{}", std::process::id());
        let config = config(&[
            ("PYTHIA_RABBITMQ__QUEUE", "unused"),
            ("PYTHIA_RABBITMQ__OUTPUT", &queue),
        ]);
        let connection = topology::connect(&config.rabbitmq, "pythia-sink-test")
            .await
            .expect(
                "RabbitMQ must answer on 127.0.0.1:5672 (start it: service rabbitmq-server start)",
            );
        topology::ensure_queue(&connection, &queue, crate::QueueMode::Declare)
            .await
            .unwrap();
        let sink = RabbitSink::new(&config, "pythia-sink-test");
        let (receipt, confirmed) = Receipt::channel();
        sink.send(Record::new("one").with_key("k1"), receipt).await;
        tokio::time::timeout(TEST_WAIT, confirmed)
            .await
            .unwrap()
            .unwrap();
        let (receipt, refused) = Receipt::channel();
        sink.send(
            Record::new("two").with_topic("pythia-no-such-queue"),
            receipt,
        )
        .await;
        let error = tokio::time::timeout(TEST_WAIT, refused)
            .await
            .unwrap()
            .unwrap_err();
        assert!(error.to_string().contains("unroutable"), "{error}");
        let channel = connection.create_channel().await.unwrap();
        assert_eq!(topology::depth(&channel, &queue).await.unwrap().ready, 1);
        channel
            .queue_delete(queue.as_str().into(), Default::default())
            .await
            .unwrap();
        sink.close().await;
    }
}
