//! Replies of the server as entries, and entries and list elements as
//! Pythia messages.
//!
//! A message's partition is the input with index 0 (neither a stream read
//! by a group nor a list has partitions); its offset is the source's number
//! for the delivery (see `ack`). A stream entry's fields give its payload,
//! key and headers ([`crate::fields`]), its id the create time and the
//! header [`fields::ID`](crate::fields::ID); a list element is the payload.

use bytes::Bytes;
use pythia_core::{Message, PartitionId};
use redis::Value;

use crate::error::RedisError;
use crate::fields;

/// A stream entry as read.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Entry {
    pub(crate) id: String,
    /// `None` for an entry still pending but deleted from the stream.
    pub(crate) fields: Option<Vec<(Vec<u8>, Vec<u8>)>>,
}

/// One line of `XPENDING … IDLE`: an entry pending for a consumer.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Pending {
    pub(crate) id: String,
    pub(crate) consumer: String,
    pub(crate) deliveries: u64,
}

fn text(value: &Value) -> Option<String> {
    match value {
        Value::BulkString(bytes) => Some(String::from_utf8_lossy(bytes).into_owned()),
        Value::SimpleString(s) => Some(s.clone()),
        Value::Int(n) => Some(n.to_string()),
        _ => None,
    }
}

fn bytes(value: Value) -> Option<Vec<u8>> {
    match value {
        Value::BulkString(bytes) => Some(bytes),
        Value::SimpleString(s) => Some(s.into_bytes()),
        Value::Int(n) => Some(n.to_string().into_bytes()),
        _ => None,
    }
}

fn int(value: &Value) -> Option<u64> {
    match value {
        Value::Int(n) => u64::try_from(*n).ok(),
        other => text(other)?.parse().ok(),
    }
}

/// `[id, [field, value, …]]` (fields nil for a deleted entry).
fn entry(value: Value) -> Option<Entry> {
    let Value::Array(mut parts) = value else {
        return None;
    };
    if parts.len() != 2 {
        return None;
    }
    let raw_fields = parts.pop()?;
    let id = text(&parts[0])?;
    let fields = match raw_fields {
        Value::Nil => None,
        Value::Array(items) => {
            let mut pairs = Vec::with_capacity(items.len() / 2);
            let mut items = items.into_iter();
            while let (Some(name), Some(value)) = (items.next(), items.next()) {
                pairs.push((bytes(name)?, bytes(value)?));
            }
            Some(pairs)
        }
        Value::Map(items) => Some(
            items
                .into_iter()
                .map(|(n, v)| Some((bytes(n)?, bytes(v)?)))
                .collect::<Option<_>>()?,
        ),
        _ => return None,
    };
    Some(Entry { id, fields })
}

fn entries(value: Value) -> Option<Vec<Entry>> {
    match value {
        Value::Array(items) => items.into_iter().map(entry).collect(),
        Value::Nil => Some(Vec::new()),
        _ => None,
    }
}

/// The entries of an `XREADGROUP` reply for one stream (nil: none came).
pub(crate) fn read_reply(reply: Value) -> Result<Vec<Entry>, RedisError> {
    let shown = RedisError::reply("XREADGROUP", &reply);
    let streams = match reply {
        Value::Nil => return Ok(Vec::new()),
        Value::Array(streams) => streams
            .into_iter()
            .map(|s| match s {
                Value::Array(mut pair) if pair.len() == 2 => pair.pop(),
                _ => None,
            })
            .collect::<Option<Vec<_>>>(),
        Value::Map(streams) => Some(streams.into_iter().map(|(_, v)| v).collect()),
        _ => None,
    };
    let mut out = Vec::new();
    for stream in streams.ok_or_else(|| shown.clone())? {
        out.extend(entries(stream).ok_or_else(|| shown.clone())?);
    }
    Ok(out)
}

/// The next cursor, the claimed entries and the ids of claimed entries no
/// longer in the stream, of an `XAUTOCLAIM` reply.
pub(crate) fn autoclaim_reply(
    reply: Value,
) -> Result<(String, Vec<Entry>, Vec<String>), RedisError> {
    let shown = RedisError::reply("XAUTOCLAIM", &reply);
    let Value::Array(parts) = reply else {
        return Err(shown);
    };
    let mut parts = parts.into_iter();
    let cursor = parts.next().as_ref().and_then(text).ok_or(shown.clone())?;
    let claimed = parts.next().and_then(entries).ok_or(shown.clone())?;
    let deleted = match parts.next() {
        Some(Value::Array(ids)) => ids.iter().filter_map(text).collect(),
        _ => Vec::new(),
    };
    Ok((cursor, claimed, deleted))
}

