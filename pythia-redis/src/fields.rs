//! A message as the fields of a stream entry, and back; and the headers the
//! source adds.
//!
//! An entry's field [`PAYLOAD`] is the payload, [`KEY`] the key, and every
//! other field a header of that name. A header that would take one of the
//! two names is written as `header:payload` or `header:key` (and read back
//! as `payload` or `key`). Dead letters thus carry their reason in the
//! fields `pythia.dlq.reason`, `pythia.dlq.kind`, … A list element has no
//! fields: it is the payload, and nothing else travels with it.

use bytes::Bytes;
use pythia_core::Headers;

/// The field holding the payload.
pub const PAYLOAD: &str = "payload";
/// The field holding the key.
pub const KEY: &str = "key";
/// The prefix of a header named like one of the fields above.
const ESCAPE: &str = "header:";

/// The stream entry id of a message in stream mode (`1700000000000-0`).
pub const ID: &str = "pythia.redis.id";
/// How many times the entry has been delivered, this time included: 1 for
/// a first delivery, more for an entry claimed from an instance that did
/// not acknowledge it (it died, or was cut off for longer than
/// `redis.claim_idle`). It may have been processed in part.
pub const DELIVERIES: &str = "pythia.redis.deliveries";

/// The fields of an entry for `payload`, `key` and `headers`, in order.
pub(crate) fn to_fields(
    payload: Option<&[u8]>,
    key: Option<&[u8]>,
    headers: &Headers,
) -> Vec<(Vec<u8>, Vec<u8>)> {
    let mut fields = Vec::with_capacity(headers.len() + 2);
    if let Some(payload) = payload {
        fields.push((PAYLOAD.as_bytes().to_vec(), payload.to_vec()));
    }
    if let Some(key) = key {
        fields.push((KEY.as_bytes().to_vec(), key.to_vec()));
    }
    for header in headers.iter() {
        let name = match header.name.as_str() {
            n @ (PAYLOAD | KEY) => format!("{ESCAPE}{n}"),
            n => n.to_owned(),
        };
        fields.push((
            name.into_bytes(),
            header.value.as_deref().unwrap_or_default().to_vec(),
        ));
    }
    fields
}

/// What an entry's fields hold: its payload (`None` without a `payload`
/// field), key and headers.
#[derive(Debug, Default, PartialEq)]
pub(crate) struct Decoded {
    pub(crate) payload: Option<Bytes>,
    pub(crate) key: Option<Bytes>,
    pub(crate) headers: Headers,
}

/// Reads an entry's fields.
pub(crate) fn from_fields(fields: Vec<(Vec<u8>, Vec<u8>)>) -> Decoded {
    let mut decoded = Decoded::default();
    for (name, value) in fields {
        match name.as_slice() {
            n if n == PAYLOAD.as_bytes() => decoded.payload = Some(Bytes::from(value)),
            n if n == KEY.as_bytes() => decoded.key = Some(Bytes::from(value)),
            n => {
                let name = String::from_utf8_lossy(n);
                let name = name.strip_prefix(ESCAPE).unwrap_or(&name).to_owned();
                decoded.headers.append(name, value);
            }
        }
    }
    decoded
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payload_key_and_headers_go_out_and_come_back() {
        let mut headers = Headers::new();
        headers.append("pythia.dlq.reason", "bad json");
        headers.append("payload", "a header named payload");
        headers.append("trace", "t1");
        let fields = to_fields(Some(b"{}"), Some(b"k1"), &headers);
        let names: Vec<&[u8]> = fields.iter().map(|(n, _)| n.as_slice()).collect();
        assert_eq!(
            names,
            [
                &b"payload"[..],
                b"key",
                b"pythia.dlq.reason",
                b"header:payload",
                b"trace"
            ]
        );
        let back = from_fields(fields);
        assert_eq!(back.payload.as_deref(), Some(&b"{}"[..]));
        assert_eq!(back.key.as_deref(), Some(&b"k1"[..]));
        assert_eq!(back.headers.get_str("pythia.dlq.reason"), Some("bad json"));
        assert_eq!(
            back.headers.get_str("payload"),
            Some("a header named payload")
        );
        assert_eq!(back.headers.len(), 3);
    }

    #[test]
    fn an_entry_without_payload_has_none() {
        let back = from_fields(vec![(b"id".to_vec(), b"7".to_vec())]);
        assert_eq!(back.payload, None);
        assert_eq!(back.key, None);
        assert_eq!(back.headers.get_str("id"), Some("7"));
        assert!(to_fields(None, None, &Headers::new()).is_empty());
    }
}
