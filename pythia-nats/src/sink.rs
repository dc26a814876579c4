//! [`NatsSink`]: outputs and dead letters published to JetStream, each
//! confirmed by the server's PubAck.
//!
//! A record's receipt is settled only when the stream that captures its
//! subject has stored it (the PubAck), so its input is acknowledged only
//! after that. A subject no stream captures fails the record at once ("no
//! responders": create a stream for it); a publish lost with the connection
//! is sent again until `nats.publish_timeout`.
//!
//! Routing: a record's topic (a dead letter's is the dead-letter subject)
//! is its subject; else its named sink's subject, else `nats.output`. A
//! record's key travels as the `pythia.key` header (see [`crate::headers`]).

use std::collections::BTreeMap;
use std::sync::Arc;

use async_nats::jetstream::{self, context::PublishErrorKind};
use pythia_core::connector::{Receipt, Sink};
use pythia_core::{Record, SinkError};
use tokio::sync::OnceCell;
use tokio::time::Instant;

use crate::config::{Config, NatsConfig};
use crate::error::NatsError;
use crate::headers;
use crate::topology;
use pythia_core::connector::Backoff;

/// Where records go, from the configuration.
#[derive(Debug, Clone)]
pub(crate) struct Routes {
    output: Option<String>,
    sinks: BTreeMap<String, String>,
}

impl Routes {
    pub(crate) fn new(config: &Config) -> Self {
        Self {
            output: config.nats.output.clone(),
            sinks: config.nats.sinks.clone(),
        }
    }

    /// The subject of `record`, or why it has none.
    pub(crate) fn subject(&self, record: &Record) -> Result<String, SinkError> {
        if let Some(topic) = record.topic.as_deref() {
            return Ok(topic.to_owned());
        }
        if let Some(sink) = record.sink {
            return match self.sinks.get(sink) {
                Some(subject) => Ok(subject.clone()),
                None => Err(SinkError::UnknownSink { sink: sink.into() }),
            };
        }
        match self.output.as_deref() {
            Some(subject) => Ok(subject.to_owned()),
            None => Err(SinkError::NoTopic),
        }
    }
}

/// Publishes records to JetStream and settles each with its PubAck. Cheap
/// to share: the runtime holds it in an `Arc`.
///
/// ```no_run
/// # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
/// use pythia_core::connector::{Receipt, Sink};
/// use pythia_core::Record;
/// let config = pythia_nats::Config::from_loader(
///     pythia_core::ConfigLoader::new().no_file()
///         .set("nats.subject", "jobs")
///         .set("nats.output", "results"),
/// )?;
/// let sink = pythia_nats::NatsSink::new(&config, "jobs-publisher");
/// let (receipt, confirmed) = Receipt::channel();
/// sink.send(Record::new("done"), receipt).await;
/// confirmed.await?; // a stream stored it
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct NatsSink {
    inner: Arc<Inner>,
}

struct Inner {
    config: NatsConfig,
    routes: Routes,
    name: String,
    /// The connection, opened at the first record.
    context: OnceCell<jetstream::Context>,
}

impl NatsSink {
    /// A sink for `config`'s routes, on a connection named `name` of its own
    /// (opened at the first record; it reconnects by itself).
    pub fn new(config: &Config, name: &str) -> Self {
        Self {
            inner: Arc::new(Inner {
                config: config.nats.clone(),
                routes: Routes::new(config),
                name: name.to_owned(),
                context: OnceCell::new(),
            }),
        }
    }

    /// Sends what is buffered and closes the connection, if open.
    pub async fn close(&self) {
        if let Some(js) = self.inner.context.get() {
            let _ = js.client().flush().await;
            let _ = js.client().drain().await;
        }
    }
}

/// The publisher a run made is closed at the run's end.
impl pythia_core::connector::Publisher for NatsSink {
    async fn close(&self) {
        NatsSink::close(self).await;
    }
}

impl std::fmt::Debug for NatsSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NatsSink")
            .field("routes", &self.inner.routes)
            .finish_non_exhaustive()
    }
}