/// The lines of an extended `XPENDING` reply.
pub(crate) fn pending_reply(reply: Value) -> Result<Vec<Pending>, RedisError> {
    let shown = RedisError::reply("XPENDING", &reply);
    let Value::Array(lines) = reply else {
        return Err(shown);
    };
    lines
        .into_iter()
        .map(|line| match line {
            Value::Array(parts) if parts.len() == 4 => Some(Pending {
                id: text(&parts[0])?,
                consumer: text(&parts[1])?,
                deliveries: int(&parts[3])?,
            }),
            _ => None,
        })
        .collect::<Option<_>>()
        .ok_or(shown)
}

/// The milliseconds part of an entry id, its time of addition.
pub(crate) fn id_time_ms(id: &str) -> Option<i64> {
    id.split_once('-')?.0.parse().ok()
}

/// `entry`, delivered `deliveries` times, as the message at `offset`.
pub(crate) fn entry_message(
    input: &PartitionId,
    offset: i64,
    entry: Entry,
    deliveries: u64,
) -> Message<Option<Bytes>> {
    let decoded = fields::from_fields(entry.fields.unwrap_or_default());
    let mut headers = decoded.headers;
    headers.append(fields::ID, entry.id.clone());
    headers.append(fields::DELIVERIES, deliveries.to_string());
    let mut message = Message::new(input.clone(), offset, decoded.payload).with_headers(headers);
    if let Some(key) = decoded.key {
        message = message.with_key(key);
    }
    if let Some(ms) = id_time_ms(&entry.id) {
        message = message.with_timestamp_ms(ms);
    }
    message
}

/// A list element as the message at `offset`.
pub(crate) fn element_message(
    input: &PartitionId,
    offset: i64,
    element: &[u8],
) -> Message<Option<Bytes>> {
    Message::new(input.clone(), offset, Some(Bytes::copy_from_slice(element)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bulk(s: &str) -> Value {
        Value::BulkString(s.as_bytes().to_vec())
    }

    fn raw_entry(id: &str, fields: &[(&str, &str)]) -> Value {
        let flat = fields
            .iter()
            .flat_map(|(n, v)| [bulk(n), bulk(v)])
            .collect();
        Value::Array(vec![bulk(id), Value::Array(flat)])
    }

    #[test]
    fn a_read_reply_gives_its_entries_and_a_timeout_none() {
        let reply = Value::Array(vec![Value::Array(vec![
            bulk("jobs"),
            Value::Array(vec![
                raw_entry("1700000000000-0", &[("payload", "a"), ("trace", "t")]),
                Value::Array(vec![bulk("1700000000001-0"), Value::Nil]),
            ]),
        ])]);
        let entries = read_reply(reply).unwrap();
        assert_eq!(entries.len(), 2);
        assert_eq!(entries[0].id, "1700000000000-0");
        assert_eq!(entries[1].fields, None);
        assert!(read_reply(Value::Nil).unwrap().is_empty());
        assert!(read_reply(Value::Int(3)).is_err());
    }

    #[test]
    fn an_autoclaim_reply_gives_cursor_entries_and_deleted_ids() {
        let reply = Value::Array(vec![
            bulk("0-0"),
            Value::Array(vec![raw_entry("5-0", &[("payload", "x")])]),
            Value::Array(vec![bulk("4-0")]),
        ]);
        let (cursor, claimed, deleted) = autoclaim_reply(reply).unwrap();
        assert_eq!(cursor, "0-0");
        assert_eq!(claimed[0].id, "5-0");
        assert_eq!(deleted, ["4-0"]);
    }

    #[test]
    fn a_pending_reply_gives_owner_and_delivery_count() {
        let reply = Value::Array(vec![Value::Array(vec![
            bulk("5-0"),
            bulk("host-1"),
            Value::Int(31000),
            Value::Int(3),
        ])]);
        assert_eq!(
            pending_reply(reply).unwrap(),
            [Pending {
                id: "5-0".into(),
                consumer: "host-1".into(),
                deliveries: 3
            }]
        );
    }

    #[test]
    fn an_entry_becomes_a_message_with_its_id_time_and_deliveries() {
        let input = PartitionId::new("jobs", 0);
        let entry = Entry {
            id: "1700000000123-4".into(),
            fields: Some(vec![
                (b"payload".to_vec(), b"{}".to_vec()),
                (b"key".to_vec(), b"job-1".to_vec()),
            ]),
        };
        let message = entry_message(&input, 42, entry, 2);
        assert_eq!(message.partition_id(), &input);
        assert_eq!(message.offset(), 42);
        assert_eq!(message.payload().as_deref(), Some(&b"{}"[..]));
        assert_eq!(message.key_str(), Some("job-1"));
        assert_eq!(message.timestamp_ms(), Some(1_700_000_000_123));
        assert_eq!(
            message.headers().get_str(fields::ID),
            Some("1700000000123-4")
        );
        assert_eq!(message.headers().get_str(fields::DELIVERIES), Some("2"));
        let element = element_message(&input, 1, b"raw");
        assert_eq!(element.payload().as_deref(), Some(&b"raw"[..]));
    }
}
