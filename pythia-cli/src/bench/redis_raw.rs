//! The Redis baselines: the loops a careful user writes on the `redis`
//! crate without a framework, one command per round trip, awaited in turn.
//!
//! - A list used as a reliable queue: `BLMOVE queue processing RIGHT LEFT`
//!   takes one element into a processing list, then `LREM processing 1
//!   element` once it is "processed" — one element at a time, no pipelining.
//! - A stream read in a consumer group (created beforehand): `XREADGROUP
//!   GROUP g c COUNT <prefetch> BLOCK 1000 STREAMS s >`, then one `XACK`
//!   per entry, each right after it is "processed".

use std::time::Instant;

use anyhow::{Context as _, bail};
use redis::Value;
use redis::aio::MultiplexedConnection;

use super::queue_side::Drain;

/// The raw side's consumer name, in the group and in its processing list.
const CONSUMER: &str = "raw";

/// Drains the list `drain.queue` one element at a time.
pub(crate) async fn list(mut redis: MultiplexedConnection, drain: &Drain) -> anyhow::Result<()> {
    let queue = drain.queue.as_str();
    let processing = format!("{queue}:processing:{CONSUMER}");
    let deadline = Instant::now() + drain.timeout;
    while !drain.progress.is_finished() {
        if Instant::now() >= deadline {
            bail!("the raw loop did not finish within {:?}", drain.timeout);
        }
        let taken: Option<Vec<u8>> = redis::cmd("BLMOVE")
            .arg(queue)
            .arg(&processing)
            .arg("RIGHT")
            .arg("LEFT")
            .arg(1)
            .query_async(&mut redis)
            .await
            .context("BLMOVE")?;
        let Some(element) = taken else { continue };
        std::hint::black_box(&element);
        redis::cmd("LREM")
            .arg(&processing)
            .arg(1)
            .arg(&element)
            .query_async::<()>(&mut redis)
            .await
            .context("LREM")?;
        drain.progress.tick();
    }
    Ok(())
}

/// Drains the stream `drain.queue` in `group`, `drain.prefetch` entries a read.
pub(crate) async fn stream(
    mut redis: MultiplexedConnection,
    drain: &Drain,
    group: &str,
) -> anyhow::Result<()> {
    let stream = drain.queue.as_str();
    let deadline = Instant::now() + drain.timeout;
    while !drain.progress.is_finished() {
        if Instant::now() >= deadline {
            bail!("the raw loop did not finish within {:?}", drain.timeout);
        }
        let reply: Value = redis::cmd("XREADGROUP")
            .arg("GROUP")
            .arg(group)
            .arg(CONSUMER)
            .arg("COUNT")
            .arg(drain.prefetch)
            .arg("BLOCK")
            .arg(1000)
            .arg("STREAMS")
            .arg(stream)
            .arg(">")
            .query_async(&mut redis)
            .await
            .context("XREADGROUP")?;
        for (id, payload) in entries(reply) {
            std::hint::black_box(&payload);
            redis::cmd("XACK")
                .arg(stream)
                .arg(group)
                .arg(&id)
                .query_async::<()>(&mut redis)
                .await
                .context("XACK")?;
            drain.progress.tick();
        }
    }
    Ok(())
}

/// The entries of an `XREADGROUP` reply on one stream, as (id, payload):
/// `[[stream, [[id, [field, value, …]], …]]]` in RESP2, a map of streams in
/// RESP3, nil when nothing came.
fn entries(reply: Value) -> Vec<(Vec<u8>, Option<Vec<u8>>)> {
    let streams = match reply {
        Value::Array(streams) => streams
            .into_iter()
            .filter_map(|s| match s {
                Value::Array(mut pair) if pair.len() == 2 => pair.pop(),
                _ => None,
            })
            .collect(),
        Value::Map(streams) => streams.into_iter().map(|(_, entries)| entries).collect(),
        _ => Vec::new(),
    };
    let mut found = Vec::new();
    for list in streams {
        let Value::Array(list) = list else { continue };
        for entry in list {
            let Value::Array(mut entry) = entry else {
                continue;
            };
            if entry.len() != 2 {
                continue;
            }
            let fields = entry.pop();
            let Some(Value::BulkString(id)) = entry.pop() else {
                continue;
            };
            found.push((id, payload(fields)));
        }
    }
    found
}

/// The `payload` field's value among an entry's fields.
fn payload(fields: Option<Value>) -> Option<Vec<u8>> {
    let Some(Value::Array(fields)) = fields else {
        return None;
    };
    fields.chunks(2).find_map(|pair| match pair {
        [Value::BulkString(name), Value::BulkString(value)]
            if name.as_slice() == pythia_redis::fields::PAYLOAD.as_bytes() =>
        {
            Some(value.clone())
        }
        _ => None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bulk(s: &str) -> Value {
        Value::BulkString(s.as_bytes().to_vec())
    }

    fn entry(id: &str, payload: &str) -> Value {
        Value::Array(vec![
            bulk(id),
            Value::Array(vec![bulk("payload"), bulk(payload)]),
        ])
    }

    #[test]
    fn entries_are_read_from_resp2_and_resp3_replies() {
        let list = Value::Array(vec![entry("1-0", "a"), entry("1-1", "b")]);
        let expected = vec![
            (b"1-0".to_vec(), Some(b"a".to_vec())),
            (b"1-1".to_vec(), Some(b"b".to_vec())),
        ];
        let resp2 = Value::Array(vec![Value::Array(vec![bulk("s"), list.clone()])]);
        assert_eq!(entries(resp2), expected);
        let resp3 = Value::Map(vec![(bulk("s"), list)]);
        assert_eq!(entries(resp3), expected);
        assert!(entries(Value::Nil).is_empty());
    }

    #[test]
    fn an_entry_without_a_payload_field_is_still_acknowledged() {
        let reply = Value::Array(vec![Value::Array(vec![
            bulk("s"),
            Value::Array(vec![Value::Array(vec![
                bulk("2-0"),
                Value::Array(vec![bulk("other"), bulk("x")]),
            ])]),
        ])]);
        assert_eq!(entries(reply), vec![(b"2-0".to_vec(), None)]);
    }
}