impl Sink for NatsSink {
    async fn send(&self, record: Record, receipt: Receipt) {
        let subject = match self.inner.routes.subject(&record) {
            Ok(subject) => subject,
            Err(error) => return receipt.settle(Err(error)),
        };
        let deadline = Instant::now() + self.inner.config.publish_timeout;
        let inner = self.inner.clone();
        // Published here, in order; the PubAck awaited in the background.
        // The client's publish future is large and every message's future
        // holds this one, outputs or not: boxed, beside the allocations a
        // publish makes anyway.
        let first = Box::pin(inner.publish(&subject, &record)).await;
        tokio::spawn(async move {
            let result = match first {
                Ok(ack) => match ack.await {
                    Ok(_) => Ok(()),
                    Err(error) => inner.retry(&subject, &record, deadline, error.into()).await,
                },
                Err(error) => inner.retry(&subject, &record, deadline, error).await,
            };
            receipt.settle(result);
        });
    }
}

impl Inner {
    /// The JetStream context, connecting at first use.
    async fn context(&self) -> Result<&jetstream::Context, NatsError> {
        if let Some(context) = self.context.get() {
            return Ok(context);
        }
        // Once, and its future is large: boxed, so that it does not add to
        // the size of every record's future (which each message's holds).
        Box::pin(self.context.get_or_try_init(|| async {
            let client = topology::connect(&self.config, &self.name, None).await?;
            Ok(topology::jetstream(client))
        }))
        .await
    }

    /// Publishes; the PubAck is still to come.
    async fn publish(
        &self,
        subject: &str,
        record: &Record,
    ) -> Result<jetstream::context::PublishAckFuture, PublishFailure> {
        let js = self.context().await.map_err(PublishFailure::Connect)?;
        let headers = headers::to_nats(&record.headers, record.key.as_deref());
        let payload = record.payload.clone().unwrap_or_default();
        js.publish_with_headers(subject.to_owned(), headers, payload)
            .await
            .map_err(|e| PublishFailure::Publish(e.kind(), e.to_string()))
    }

    /// Publishes again until the PubAck comes or `deadline`. A subject no
    /// stream captures is tried again too: a restarting server answers so
    /// for a moment.
    async fn retry(
        &self,
        subject: &str,
        record: &Record,
        deadline: Instant,
        first: PublishFailure,
    ) -> Result<(), SinkError> {
        let mut backoff = Backoff::new(self.config.reconnect_min, self.config.reconnect_max);
        let mut failure = first;
        loop {
            if let Some(reason) = failure.final_reason() {
                return Err(SinkError::Delivery {
                    topic: subject.to_owned(),
                    reason,
                });
            }
            let wait = backoff.next_wait();
            if Instant::now() + wait >= deadline {
                return Err(SinkError::Delivery {
                    topic: subject.to_owned(),
                    reason: format!(
                        "{failure}; not stored within nats.publish_timeout ({:?})",
                        self.config.publish_timeout
                    ),
                });
            }
            tracing::debug!(%failure, ?wait, subject, "publish not confirmed; sending it again");
            tokio::time::sleep(wait).await;
            failure = match self.publish(subject, record).await {
                Ok(ack) => match ack.await {
                    Ok(_) => return Ok(()),
                    Err(error) => error.into(),
                },
                Err(error) => error,
            };
        }
    }
}

/// Why a publish did not go through.
#[derive(Debug)]
enum PublishFailure {
    Connect(NatsError),
    Publish(PublishErrorKind, String),
}

impl From<jetstream::context::PublishError> for PublishFailure {
    fn from(error: jetstream::context::PublishError) -> Self {
        Self::Publish(error.kind(), error.to_string())
    }
}

impl PublishFailure {
    /// The reason, if trying again cannot help.
    fn final_reason(&self) -> Option<String> {
        match self {
            Self::Publish(PublishErrorKind::MaxPayloadExceeded, reason)
            | Self::Publish(PublishErrorKind::WrongLastMessageId, reason)
            | Self::Publish(PublishErrorKind::WrongLastSequence, reason) => Some(reason.clone()),
            _ => None,
        }
    }
}

