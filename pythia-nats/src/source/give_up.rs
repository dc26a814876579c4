//! Giving up on a message the server delivered `max_deliver` times (see
//! [`super::verdict`]): its dead letter, published to the dead-letter
//! subject and confirmed (PubAck), then the message terminated (`+TERM`).
//!
//! The dead letter is the original payload and headers with the
//! `pythia.dlq.*` headers the runtime's dead letters carry (kind
//! [`KIND`]), so one reader handles both.

use std::time::Duration;

use async_nats::Subject;
use async_nats::jetstream::{self, AckKind};
use bytes::Bytes;
use pythia_core::dead_letter::header;
use pythia_core::{Headers, Message};

use crate::config::Config;
use crate::headers;

/// The `pythia.dlq.kind` of a message given up on after `max_deliver`
/// deliveries.
pub const KIND: &str = "max_deliver";

/// A dead letter, ready to publish.
#[derive(Debug, Clone)]
pub(crate) struct Letter {
    pub(crate) payload: Bytes,
    pub(crate) headers: async_nats::HeaderMap,
}

/// The dead letter of `message`, delivered `delivered` times.
pub(crate) fn letter(
    config: &Config,
    message: &Message<Option<Bytes>>,
    reason: &str,
    delivered: i64,
) -> Letter {
    let mut out = Headers::new();
    for h in message.headers().iter() {
        match &h.value {
            Some(value) => out.append(h.name.clone(), value.clone()),
            None => out.append_null(h.name.clone()),
        };
    }
    out.append(header::REASON, reason.to_owned());
    out.append(header::KIND, KIND);
    out.append(header::ATTEMPTS, delivered.to_string());
    out.append(header::WORKER, config.name().to_owned());
    out.append(header::TOPIC, message.partition_id().topic().to_owned());
    out.append(header::PARTITION, "0");
    out.append(header::OFFSET, message.offset().to_string());
    if let Some(ms) = message.timestamp_ms() {
        out.append(header::TIMESTAMP, ms.to_string());
    }
    Letter {
        payload: message.payload().clone().unwrap_or_default(),
        headers: headers::to_nats(&out, message.key()),
    }
}

/// Publishes `letter` to `subject` until the server confirms it (or a
/// minute passes), then terminates the message (acked on `reply`).
pub(crate) async fn dead_letter(
    js: jetstream::Context,
    subject: String,
    letter: Letter,
    reply: Subject,
    reason: String,
) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    let mut wait = Duration::from_millis(100);
    loop {
        let sent = js
            .publish_with_headers(
                subject.clone(),
                letter.headers.clone(),
                letter.payload.clone(),
            )
            .await;
        let confirmed = match sent {
            Ok(ack) => ack.await.map(|_| ()).map_err(|e| e.to_string()),
            Err(error) => Err(error.to_string()),
        };
        match confirmed {
            Ok(()) => {
                tracing::warn!(%reason, %subject, "message dead-lettered");
                super::ack::send(&js.client(), reply, AckKind::Term).await;
                return;
            }
            Err(error) if tokio::time::Instant::now() + wait < deadline => {
                tracing::warn!(%error, ?wait, %subject, "dead letter not published; trying again");
                tokio::time::sleep(wait).await;
                wait = (wait * 2).min(Duration::from_secs(5));
            }
            Err(error) => {
                tracing::error!(%error, %reason, %subject, "dead letter not published: the message is left to the server");
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use pythia_core::{ConfigLoader, PartitionId, WorkerSpec};

    #[test]
    fn a_letter_keeps_the_original_and_says_why() {
        let config = Config::from_loader(Config::spec_defaults(
            ConfigLoader::new()
                .no_file()
                .env([("PYTHIA_NATS__SUBJECT", "jobs")]),
            &WorkerSpec::UNNAMED,
        ))
        .unwrap();
        let mut original = Headers::new();
        original.append("trace", "t1");
        let message = Message::new(
            PartitionId::new("jobs", 0),
            12,
            Some(Bytes::from_static(b"x")),
        )
        .with_headers(original)
        .with_key("k")
        .with_timestamp_ms(1_000);
        let letter = letter(&config, &message, "delivered 5 times\nstop", 5);
        let get = |name: &str| letter.headers.get(name).map(|v| v.as_str().to_owned());
        assert_eq!(letter.payload, Bytes::from_static(b"x"));
        assert_eq!(get("trace").as_deref(), Some("t1"));
        assert_eq!(
            get(header::REASON).as_deref(),
            Some("delivered 5 times stop")
        );
        assert_eq!(get(header::KIND).as_deref(), Some(KIND));
        assert_eq!(get(header::ATTEMPTS).as_deref(), Some("5"));
        assert_eq!(get(header::TOPIC).as_deref(), Some("jobs"));
        assert_eq!(get(header::OFFSET).as_deref(), Some("12"));
        assert_eq!(get(header::TIMESTAMP).as_deref(), Some("1000"));
        assert_eq!(get(headers::KEY).as_deref(), Some("k"));
    }
}
