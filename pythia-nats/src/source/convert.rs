//! A JetStream message as a Pythia message.
//!
//! The message's partition is the subject with index 0 (a stream consumed
//! by a shared consumer has no partitions); its offset is the source's
//! number for the delivery (see `ack`); its key the [`crate::headers::KEY`]
//! header, its create time the time the server stored it, and its headers
//! the NATS headers plus the delivery count and stream sequence (see
//! [`crate::headers`]). The delivery count, sequence and time are read
//! from the delivery's reply subject, as [`metadata`].

use async_nats::HeaderMap;
use bytes::Bytes;
use pythia_core::{Message, PartitionId};

use crate::headers;

/// What the source reads of one delivery.
#[derive(Debug, Clone)]
pub(crate) struct Delivery<'a> {
    pub(crate) payload: Bytes,
    pub(crate) headers: Option<&'a HeaderMap>,
    /// How many times the server delivered it, this time included.
    pub(crate) delivered: i64,
    pub(crate) sequence: u64,
    /// When the server stored it, in milliseconds since the Unix epoch.
    pub(crate) published_ms: i64,
}

/// What the server says of a delivery in its reply subject.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Metadata {
    /// How many times the server delivered it, this time included.
    pub(crate) delivered: i64,
    /// Its stream sequence.
    pub(crate) sequence: u64,
    /// When the server stored it, in milliseconds since the Unix epoch.
    pub(crate) published_ms: i64,
}

/// The metadata in a JetStream reply subject (ADR-15):
/// `$JS.ACK.<stream>.<consumer>.<delivered>.<stream seq>.<consumer seq>.
/// <nanos>.<pending>`, or with `<domain>.<account hash>.` before the stream
/// and possibly more tokens at the end; `None` for anything else.
pub(crate) fn metadata(reply: &str) -> Option<Metadata> {
    // The first nine tokens, and how many there are, in one pass.
    let mut tokens = [""; 9];
    let mut count = 0;
    for token in reply.strip_prefix("$JS.ACK.")?.split('.') {
        if let Some(slot) = tokens.get_mut(count) {
            *slot = token;
        }
        count += 1;
    }
    let numbers = match count {
        7 => &tokens[2..6],
        n if n >= 9 => &tokens[4..8],
        _ => return None,
    };
    let nanos: i64 = numbers[3].parse().ok()?;
    Some(Metadata {
        delivered: numbers[0].parse().ok()?,
        sequence: numbers[1].parse().ok()?,
        published_ms: nanos.div_euclid(1_000_000),
    })
}

/// `delivery` as the message at `offset` of `subject`.
pub(crate) fn message(
    subject: &PartitionId,
    offset: i64,
    delivery: Delivery<'_>,
) -> Message<Option<Bytes>> {
    let (headers, key) =
        headers::from_nats(delivery.headers, delivery.delivered, delivery.sequence);
    let mut message = Message::new(subject.clone(), offset, Some(delivery.payload))
        .with_headers(headers)
        .with_timestamp_ms(delivery.published_ms);
    if let Some(key) = key {
        message = message.with_key(key);
    }
    message
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_metadata_is_read_from_either_form_of_reply_subject() {
        let expected = Metadata {
            delivered: 3,
            sequence: 41,
            published_ms: 1_700_000_000_123,
        };
        let table = [
            (
                "$JS.ACK.jobs.workers.3.41.17.1700000000123456789.5",
                Some(expected),
            ),
            (
                "$JS.ACK._.acchash.jobs.workers.3.41.17.1700000000123456789.5",
                Some(expected),
            ),
            (
                "$JS.ACK.hub.acchash.jobs.workers.3.41.17.1700000000123456789.5.token.more",
                Some(expected),
            ),
            ("$JS.ACK.jobs.workers.x.41.17.1700000000123456789.5", None),
            ("$JS.ACK.jobs.workers.3.41", None),
            ("_INBOX.abc.def", None),
            ("", None),
        ];
        for (reply, want) in table {
            assert_eq!(metadata(reply), want, "{reply}");
        }
    }

    #[test]
    fn a_delivery_keeps_its_payload_key_time_and_delivery_count() {
        let subject = PartitionId::new("jobs", 0);
        let mut map = HeaderMap::new();
        map.insert(headers::KEY, "job-1");
        map.insert("trace", "abc");
        let message = message(
            &subject,
            42,
            Delivery {
                payload: Bytes::from_static(b"{}"),
                headers: Some(&map),
                delivered: 2,
                sequence: 9,
                published_ms: 1_700_000_000_123,
            },
        );
        assert_eq!(message.partition_id(), &subject);
        assert_eq!(message.offset(), 42);
        assert_eq!(message.payload().as_deref(), Some(&b"{}"[..]));
        assert_eq!(message.key_str(), Some("job-1"));
        assert_eq!(message.timestamp_ms(), Some(1_700_000_000_123));
        assert_eq!(message.headers().get_str("trace"), Some("abc"));
        assert_eq!(message.headers().get_str(headers::DELIVERED), Some("2"));
        assert_eq!(message.headers().get_str(headers::SEQUENCE), Some("9"));
    }
}
