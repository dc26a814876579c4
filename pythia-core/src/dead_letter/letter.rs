//! A dead letter as a record: the original message with Pythia's headers,
//! and the reduced form sent when it would not fit the producer's limit or
//! the broker refused it ([`form`] decides which, from the sizes alone).
//!
//! Past 500 lines because of its tests, half the file: when a dead letter
//! is reduced, what it keeps, and that it then fits, case by case.

use std::sync::Arc;

use bytes::Bytes;

use super::{Failure, header};
use crate::message::{Headers, Message};
use crate::sink::Record;

/// What a dead letter keeps of a part larger than this when it is reduced.
const KEY_KEEP: usize = 1024;
/// The payload prefix a reduced dead letter keeps, for diagnosis: the whole
/// message is still in its topic at the offset the headers give.
const PAYLOAD_KEEP: usize = 4096;
const REASON_KEEP: usize = 4096;
/// The original headers a reduced dead letter keeps, in all.
const HEADERS_KEEP: usize = 16 * 1024;
/// Room kept below the sink's limit for the record's framing (librdkafka
/// counts up to 36 bytes) and the headers a reduction adds.
const RECORD_OVERHEAD: usize = 512;
/// A header's framing: two varint lengths.
const HEADER_OVERHEAD: usize = 10;

/// What the parts of a dead letter weigh, in bytes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Sizes {
    pub(crate) key: usize,
    pub(crate) payload: usize,
    /// The original message's headers, framed.
    pub(crate) headers: usize,
    /// The reason's value.
    pub(crate) reason: usize,
    /// Pythia's headers, framed, the reason's value aside.
    pub(crate) ours: usize,
}

impl Sizes {
    /// The bytes of a dead letter cut by `cut`.
    fn cut_by(&self, cut: &Cut) -> usize {
        self.key.min(cut.key)
            + self.payload.min(cut.payload)
            + self.reason.min(cut.reason)
            + self.ours
            + if cut.headers { self.headers } else { 0 }
    }

    fn whole(&self) -> usize {
        self.key + self.payload + self.headers + self.reason + self.ours
    }

    /// Whether `cut` takes anything away.
    fn cut(&self, cut: &Cut) -> bool {
        self.cut_by(cut) < self.whole()
    }
}

/// How a dead letter goes out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Form {
    /// As the original message, with the `pythia.dlq.*` headers.
    Whole,
    /// Cut down: at most this much of each part.
    Reduced(Cut),
}

/// The most a reduced dead letter keeps of each part, in bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Cut {
    pub(crate) key: usize,
    pub(crate) payload: usize,
    pub(crate) reason: usize,
    /// Whether the original headers are kept.
    pub(crate) headers: bool,
}

/// The form of a dead letter of parts `sizes` for a sink that takes records
/// of at most `limit` bytes (`None`: no known limit). `refused`: the broker
/// refused the dead letter once already, within the limit as far as the
/// producer knew; its own limit is unknown, so the reduced form keeps the
/// least (no payload, no original headers).
///
/// Decided before sending from the sizes alone, so that a dead letter known
/// to be too large is never sent to be refused.
pub(crate) fn form(sizes: Sizes, limit: Option<usize>, refused: bool) -> Form {
    let fits =
        |bytes: usize| limit.is_none_or(|limit| bytes.saturating_add(RECORD_OVERHEAD) <= limit);
    if !refused && fits(sizes.whole()) {
        return Form::Whole;
    }
    let mut cut = Cut {
        key: KEY_KEEP,
        payload: if refused { 0 } else { PAYLOAD_KEEP },
        reason: REASON_KEEP,
        headers: !refused && sizes.headers <= HEADERS_KEEP,
    };
    // A limit too small even for that: the payload goes first, then the
    // original headers, then the key. What is left (the reason and where the
    // message is) goes out as is; if it is refused too, `OnFailure` decides.
    if !fits(sizes.cut_by(&cut)) {
        cut.payload = 0;
    }
    if !fits(sizes.cut_by(&cut)) {
        cut.headers = false;
    }
    if !fits(sizes.cut_by(&cut)) {
        cut.key = 0;
    }
    Form::Reduced(cut)
}

/// A message's dead letter, and the reduced form to send if the broker
/// refuses it (`None` when it is reduced already).
#[derive(Debug)]
pub(crate) struct Letter {
    pub(crate) record: Record,
    pub(crate) fallback: Option<Record>,
}

