//! The message as a worker sees it: payload plus where it came from.

use std::fmt;
use std::sync::Arc;

use bytes::Bytes;

/// A partition of a source: the unit of assignment and of ordering.
///
/// For Kafka this is a topic partition. A source without partitions (a RabbitMQ
/// queue, a Redis stream) uses index 0.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PartitionId {
    topic: Arc<str>,
    index: i32,
}

impl PartitionId {
    /// Names partition `index` of `topic`.
    ///
    /// ```
    /// let p = pythia_core::PartitionId::new("orders", 3);
    /// assert_eq!(p.to_string(), "orders/3");
    /// ```
    pub fn new(topic: impl Into<Arc<str>>, index: i32) -> Self {
        Self {
            topic: topic.into(),
            index,
        }
    }

    /// The topic (or queue, or stream) name.
    pub fn topic(&self) -> &str {
        &self.topic
    }

    /// The topic name as a shared string, cheap to clone.
    pub fn topic_arc(&self) -> &Arc<str> {
        &self.topic
    }

    /// The partition index within the topic.
    pub fn index(&self) -> i32 {
        self.index
    }
}

impl fmt::Display for PartitionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.topic, self.index)
    }
}

impl fmt::Debug for PartitionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// One header of a message. Kafka allows a header without a value (`None`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Header {
    /// The header name.
    pub name: String,
    /// The header value; `None` is a null value, distinct from an empty one.
    pub value: Option<Bytes>,
}

/// The ordered headers of a message. Names may repeat, as in Kafka.
///
/// Shared on clone: the runtime copies a message for each attempt (the
/// original stays for a retry or a dead letter), and a copy of its headers
/// costs no allocation until one side changes them.
#[derive(Clone, Default)]
pub struct Headers(Option<Arc<Vec<Header>>>);

impl Headers {
    /// No headers.
    pub fn new() -> Self {
        Self(None)
    }

    fn push(&mut self, header: Header) {
        Arc::make_mut(self.0.get_or_insert_with(Arc::default)).push(header);
    }

    fn as_slice(&self) -> &[Header] {
        self.0.as_deref().map_or(&[], Vec::as_slice)
    }

    /// Adds a header at the end, keeping any earlier one of the same name.
    ///
    /// ```
    /// let mut headers = pythia_core::Headers::new();
    /// headers.append("trace", "abc");
    /// assert_eq!(headers.get_str("trace"), Some("abc"));
    /// ```
    pub fn append(&mut self, name: impl Into<String>, value: impl Into<Bytes>) -> &mut Self {
        self.push(Header {
            name: name.into(),
            value: Some(value.into()),
        });
        self
    }

    /// Adds a header with a null value.
    pub fn append_null(&mut self, name: impl Into<String>) -> &mut Self {
        self.push(Header {
            name: name.into(),
            value: None,
        });
        self
    }

    /// The value of the last header named `name`, if it has one.
    pub fn get(&self, name: &str) -> Option<&[u8]> {
        self.as_slice()
            .iter()
            .rev()
            .find(|h| h.name == name)
            .and_then(|h| h.value.as_deref())
    }

    /// Like [`Headers::get`], when the value is UTF-8.
    pub fn get_str(&self, name: &str) -> Option<&str> {
        self.get(name).and_then(|v| std::str::from_utf8(v).ok())
    }

    /// All headers in order.
    pub fn iter(&self) -> impl Iterator<Item = &Header> {
        self.as_slice().iter()
    }

    /// The number of headers.
    pub fn len(&self) -> usize {
        self.as_slice().len()
    }

    /// Whether there are no headers.
    pub fn is_empty(&self) -> bool {
        self.as_slice().is_empty()
    }
}

impl PartialEq for Headers {
    fn eq(&self, other: &Self) -> bool {
        self.as_slice() == other.as_slice()
    }
}

impl Eq for Headers {}

impl fmt::Debug for Headers {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.as_slice()).finish()
    }
}

impl FromIterator<Header> for Headers {
    fn from_iter<I: IntoIterator<Item = Header>>(iter: I) -> Self {
        let all: Vec<Header> = iter.into_iter().collect();
        Self((!all.is_empty()).then(|| Arc::new(all)))
    }
}

/// A message from a source, with its payload decoded into `T`.
///
/// The runtime hands a `Message<Bytes>` to the codec, which turns it into the
/// worker's `Message<Input>`.
#[derive(Clone, Debug)]
pub struct Message<T> {
    pub(crate) partition: PartitionId,
    pub(crate) offset: i64,
    pub(crate) key: Option<Bytes>,
    pub(crate) payload: T,
    pub(crate) headers: Headers,
    pub(crate) timestamp_ms: Timestamp,
}

// Every message is moved several times on its way through a lane; at 128
// bytes or less a move is copied inline instead of by a call to `memcpy`.
const _: () = assert!(std::mem::size_of::<Message<Option<Bytes>>>() <= 128);

/// A create time in milliseconds since the Unix epoch, or none: an `i64` with
/// `i64::MIN` for none rather than an `Option<i64>`, eight bytes smaller.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) struct Timestamp(i64);

impl Timestamp {
    pub(crate) const NONE: Self = Self(i64::MIN);

    pub(crate) fn new(ms: i64) -> Self {
        Self(ms)
    }

