//! Reading a dead-letter topic for the page: the newest messages of each
//! partition with their `pythia.dlq.*` headers and a size-capped,
//! binary-safe preview of key and payload.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use pythia_core::dead_letter::header;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Headers as _, Message as _};
use rdkafka::{Offset, TopicPartitionList};

/// Bytes of a payload shown at most.
pub(crate) const PREVIEW_BYTES: usize = 1024;

/// The newest `per_partition` messages of each partition of `topic`,
/// newest first.
pub(crate) fn read(
    client: &BaseConsumer,
    topic: &str,
    per_partition: i64,
    timeout: Duration,
) -> anyhow::Result<Vec<serde_json::Value>> {
    let metadata = client.fetch_metadata(Some(topic), timeout)?;
    let partitions: Vec<i32> = metadata
        .topics()
        .iter()
        .filter(|t| t.name() == topic && t.error().is_none())
        .flat_map(|t| t.partitions().iter().map(|p| p.id()))
        .collect();
    let mut wanted = TopicPartitionList::new();
    let mut ends = BTreeMap::new();
    for p in partitions {
        let (low, high) = client.fetch_watermarks(topic, p, timeout)?;
        if high > low {
            wanted.add_partition_offset(
                topic,
                p,
                Offset::Offset((high - per_partition).max(low)),
            )?;
            ends.insert(p, high);
        }
    }
    let mut out = Vec::new();
    if ends.is_empty() {
        return Ok(out);
    }
    client.assign(&wanted)?;
    let deadline = Instant::now() + timeout;
    while !ends.is_empty() && Instant::now() < deadline {
        let Some(result) = client.poll(Duration::from_millis(100)) else {
            continue;
        };
        let message = result?;
        if ends
            .get(&message.partition())
            .is_some_and(|end| message.offset() + 1 >= *end)
        {
            ends.remove(&message.partition());
        }
        out.push(describe(&message));
    }
    let _ = client.unassign();
    out.sort_by_key(|m| std::cmp::Reverse(m["timestamp_ms"].as_i64().unwrap_or_default()));
    Ok(out)
}

fn describe(message: &impl rdkafka::Message) -> serde_json::Value {
    let mut dlq = serde_json::Map::new();
    let mut other = serde_json::Map::new();
    if let Some(headers) = message.headers() {
        for h in headers.iter() {
            let value = h.value.map(preview);
            match h.key.strip_prefix(header::PREFIX) {
                Some(name) => dlq.insert(name.to_owned(), value.map(|v| v["text"].clone()).into()),
                None => other.insert(h.key.to_owned(), value.into()),
            };
        }
    }
    let text = |name: &str| dlq.get(name).and_then(|v| v.as_str()).map(str::to_owned);
    serde_json::json!({
        "partition": message.partition(),
        "offset": message.offset(),
        "timestamp_ms": message.timestamp().to_millis(),
        "reason": text("reason"),
        "kind": text("kind"),
        "attempts": text("attempts").and_then(|a| a.parse::<u64>().ok()),
        "worker": text("worker"),
        "origin": {
            "topic": text("topic"),
            "partition": text("partition").and_then(|p| p.parse::<i32>().ok()),
            "offset": text("offset").and_then(|o| o.parse::<i64>().ok()),
        },
        "truncated": text("truncated"),
        "dlq_headers": dlq,
        "headers": other,
        "key": message.key().map(preview),
        "payload": message.payload().map(preview),
    })
}

/// A preview of `bytes`: UTF-8 text when it is text, else hex; at most
/// [`PREVIEW_BYTES`] of it, with the full size.
pub(crate) fn preview(bytes: &[u8]) -> serde_json::Value {
    let cut = &bytes[..bytes.len().min(PREVIEW_BYTES)];
    let (encoding, text) = match std::str::from_utf8(cut) {
        Ok(text) => ("utf8", text.to_owned()),
        // A character split by the cap is still text.
        Err(e) if e.error_len().is_none() && e.valid_up_to() > 0 => (
            "utf8",
            String::from_utf8_lossy(&cut[..e.valid_up_to()]).into_owned(),
        ),
        Err(_) => (
            "hex",
            cut.iter()
                .map(|b| format!("{b:02x}"))
                .collect::<Vec<_>>()
                .join(" "),
        ),
    };
    serde_json::json!({
        "encoding": encoding,
        "text": text,
        "size": bytes.len(),
        "truncated": bytes.len() > PREVIEW_BYTES,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_is_shown_as_text_and_binary_as_hex() {
        let text = preview(b"{\"id\":1}");
        assert_eq!(text["encoding"], "utf8");
        assert_eq!(text["text"], "{\"id\":1}");
        assert_eq!(text["truncated"], false);
        let binary = preview(&[0xff, 0x00, 0x10]);
        assert_eq!(binary["encoding"], "hex");
        assert_eq!(binary["text"], "ff 00 10");
        assert_eq!(binary["size"], 3);
    }

    #[test]
    fn big_payloads_are_capped_without_splitting_a_character() {
        let mut big = "a".repeat(PREVIEW_BYTES - 1);
        big.push('é'); // two bytes across the cap
        big.push_str(&"b".repeat(100));
        let shown = preview(big.as_bytes());
        assert_eq!(shown["encoding"], "utf8");
        assert_eq!(shown["text"].as_str().unwrap().len(), PREVIEW_BYTES - 1);
        assert_eq!(shown["truncated"], true);
        assert_eq!(shown["size"], big.len());
    }
}