/// The dead letter of `message` to `topic`: its key, payload and headers with
/// the `pythia.dlq.*` headers appended, reduced if it would exceed `limit`
/// bytes (see [`form`]).
pub(crate) fn letter(
    message: Message<Option<Bytes>>,
    topic: String,
    worker: &str,
    failure: &Failure,
    limit: Option<usize>,
) -> Letter {
    let ours = ours(&message, worker, failure);
    let sizes = Sizes {
        key: message.key.as_ref().map_or(0, Bytes::len),
        payload: message.payload.as_ref().map_or(0, Bytes::len),
        headers: framed(&message.headers),
        reason: failure.reason.len(),
        ours: framed(&ours) + header::REASON.len() + HEADER_OVERHEAD,
    };
    let topic: Arc<str> = Arc::from(topic);
    let least = |cut| reduced(&message, &topic, &ours, &failure.reason, sizes, cut);
    // A reduction that cuts nothing (a message too small to cut, a limit too
    // small for any dead letter) is the whole dead letter.
    let cutting = |form| match form {
        Form::Reduced(cut) if sizes.cut(&cut) => Some(cut),
        _ => None,
    };
    match cutting(form(sizes, limit, false)) {
        Some(cut) => Letter {
            record: least(cut),
            fallback: None,
        },
        None => {
            let fallback = cutting(form(sizes, limit, true)).map(least);
            let mut headers = message.headers;
            headers.append(header::REASON, failure.reason.clone());
            append_all(&mut headers, &ours);
            Letter {
                record: Record {
                    topic: Some(topic),
                    sink: None,
                    key: message.key,
                    payload: message.payload,
                    headers,
                },
                fallback,
            }
        }
    }
}

/// The dead letter of the message at `partition`/`offset` when its payload
/// is gone (it was processed, and an output of it refused): Pythia's headers
/// only, no key or payload; the message itself is still in its topic at
/// that offset.
pub(crate) fn reference(
    partition: crate::message::PartitionId,
    offset: i64,
    topic: String,
    worker: &str,
    failure: &Failure,
    limit: Option<usize>,
) -> Record {
    let message = Message::new(partition, offset, None);
    letter(message, topic, worker, failure, limit).record
}

/// Pythia's headers but the reason, in order.
fn ours(message: &Message<Option<Bytes>>, worker: &str, failure: &Failure) -> Headers {
    let mut headers = Headers::new();
    headers.append(header::KIND, failure.kind.as_str());
    headers.append(header::ATTEMPTS, failure.attempts.to_string());
    headers.append(header::WORKER, worker.to_owned());
    headers.append(header::TOPIC, message.partition.topic().to_owned());
    headers.append(header::PARTITION, message.partition.index().to_string());
    headers.append(header::OFFSET, message.offset.to_string());
    if let Some(ts) = message.timestamp_ms.get() {
        headers.append(header::TIMESTAMP, ts.to_string());
    }
    headers
}

/// Appends Pythia's headers (which all have values) to `headers`.
fn append_all(headers: &mut Headers, ours: &Headers) {
    for h in ours.iter() {
        headers.append(h.name.clone(), h.value.clone().unwrap_or_default());
    }
}

/// The bytes `headers` take in a record.
fn framed(headers: &Headers) -> usize {
    headers
        .iter()
        .map(|h| h.name.len() + h.value.as_ref().map_or(0, Bytes::len) + HEADER_OVERHEAD)
        .sum()
}

/// The reduced dead letter of `message`, keeping what `cut` allows.
fn reduced(
    message: &Message<Option<Bytes>>,
    topic: &Arc<str>,
    ours: &Headers,
    reason: &str,
    sizes: Sizes,
    cut: Cut,
) -> Record {
    let mut truncated = Vec::new();
    let mut headers = if cut.headers {
        message.headers.clone()
    } else {
        if !message.headers.is_empty() {
            truncated.push("headers");
        }
        Headers::new()
    };
    let payload = message.payload.as_ref().map(|p| prefix(p, cut.payload));
    if sizes.payload > cut.payload {
        truncated.push("payload");
    }
    let key = message.key.as_ref().map(|k| prefix(k, cut.key));
    if sizes.key > cut.key {
        truncated.push("key");
    }
    let mut kept = cut.reason.min(reason.len());
    while !reason.is_char_boundary(kept) {
        kept -= 1;
    }
    if kept < reason.len() {
        truncated.push("reason");
    }
    headers.append(header::REASON, reason[..kept].to_owned());
    append_all(&mut headers, ours);
    if !truncated.is_empty() {
        headers.append(header::TRUNCATED, truncated.join(","));
    }
    if sizes.payload > cut.payload {
        headers.append(header::ORIGINAL_SIZE, sizes.payload.to_string());
    }
    if sizes.key > cut.key {
        headers.append(header::ORIGINAL_KEY_SIZE, sizes.key.to_string());
    }
    Record {
        topic: Some(topic.clone()),
        sink: None,
        key,
        payload,
        headers,
    }
}

