//! Turns librdkafka's messages into the core's: payloads and keys copied
//! into shared arena blocks, topic names interned, headers copied.

use std::collections::HashMap;
use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use pythia_core::{Header, Headers, Message, PartitionId};
use rdkafka::Message as _;
use rdkafka::message::{BorrowedMessage, Headers as _};

use crate::queue::Fetched;

/// Size of the blocks payloads and keys are copied into.
const ARENA_BLOCK: usize = 64 * 1024;

/// Copies `bytes` into the arena's current block (starting a new block when
/// it is full) and returns them as a shared slice of it.
fn copy(arena: &mut BytesMut, bytes: &[u8]) -> Bytes {
    if arena.capacity() - arena.len() < bytes.len() {
        // A block still referenced by messages is never reused: this starts a new one.
        *arena = BytesMut::with_capacity(ARENA_BLOCK.max(bytes.len()));
    }
    arena.extend_from_slice(bytes);
    arena.split().freeze()
}

/// Copies a message of the consumer's own queue out of librdkafka.
pub(super) fn convert(
    message: &BorrowedMessage<'_>,
    topics: &mut HashMap<String, Arc<str>>,
    arena: &mut BytesMut,
) -> Message<Option<Bytes>> {
    let topic = match topics.get(message.topic()) {
        Some(topic) => topic.clone(),
        None => {
            let topic: Arc<str> = message.topic().into();
            topics.insert(message.topic().to_owned(), topic.clone());
            topic
        }
    };
    let headers = message.headers().map(|headers| {
        headers
            .iter()
            .map(|h| header(h.key, h.value))
            .collect::<Headers>()
    });
    assemble(
        PartitionId::new(topic, message.partition()),
        message.offset(),
        (message.payload(), message.key()),
        headers,
        message.timestamp().to_millis(),
        arena,
    )
}

/// Copies a message of a partition's own queue out of librdkafka.
pub(super) fn convert_fetched(
    partition: &PartitionId,
    message: &Fetched<'_>,
    arena: &mut BytesMut,
) -> Message<Option<Bytes>> {
    let mut headers: Option<Vec<Header>> = None;
    message.headers(|name, value| headers.get_or_insert_default().push(header(name, value)));
    assemble(
        partition.clone(),
        message.offset(),
        (message.payload(), message.key()),
        headers.map(Headers::from_iter),
        message.timestamp_ms(),
        arena,
    )
}

fn header(name: &str, value: Option<&[u8]>) -> Header {
    Header {
        name: name.to_owned(),
        value: value.map(Bytes::copy_from_slice),
    }
}

fn assemble(
    partition: PartitionId,
    offset: i64,
    (payload, key): (Option<&[u8]>, Option<&[u8]>),
    headers: Option<Headers>,
    timestamp_ms: Option<i64>,
    arena: &mut BytesMut,
) -> Message<Option<Bytes>> {
    let mut message = Message::new(partition, offset, payload.map(|p| copy(arena, p)));
    if let Some(key) = key {
        message = message.with_key(copy(arena, key));
    }
    if let Some(headers) = headers {
        message = message.with_headers(headers);
    }
    if let Some(ms) = timestamp_ms {
        message = message.with_timestamp_ms(ms);
    }
    message
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn copies_share_blocks_and_keep_their_bytes() {
        let mut arena = BytesMut::new();
        let a = copy(&mut arena, b"first");
        let b = copy(&mut arena, b"second");
        let big = vec![7u8; ARENA_BLOCK + 1];
        let c = copy(&mut arena, &big);
        let d = copy(&mut arena, b"");
        assert_eq!(
            (&a[..], &b[..], &d[..]),
            (&b"first"[..], &b"second"[..], &b""[..])
        );
        assert_eq!(c.len(), ARENA_BLOCK + 1);
        // Neighbours in one block: `b` starts where `a` ends.
        assert_eq!(a.as_ptr().wrapping_add(a.len()), b.as_ptr());
        drop(a);
        assert_eq!(&b[..], b"second", "a slice outlives its neighbours");
    }
}
