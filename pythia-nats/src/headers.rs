//! Headers between Pythia and NATS: a message's [`Headers`] to and from a
//! NATS header map, and the headers the source adds.
//!
//! NATS headers are text lines: a value cannot hold a line break and a name
//! cannot hold `:`, spaces or control characters. Going out, a value's line
//! breaks become spaces (a dead letter's multi-line error reason stays
//! readable), bytes that are not UTF-8 are replaced, a null value is sent
//! empty, and a name NATS cannot carry has its bad characters replaced by
//! `_`. The record's key travels as the [`KEY`] header (not `Nats-Msg-Id`,
//! which would make the server drop outputs that share a key).

use async_nats::{HeaderMap, HeaderName, HeaderValue};
use pythia_core::Headers;

/// The message's key.
pub const KEY: &str = "pythia.key";

/// How many times the server delivered this message, set from the second
/// delivery on: earlier deliveries were not acknowledged in time (a crash,
/// a lost connection, a stall) and may have been processed in part.
pub const DELIVERED: &str = "pythia.nats.delivered";

/// The stream sequence of the message.
pub const SEQUENCE: &str = "pythia.nats.sequence";

/// The headers of an incoming message, with the server's delivery count
/// and stream sequence; its key is taken out (see [`KEY`]).
pub(crate) fn from_nats(
    map: Option<&HeaderMap>,
    delivered: i64,
    sequence: u64,
) -> (Headers, Option<String>) {
    let mut headers = Headers::new();
    let mut key = None;
    for (name, values) in map.into_iter().flat_map(HeaderMap::iter) {
        let name = name.to_string();
        for value in values {
            if name == KEY {
                key = Some(value.as_str().to_owned());
            } else {
                headers.append(name.clone(), value.as_str().to_owned());
            }
        }
    }
    if delivered > 1 {
        headers.append(DELIVERED, delivered.to_string());
    }
    headers.append(SEQUENCE, sequence.to_string());
    (headers, key)
}

/// The header map of an outgoing record (see the module's notes).
pub(crate) fn to_nats(headers: &Headers, key: Option<&[u8]>) -> HeaderMap {
    let mut map = HeaderMap::new();
    for header in headers.iter() {
        let value = header
            .value
            .as_deref()
            .map(String::from_utf8_lossy)
            .unwrap_or_default();
        map.append(name(&header.name), HeaderValue::from_lossy(&value));
    }
    if let Some(key) = key {
        map.insert(KEY, HeaderValue::from_lossy(&String::from_utf8_lossy(key)));
    }
    map
}

/// `name` as a header name NATS accepts.
fn name(name: &str) -> HeaderName {
    if !name.is_empty()
        && let Ok(valid) = HeaderName::try_from(name)
    {
        return valid;
    }
    let cleaned: String = name
        .chars()
        .map(|c| match c {
            c if c.is_ascii_graphic() && c != ':' => c,
            _ => '_',
        })
        .collect();
    let cleaned = if cleaned.is_empty() {
        "_".to_owned()
    } else {
        cleaned
    };
    HeaderName::try_from(cleaned).unwrap_or_else(|_| HeaderName::from_static("pythia.header"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers_go_out_and_come_back_with_the_key_apart() {
        let mut headers = Headers::new();
        headers.append("pythia.dlq.reason", "bad json\nat line 1");
        headers.append("pythia.dlq.kind", "decode");
        headers.append_null("empty");
        let map = to_nats(&headers, Some(b"order-7"));
        assert_eq!(
            map.get("pythia.dlq.reason").map(HeaderValue::as_str),
            Some("bad json at line 1"),
            "a line break cannot travel in a header"
        );
        let (back, key) = from_nats(Some(&map), 1, 42);
        assert_eq!(key.as_deref(), Some("order-7"));
        assert_eq!(back.get_str("pythia.dlq.kind"), Some("decode"));
        assert_eq!(back.get_str("empty"), Some(""));
        assert_eq!(back.get_str(KEY), None);
        assert_eq!(back.get(DELIVERED), None, "a first delivery");
        assert_eq!(back.get_str(SEQUENCE), Some("42"));
    }

    #[test]
    fn names_nats_cannot_carry_are_cleaned_and_redeliveries_counted() {
        let mut headers = Headers::new();
        headers.append("bad name:x", "v");
        headers.append("", "w");
        let map = to_nats(&headers, None);
        assert_eq!(map.get("bad_name_x").map(HeaderValue::as_str), Some("v"));
        assert_eq!(map.get("_").map(HeaderValue::as_str), Some("w"));
        let (back, key) = from_nats(None, 3, 1);
        assert_eq!(key, None);
        assert_eq!(back.get_str(DELIVERED), Some("3"));
    }
}