impl std::fmt::Display for PublishFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Connect(error) => error.fmt(f),
            Self::Publish(PublishErrorKind::StreamNotFound, reason) => write!(
                f,
                "{reason}: no stream captures this subject; create one (nats stream add) or fix the subject"
            ),
            Self::Publish(_, reason) => f.write_str(reason),
        }
    }
}

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
    fn records_are_routed_by_topic_sink_and_output() {
        let routes = Routes::new(&config(&[
            ("PYTHIA_NATS__SUBJECT", "jobs"),
            ("PYTHIA_NATS__OUTPUT", "results"),
            ("PYTHIA_NATS__SINKS__AUDIT", "audit.jobs"),
        ]));
        let subject = |record: Record| routes.subject(&record).unwrap();
        assert_eq!(subject(Record::new("x")), "results");
        assert_eq!(subject(Record::new("x").with_sink("audit")), "audit.jobs");
        assert_eq!(subject(Record::new("x").with_topic("jobs.dlq")), "jobs.dlq");
        assert!(matches!(
            routes.subject(&Record::new("x").with_sink("nope")),
            Err(SinkError::UnknownSink { .. })
        ));
        let bare = Routes::new(&config(&[("PYTHIA_NATS__SUBJECT", "jobs")]));
        assert!(matches!(
            bare.subject(&Record::new("x")),
            Err(SinkError::NoTopic)
        ));
    }

    #[test]
    fn a_records_future_stays_small() {
        // The runtime holds it inside every message's future, and moves or
        // boxes that whole future once per message.
        let sink = NatsSink::new(&config(&[("PYTHIA_NATS__SUBJECT", "jobs")]), "t");
        let (receipt, _) = Receipt::channel();
        let send = sink.send(Record::new("x"), receipt);
        let size = std::mem::size_of_val(&send);
        assert!(size <= 512, "NatsSink::send's future is {size} bytes");
    }

    #[test]
    fn a_too_large_record_is_final_and_a_missing_stream_says_what_to_do() {
        let large = PublishFailure::Publish(PublishErrorKind::MaxPayloadExceeded, "too big".into());
        assert_eq!(large.final_reason().as_deref(), Some("too big"));
        let missing =
            PublishFailure::Publish(PublishErrorKind::StreamNotFound, "no responders".into());
        assert!(
            missing.final_reason().is_none(),
            "a restarting server says so too"
        );
        assert!(missing.to_string().contains("nats stream add"), "{missing}");
        let lost = PublishFailure::Publish(PublishErrorKind::TimedOut, "timed out".into());
        assert!(lost.final_reason().is_none());
    }

    #[tokio::test]
    async fn a_stored_publish_settles_ok_and_one_no_stream_captures_fails_in_time() {
        let subject = format!("pythia-sink-test-{}", std::process::id());
        let config = config(&[
            ("PYTHIA_NATS__SUBJECT", "unused"),
            ("PYTHIA_NATS__OUTPUT", &subject),
            ("PYTHIA_NATS__PUBLISH_TIMEOUT", "1s"),
        ]);
        let client = topology::connect(&config.nats, "pythia-sink-test", None)
            .await
            .expect(
                "NATS with JetStream must answer on 127.0.0.1:4222 (start it: nats-server -js)",
            );
        let js = topology::jetstream(client);
        let stream = format!("{subject}_OUT");
        js.create_stream(async_nats::jetstream::stream::Config {
            name: stream.clone(),
            subjects: vec![subject.clone()],
            ..Default::default()
        })
        .await
        .unwrap();
        let sink = NatsSink::new(&config, "pythia-sink-test");
        let (receipt, stored) = Receipt::channel();
        sink.send(Record::new("one").with_key("k1"), receipt).await;
        tokio::time::timeout(std::time::Duration::from_secs(10), stored)
            .await
            .unwrap()
            .unwrap();
        let (receipt, refused) = Receipt::channel();
        sink.send(
            Record::new("two").with_topic("pythia-no-stream-here"),
            receipt,
        )
        .await;
        let error = tokio::time::timeout(std::time::Duration::from_secs(10), refused)
            .await
            .unwrap()
            .unwrap_err();
        assert!(error.to_string().contains("nats stream add"), "{error}");
        let mut info = js.get_stream(&stream).await.unwrap();
        assert_eq!(info.info().await.unwrap().state.messages, 1);
        js.delete_stream(&stream).await.unwrap();
        sink.close().await;
    }
}
