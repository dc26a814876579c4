//! A delivery as a Pythia message.
//!
//! The message's partition is the queue with index 0 (a queue has no
//! partitions); its offset is the source's number for the delivery (see
//! `ack`); its key is the AMQP `message_id`, its create time the AMQP
//! `timestamp` (seconds), and its headers the AMQP headers plus the
//! redelivery flag (see [`crate::headers`]).

use bytes::Bytes;
use lapin::message::Delivery;
use pythia_core::{Message, PartitionId};

use crate::headers;

/// `delivery` as the message at `offset` of `queue`.
pub(crate) fn message(
    queue: &PartitionId,
    offset: i64,
    delivery: &mut Delivery,
) -> Message<Option<Bytes>> {
    let properties = &delivery.properties;
    let headers = headers::from_amqp(properties.headers().as_ref(), delivery.redelivered);
    let key = properties
        .message_id()
        .as_ref()
        .map(|id| id.as_str().to_owned());
    let timestamp = properties.timestamp().map(|seconds| seconds as i64 * 1000);
    let payload = Bytes::from(std::mem::take(&mut delivery.data));
    let mut message = Message::new(queue.clone(), offset, Some(payload)).with_headers(headers);
    if let Some(key) = key {
        message = message.with_key(key);
    }
    if let Some(ms) = timestamp {
        message = message.with_timestamp_ms(ms);
    }
    message
}

#[cfg(test)]
mod tests {
    use super::*;
    use lapin::BasicProperties;

    #[test]
    fn a_delivery_keeps_its_payload_id_time_and_redelivery() {
        let queue = PartitionId::new("jobs", 0);
        let mut delivery = Delivery::mock(7, "".into(), "jobs".into(), true, b"{}".to_vec());
        delivery.properties = BasicProperties::default()
            .with_message_id("job-1".into())
            .with_timestamp(1_700_000_000);
        let message = message(&queue, 42, &mut delivery);
        assert_eq!(message.partition_id(), &queue);
        assert_eq!(message.offset(), 42);
        assert_eq!(message.payload().as_deref(), Some(&b"{}"[..]));
        assert_eq!(message.key_str(), Some("job-1"));
        assert_eq!(message.timestamp_ms(), Some(1_700_000_000_000));
        assert_eq!(
            message.headers().get_str(headers::REDELIVERED),
            Some("true")
        );
    }

    #[test]
    fn a_first_delivery_has_no_redelivery_header() {
        let queue = PartitionId::new("jobs", 0);
        let mut delivery = Delivery::mock(1, "".into(), "jobs".into(), false, Vec::new());
        let message = message(&queue, 0, &mut delivery);
        assert_eq!(message.headers().get(headers::REDELIVERED), None);
        assert_eq!(message.key(), None);
        assert_eq!(message.payload().as_deref(), Some(&b""[..]));
    }
}
