//! A JetStream message as a Pythia message.
//!
//! The message's partition is the subject with index 0 (a stream consumed
//! by a shared consumer has no partitions); its offset is the source's
//! number for the delivery (see `ack`); its key the [`crate::headers::KEY`]
//! header, its create time the time the server stored it, and its headers
//! the NATS headers plus the delivery count and stream sequence (see
//! [`crate::headers`]).

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
