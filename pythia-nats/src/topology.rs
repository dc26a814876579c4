//! The connection and what the worker needs on the server: the input
//! stream, the dead-letter stream and the durable pull consumer.
//!
//! With `nats.create = "missing"` each is created when missing — the input
//! stream with work-queue retention (a message leaves the stream once
//! acknowledged), file storage, holding the input subject; the dead-letter
//! stream with limits retention, holding the dead-letter subject — and used
//! as it is when it exists. The consumer is explicit-ack, with
//! `nats.ack_wait`, `nats.max_deliver` and `nats.max_ack_pending`; an
//! existing one keeps its own settings.

use async_nats::jetstream::consumer::{AckPolicy, PullConsumer, pull};
use async_nats::jetstream::stream::{self, RetentionPolicy, StorageType};
use async_nats::jetstream::{self, Context};
use async_nats::{Client, ConnectOptions, Event};
use pythia_core::connector::Health;

use crate::config::{Config, Create, NatsConfig};
use crate::error::NatsError;
use pythia_core::connector::backoff_wait;

/// Connects as `name`. Once connected the client reconnects by itself
/// (waits from `nats.reconnect_min` to `reconnect_max`); `health`, if
/// given, follows the connection: not ready while it is down.
pub(crate) async fn connect(
    config: &NatsConfig,
    name: &str,
    health: Option<Health>,
) -> Result<Client, NatsError> {
    let (min, max) = (config.reconnect_min, config.reconnect_max);
    let mut options = ConnectOptions::new()
        .name(name)
        .connection_timeout(config.reconnect_max.max(std::time::Duration::from_secs(2)))
        .reconnect_delay_callback(move |attempts| {
            backoff_wait(min, max, u32::try_from(attempts).unwrap_or(u32::MAX))
        });
    if let Some(health) = health {
        options = options.event_callback(move |event| {
            let health = health.clone();
            async move {
                match event {
                    Event::Connected => {
                        tracing::info!("connected to NATS again: ready");
                        health.set_broker(Ok(()));
                    }
                    Event::Disconnected => {
                        tracing::warn!("disconnected from NATS: not ready; reconnecting");
                        health.set_broker(Err("disconnected from NATS".into()));
                    }
                    other => tracing::debug!(event = %other, "NATS client event"),
                }
            }
        });
    }
    options
        .connect(config.url.expose())
        .await
        .map_err(|error| NatsError::Connect {
            url: config.url.redacted(),
            reason: error.to_string(),
        })
}

/// The durable consumer of `config`, with the streams it needs.
pub(crate) async fn consumer(js: &Context, config: &Config) -> Result<PullConsumer, NatsError> {
    let nats = &config.nats;
    let stream_name = nats.stream_name();
    let setup = |what, name: &str| {
        let name = name.to_owned();
        move |error: String| NatsError::Setup {
            what,
            name,
            reason: error,
        }
    };
    let stream = match nats.create {
        Create::Missing => js
            .get_or_create_stream(stream::Config {
                name: stream_name.clone(),
                subjects: vec![nats.subject_name().to_owned()],
                retention: RetentionPolicy::WorkQueue,
                storage: StorageType::File,
                ..Default::default()
            })
            .await
            .map_err(|e| setup("stream", &stream_name)(e.to_string()))?,
        Create::Never => js.get_stream(&stream_name).await.map_err(|e| {
            setup("stream", &stream_name)(format!(
                "{e}; create it (nats stream add) or set nats.create = \"missing\""
            ))
        })?,
    };
    if nats.create == Create::Missing
        && let Some(subject) = config.dead_letter_subject()
    {
        let name = nats.dead_letter_stream_name();
        js.get_or_create_stream(stream::Config {
            name: name.clone(),
            subjects: vec![subject],
            storage: StorageType::File,
            ..Default::default()
        })
        .await
        .map_err(|e| setup("stream", &name)(e.to_string()))?;
    }
    let consumer = config.consumer_name();
    match nats.create {
        Create::Missing => stream
            .get_or_create_consumer(&consumer, consumer_config(config))
            .await
            .map_err(|e| setup("consumer", &consumer)(e.to_string())),
        Create::Never => stream.get_consumer(&consumer).await.map_err(|e| {
            setup("consumer", &consumer)(format!(
                "{e}; create it (nats consumer add, pull, explicit ack) or set nats.create = \"missing\""
            ))
        }),
    }
}

/// The settings of a consumer this worker creates.
pub(crate) fn consumer_config(config: &Config) -> pull::Config {
    let nats = &config.nats;
    pull::Config {
        durable_name: Some(config.consumer_name()),
        filter_subject: nats.subject_name().to_owned(),
        ack_policy: AckPolicy::Explicit,
        ack_wait: nats.ack_wait,
        max_deliver: nats.max_deliver,
        max_ack_pending: nats.max_ack_pending,
        ..Default::default()
    }
}

/// A JetStream context on `client`.
pub(crate) fn jetstream(client: Client) -> Context {
    jetstream::new(client)
}

#[cfg(test)]
mod tests {
    use super::*;
    use pythia_core::{ConfigLoader, WorkerSpec};

    #[test]
    fn the_consumer_is_durable_explicit_ack_with_the_configured_limits() {
        let config = Config::from_loader(Config::spec_defaults(
            ConfigLoader::new().no_file().env([
                ("PYTHIA_NATS__SUBJECT", "jobs.io"),
                ("PYTHIA_NATS__ACK_WAIT", "5s"),
                ("PYTHIA_NATS__MAX_DELIVER", "3"),
                ("PYTHIA_NATS__MAX_ACK_PENDING", "64"),
            ]),
            &WorkerSpec::UNNAMED,
        ))
        .unwrap();
        let pull = consumer_config(&config);
        assert_eq!(pull.durable_name.as_deref(), Some("jobs_io"));
        assert_eq!(pull.filter_subject, "jobs.io");
        assert_eq!(pull.ack_policy, AckPolicy::Explicit);
        assert_eq!(pull.ack_wait, std::time::Duration::from_secs(5));
        assert_eq!((pull.max_deliver, pull.max_ack_pending), (3, 64));
    }
}