    pub(crate) fn get(self) -> Option<i64> {
        (self != Self::NONE).then_some(self.0)
    }
}

impl std::fmt::Debug for Timestamp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.get().fmt(f)
    }
}

impl<T> Message<T> {
    /// Builds a message; sources and tests use this.
    ///
    /// ```
    /// use pythia_core::{Message, PartitionId};
    /// let msg = Message::new(PartitionId::new("orders", 0), 42, "payload")
    ///     .with_key("order-1")
    ///     .with_timestamp_ms(1_700_000_000_000);
    /// assert_eq!(msg.offset(), 42);
    /// assert_eq!(msg.key_str(), Some("order-1"));
    /// ```
    pub fn new(partition: PartitionId, offset: i64, payload: T) -> Self {
        Self {
            partition,
            offset,
            key: None,
            payload,
            headers: Headers::new(),
            timestamp_ms: Timestamp::NONE,
        }
    }

    /// Sets the key.
    pub fn with_key(mut self, key: impl Into<Bytes>) -> Self {
        self.key = Some(key.into());
        self
    }

    /// Sets the headers.
    pub fn with_headers(mut self, headers: Headers) -> Self {
        self.headers = headers;
        self
    }

    /// Sets the create time, in milliseconds since the Unix epoch
    /// (`i64::MIN` stands for none).
    pub fn with_timestamp_ms(mut self, timestamp_ms: i64) -> Self {
        self.timestamp_ms = Timestamp::new(timestamp_ms);
        self
    }

    /// The payload.
    pub fn payload(&self) -> &T {
        &self.payload
    }

    /// The payload, mutably.
    pub fn payload_mut(&mut self) -> &mut T {
        &mut self.payload
    }

    /// Takes the payload, dropping the rest.
    pub fn into_payload(self) -> T {
        self.payload
    }

    /// The key, if the message has one.
    pub fn key(&self) -> Option<&[u8]> {
        self.key.as_deref()
    }

    /// The key as UTF-8, if it has one and it is UTF-8.
    pub fn key_str(&self) -> Option<&str> {
        self.key().and_then(|k| std::str::from_utf8(k).ok())
    }

    /// The headers.
    pub fn headers(&self) -> &Headers {
        &self.headers
    }

    /// The topic the message came from.
    pub fn topic(&self) -> &str {
        self.partition.topic()
    }

    /// The partition index the message came from.
    pub fn partition(&self) -> i32 {
        self.partition.index()
    }

    /// The topic and partition together.
    pub fn partition_id(&self) -> &PartitionId {
        &self.partition
    }

    /// The offset (position) of the message within its partition.
    pub fn offset(&self) -> i64 {
        self.offset
    }

    /// The create time in milliseconds since the Unix epoch, if the broker gave one.
    pub fn timestamp_ms(&self) -> Option<i64> {
        self.timestamp_ms.get()
    }

    /// Replaces the payload, keeping where the message came from.
    pub fn map<U>(self, f: impl FnOnce(T) -> U) -> Message<U> {
        Message {
            partition: self.partition,
            offset: self.offset,
            key: self.key,
            payload: f(self.payload),
            headers: self.headers,
            timestamp_ms: self.timestamp_ms,
        }
    }

    /// A copy of the message with `f` of its payload, which stays borrowed.
    pub(crate) fn try_map_ref<U, E>(
        &self,
        f: impl FnOnce(&T) -> Result<U, E>,
    ) -> Result<Message<U>, E> {
        let payload = f(&self.payload)?;
        Ok(Message {
            partition: self.partition.clone(),
            offset: self.offset,
            key: self.key.clone(),
            payload,
            headers: self.headers.clone(),
            timestamp_ms: self.timestamp_ms,
        })
    }

    /// Like [`Message::map`] with a fallible function.
    pub fn try_map<U, E>(self, f: impl FnOnce(T) -> Result<U, E>) -> Result<Message<U>, E> {
        let payload = f(self.payload)?;
        Ok(Message {
            partition: self.partition,
            offset: self.offset,
            key: self.key,
            payload,
            headers: self.headers,
            timestamp_ms: self.timestamp_ms,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_copy_of_headers_shares_them_until_one_side_changes() {
        let mut original = Headers::new();
        original.append("a", "1").append_null("b");
        let mut copy = original.clone();
        assert_eq!(copy, original);
        copy.append("a", "2");
        assert_eq!(original.get_str("a"), Some("1"), "the original is kept");
        assert_eq!(copy.get_str("a"), Some("2"), "the last of a name wins");
        assert_eq!((original.len(), copy.len()), (2, 3));
        let names: Vec<_> = copy.iter().map(|h| h.name.as_str()).collect();
        assert_eq!(names, ["a", "b", "a"]);
        assert_eq!(copy.get("b"), None, "a null value");
    }

    #[test]
    fn no_headers_are_equal_however_they_were_made() {
        let collected: Headers = std::iter::empty().collect();
        assert_eq!(collected, Headers::new());
        assert!(collected.is_empty() && collected.iter().next().is_none());
        assert_eq!(format!("{:?}", Headers::new()), "[]");
        let one: Headers = [Header {
            name: "k".into(),
            value: None,
        }]
        .into_iter()
        .collect();
        assert_ne!(one, Headers::new());
        assert_eq!(format!("{one:?}"), r#"[Header { name: "k", value: None }]"#);
    }
}