/// At most the first `n` bytes of `bytes`, without a copy.
fn prefix(bytes: &Bytes, n: usize) -> Bytes {
    bytes.slice(..n.min(bytes.len()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dead_letter::FailureKind;
    use crate::message::PartitionId;

    const MB: usize = 1 << 20;

    fn sizes(key: usize, payload: usize, headers: usize) -> Sizes {
        Sizes {
            key,
            payload,
            headers,
            reason: 60,
            ours: 200,
        }
    }

    const fn cut(key: usize, payload: usize, headers: bool) -> Form {
        Form::Reduced(Cut {
            key,
            payload,
            reason: REASON_KEEP,
            headers,
        })
    }

    #[test]
    fn a_dead_letter_is_reduced_only_when_it_would_not_fit() {
        let limit = Some(1_000_000);
        // (case, sizes, limit, refused before, form)
        let table = [
            ("small", sizes(10, 100, 50), limit, false, Form::Whole),
            (
                "no known limit",
                sizes(10, 10 * MB, 50),
                None,
                false,
                Form::Whole,
            ),
            (
                "just within the limit and its margin",
                sizes(0, 1_000_000 - RECORD_OVERHEAD - 310, 50),
                limit,
                false,
                Form::Whole,
            ),
            (
                "one byte over",
                sizes(0, 1_000_000 - RECORD_OVERHEAD - 309, 50),
                limit,
                false,
                cut(KEY_KEEP, PAYLOAD_KEEP, true),
            ),
            (
                "a 2 MB payload",
                sizes(10, 2 * MB, 50),
                limit,
                false,
                cut(KEY_KEEP, PAYLOAD_KEEP, true),
            ),
            (
                "a 2 MB key",
                sizes(2 * MB, 100, 50),
                limit,
                false,
                cut(KEY_KEEP, PAYLOAD_KEEP, true),
            ),
            (
                "oversize original headers go",
                sizes(10, 2 * MB, HEADERS_KEEP + 1),
                limit,
                false,
                cut(KEY_KEEP, PAYLOAD_KEEP, false),
            ),
            (
                "refused by the broker within the producer's limit: the least",
                sizes(10, 100, 50),
                limit,
                true,
                cut(KEY_KEEP, 0, false),
            ),
            (
                "refused with no known limit",
                sizes(10, 100, 50),
                None,
                true,
                cut(KEY_KEEP, 0, false),
            ),
            (
                "a tiny limit: no payload prefix",
                sizes(10, 2 * MB, 50),
                Some(1000),
                false,
                cut(KEY_KEEP, 0, true),
            ),
            (
                "tinier: no original headers",
                sizes(10, 2 * MB, 400),
                Some(1000),
                false,
                cut(KEY_KEEP, 0, false),
            ),
            (
                "tinier still: no key",
                sizes(KEY_KEEP, 2 * MB, 400),
                Some(1000),
                false,
                cut(0, 0, false),
            ),
        ];
        for (case, sizes, limit, refused, expected) in table {
            assert_eq!(form(sizes, limit, refused), expected, "{case}");
        }
    }

    fn message(key: usize, payload: usize) -> Message<Option<Bytes>> {
        let mut headers = Headers::new();
        headers.append("trace", "abc");
        Message::new(
            PartitionId::new("orders", 3),
            42,
            Some(Bytes::from(vec![b'p'; payload])),
        )
        .with_key(vec![b'k'; key])
        .with_headers(headers)
        .with_timestamp_ms(1_700_000_000_000)
    }

    fn failure(reason: &str) -> Failure {
        Failure {
            kind: FailureKind::Decode,
            reason: reason.to_owned(),
            attempts: 0,
        }
    }

    fn text<'a>(record: &'a Record, name: &str) -> Option<&'a str> {
        record.headers.get_str(name)
    }

    /// What librdkafka counts against `message.max.bytes`, at most.
    fn wire_size(record: &Record) -> usize {
        36 + record.key.as_ref().map_or(0, Bytes::len)
            + record.payload.as_ref().map_or(0, Bytes::len)
            + framed(&record.headers)
    }

    /// The headers every dead letter keeps.
    fn assert_where_and_why(record: &Record, reason: &str) {
        assert_eq!(record.topic.as_deref(), Some("orders.dlq"));
        assert_eq!(text(record, header::REASON), Some(reason));
        assert_eq!(text(record, header::KIND), Some("decode"));
        assert_eq!(text(record, header::ATTEMPTS), Some("0"));
        assert_eq!(text(record, header::WORKER), Some("w"));
        assert_eq!(text(record, header::TOPIC), Some("orders"));
        assert_eq!(text(record, header::PARTITION), Some("3"));
        assert_eq!(text(record, header::OFFSET), Some("42"));
        assert_eq!(text(record, header::TIMESTAMP), Some("1700000000000"));
    }

    #[test]
    fn a_dead_letter_that_fits_is_whole_with_a_least_form_kept_for_a_refusal() {
        let Letter { record, fallback } = letter(
            message(5, 100),
            "orders.dlq".into(),
            "w",
            &failure("bad json"),
            Some(1_000_000),
        );
        assert_where_and_why(&record, "bad json");
        assert_eq!(record.payload.as_deref(), Some(&[b'p'; 100][..]));
        assert_eq!(record.key.as_deref(), Some(&b"kkkkk"[..]));
        assert_eq!(text(&record, "trace"), Some("abc"), "original headers kept");
        assert_eq!(text(&record, header::TRUNCATED), None);

        let fallback = fallback.expect("a reduced form for a refusal");
        assert_where_and_why(&fallback, "bad json");
        assert_eq!(fallback.payload.as_deref(), Some(&[][..]), "no payload");
        assert_eq!(fallback.key.as_deref(), Some(&b"kkkkk"[..]));
        assert_eq!(text(&fallback, "trace"), None);
        assert_eq!(text(&fallback, header::TRUNCATED), Some("headers,payload"));
        assert_eq!(text(&fallback, header::ORIGINAL_SIZE), Some("100"));
        assert_eq!(text(&fallback, header::ORIGINAL_KEY_SIZE), None);
    }

    #[test]
    fn an_oversize_dead_letter_is_reduced_within_the_limit_before_it_is_sent() {
        let limit = 1_000_000;
        for (key, payload, truncated) in [
            (5, 2 * MB, "payload"),
            (2 * MB, 100, "key"),
            (2 * MB, 10 * MB, "payload,key"),
        ] {
            let Letter { record, fallback } = letter(
                message(key, payload),
                "orders.dlq".into(),
                "w",
                &failure("bad json"),
                Some(limit),
            );
            assert!(fallback.is_none(), "reduced already");
            assert_where_and_why(&record, "bad json");
            assert_eq!(text(&record, header::TRUNCATED), Some(truncated));
            assert_eq!(text(&record, "trace"), Some("abc"), "small headers kept");
            let kept = record.payload.as_ref().unwrap().len();
            assert_eq!(kept, payload.min(PAYLOAD_KEEP), "a prefix of the payload");
            assert_eq!(record.key.as_ref().unwrap().len(), key.min(KEY_KEEP));
            let original = |name| text(&record, name).map(str::to_owned);
            assert_eq!(
                original(header::ORIGINAL_SIZE),
                (payload > PAYLOAD_KEEP).then(|| payload.to_string())
            );
            assert_eq!(
                original(header::ORIGINAL_KEY_SIZE),
                (key > KEY_KEEP).then(|| key.to_string())
            );
            assert!(wire_size(&record) + RECORD_OVERHEAD <= limit);
        }
    }

    #[test]
    fn a_dead_letter_with_nothing_to_cut_has_no_reduced_form() {
        let empty = Message::new(PartitionId::new("orders", 3), 42, None);
        for limit in [Some(1_000_000), Some(100), None] {
            let Letter { record, fallback } = letter(
                empty.clone(),
                "orders.dlq".into(),
                "w",
                &failure("null"),
                limit,
            );
            assert!(fallback.is_none(), "{limit:?}: a resend would be the same");
            assert_eq!(text(&record, header::TRUNCATED), None, "{limit:?}");
            assert_eq!(text(&record, header::REASON), Some("null"));
        }
    }

    #[test]
    fn a_huge_reason_is_cut_on_a_character_boundary() {
        let reason = "é".repeat(REASON_KEEP);
        let Letter { record, .. } = letter(
            message(5, 2 * MB),
            "orders.dlq".into(),
            "w",
            &failure(&reason),
            Some(1_000_000),
        );
        let kept = text(&record, header::REASON).expect("utf-8 reason");
        assert!(kept.len() <= REASON_KEEP && reason.starts_with(kept));
        assert_eq!(text(&record, header::TRUNCATED), Some("payload,reason"));
    }
}
