//! One partition's own message queue, read many messages at a time.
//!
//! librdkafka can route a partition's fetched messages to a queue of its own
//! instead of the consumer's. Reading it with `rd_kafka_consume_batch_queue`
//! takes up to a whole batch in one call and, unlike the event-per-message
//! path of `BaseConsumer::poll`, allocates nothing per message on the Rust
//! side. Its `unsafe` code is the queue handle and the view of a fetched
//! message; the source's other `unsafe` calls are the commit queue
//! (`source/commit.rs`) and reading the member id (`source/rebalance.rs`).
//!
//! A fetched message's headers are read straight from the record when the
//! linked librdkafka lays its messages out as [`layout`] mirrors, and by
//! librdkafka's parser otherwise; [`headers`] decodes the record's header
//! section.

mod headers;
mod layout;

use std::ffi::{CStr, CString, c_void};
use std::marker::PhantomData;
use std::ptr::{self, NonNull};

use rdkafka::bindings as rd;
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext};
use rdkafka::types::RDKafkaErrorCode;

use headers::{Serialized, for_each_header};
use layout::{HEADER_PATH, HeaderPath, MsgStart};

/// The callback a queue runs when it goes from empty to non-empty.
type Wake = Box<dyn Fn() + Send + Sync>;

/// A partition's queue, split off the consumer's.
///
/// It must be dropped before the consumer that made it is destroyed; the
/// source's poller drops its queues before its consumer.
pub(crate) struct PartitionQueue {
    queue: NonNull<rd::rd_kafka_queue_t>,
    /// Kept alive while librdkafka may call it; boxed twice for a thin pointer.
    wake: Option<Box<Wake>>,
}

// SAFETY: librdkafka queues are thread-safe; the handle is used by one thread
// at a time (moved from the rebalance callback to the poller).
unsafe impl Send for PartitionQueue {}

impl PartitionQueue {
    /// Routes `topic`/`partition`'s messages to a queue of its own, which
    /// calls `wake` whenever it becomes non-empty. `None` if librdkafka
    /// refuses (an invalid topic name).
    pub(crate) fn split<C: ConsumerContext>(
        consumer: &BaseConsumer<C>,
        topic: &str,
        partition: i32,
        wake: impl Fn() + Send + Sync + 'static,
    ) -> Option<Self> {
        let topic = CString::new(topic).ok()?;
        let rk = consumer.client().native_ptr();
        // SAFETY: `rk` is a live consumer handle and `topic` a C string.
        let queue = NonNull::new(unsafe {
            rd::rd_kafka_queue_get_partition(rk, topic.as_ptr(), partition)
        })?;
        let wake: Box<Wake> = Box::new(Box::new(wake));
        // SAFETY: `queue` is live. Forwarding to nothing keeps the messages
        // here, also across later assignments of the partition. The opaque
        // pointer stays valid until the callback is disabled in `drop`.
        unsafe {
            rd::rd_kafka_queue_forward(queue.as_ptr(), ptr::null_mut());
            rd::rd_kafka_queue_cb_event_enable(
                queue.as_ptr(),
                Some(nonempty),
                &*wake as *const Wake as *mut c_void,
            );
        }
        Some(Self {
            queue,
            wake: Some(wake),
        })
    }

    /// Hands up to `max` (at most 256) waiting messages to `each`, in order,
    /// without waiting, and returns how many there were. Each message goes
    /// back to librdkafka once `each` returns.
    pub(crate) fn read(&self, max: usize, mut each: impl FnMut(&Fetched<'_>)) -> usize {
        let mut raw: [*mut rd::rd_kafka_message_t; 256] = [ptr::null_mut(); 256];
        let max = max.min(raw.len());
        // SAFETY: the queue is live and `raw` has room for `max` pointers.
        let count = unsafe {
            rd::rd_kafka_consume_batch_queue(self.queue.as_ptr(), 0, raw.as_mut_ptr(), max)
        };
        let count = usize::try_from(count).unwrap_or(0);
        for &message in &raw[..count] {
            if let Some(message) = NonNull::new(message) {
                each(&Fetched {
                    message,
                    _queue: PhantomData,
                });
            }
        }
        count
    }
}

impl Drop for PartitionQueue {
    fn drop(&mut self) {
        // SAFETY: disables the callback before its closure is freed, then
        // releases the handle (the partition's messages stay routed here).
        unsafe {
            rd::rd_kafka_queue_cb_event_enable(self.queue.as_ptr(), None, ptr::null_mut());
            rd::rd_kafka_queue_destroy(self.queue.as_ptr());
        }
        drop(self.wake.take());
    }
}

unsafe extern "C" fn nonempty(_: *mut rd::rd_kafka_t, opaque: *mut c_void) {
    // SAFETY: `opaque` is the `Box<Wake>` of a queue whose callback is enabled.
    let wake = unsafe { &*(opaque as *const Wake) };
    wake();
}

/// A fetched message, borrowed from librdkafka until dropped.
pub(crate) struct Fetched<'q> {
    message: NonNull<rd::rd_kafka_message_t>,
    _queue: PhantomData<&'q PartitionQueue>,
}

impl Fetched<'_> {
    fn raw(&self) -> &rd::rd_kafka_message_t {
        // SAFETY: valid until `rd_kafka_message_destroy` in `drop`.
        unsafe { self.message.as_ref() }
    }

    /// The consumer error this message reports instead of data, if any.
    pub(crate) fn error(&self) -> Option<RDKafkaErrorCode> {
        let err = self.raw().err;
        (err != rd::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_NO_ERROR).then(|| err.into())
    }

    pub(crate) fn offset(&self) -> i64 {
        self.raw().offset
    }

    pub(crate) fn payload(&self) -> Option<&[u8]> {
        let raw = self.raw();
        // SAFETY: librdkafka owns `len` bytes at `payload` for the message's life.
        (!raw.payload.is_null())
            .then(|| unsafe { std::slice::from_raw_parts(raw.payload as *const u8, raw.len) })
    }

    pub(crate) fn key(&self) -> Option<&[u8]> {
        let raw = self.raw();
        // SAFETY: as for the payload.
        (!raw.key.is_null())
            .then(|| unsafe { std::slice::from_raw_parts(raw.key as *const u8, raw.key_len) })
    }

    /// The message's timestamp in milliseconds, if it has one.
    pub(crate) fn timestamp_ms(&self) -> Option<i64> {
        let mut kind = rd::rd_kafka_timestamp_type_t::RD_KAFKA_TIMESTAMP_NOT_AVAILABLE;
        // SAFETY: a live message and a place for the type.
        let ms = unsafe { rd::rd_kafka_message_timestamp(self.message.as_ptr(), &mut kind) };
        (kind != rd::rd_kafka_timestamp_type_t::RD_KAFKA_TIMESTAMP_NOT_AVAILABLE && ms >= 0)
            .then_some(ms)
    }

    /// Calls `each` with every header's name and value, in order.
    pub(crate) fn headers(&self, mut each: impl FnMut(&str, Option<&[u8]>)) {
        match self.serialized_headers() {
            Some(Serialized::Absent) => {}
            Some(Serialized::Wire(wire)) if for_each_header(wire, &mut each).is_some() => {}
            _ => self.parsed_headers(each),
        }
    }

    /// The message's headers as they came from the broker, read from the
    /// message without asking librdkafka to parse them: its parser builds
    /// a buffer and a header list on the heap for every message, even one
    /// without headers, which costs the poller a quarter of its time.
    ///
    /// `None` when the layout of the linked librdkafka's messages is not
    /// the one this reads, or the message's fields do not hold together
    /// (headers parsed already, or not right after the value or key); the
    /// caller then asks librdkafka.
    fn serialized_headers(&self) -> Option<Serialized<'_>> {
        if *HEADER_PATH != HeaderPath::Direct {
            return None;
        }
        // SAFETY: with `HeaderPath::Direct`, the message is the first field
        // of an `rd_kafka_msg_t` whose start `MsgStart` mirrors (checked at
        // compile time, for the linked release); a fetched message's is
        // embedded in its operation, so the whole prefix is in bounds and
        // initialised, and librdkafka does not write it while the message
        // is handed out.
        let msg = unsafe { &*self.message.as_ptr().cast::<MsgStart>() };
        // SAFETY: `msg` is the start of the live message `self` holds.
        unsafe { msg.serialized_headers() }
    }

    /// The headers by librdkafka's own parser.
    fn parsed_headers(&self, mut each: impl FnMut(&str, Option<&[u8]>)) {
        let mut headers: *mut rd::rd_kafka_headers_t = ptr::null_mut();
        // SAFETY: a live message; the headers belong to it.
        let err = unsafe { rd::rd_kafka_message_headers(self.message.as_ptr(), &mut headers) };
        if err != rd::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_NO_ERROR || headers.is_null() {
            return;
        }
        for index in 0.. {
            let mut name: *const std::ffi::c_char = ptr::null();
            let mut value: *const c_void = ptr::null();
            let mut size = 0usize;
            // SAFETY: `headers` is live; out-of-range indexes return an error.
            let err = unsafe {
                rd::rd_kafka_header_get_all(headers, index, &mut name, &mut value, &mut size)
            };
            if err != rd::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_NO_ERROR {
                break;
            }
            // SAFETY: librdkafka hands out NUL-terminated names, owned by
            // the message's header list.
            let name = unsafe { CStr::from_ptr(name) }.to_string_lossy();
            // SAFETY: and `size` bytes of value, or null for a null value.
            let value = (!value.is_null())
                .then(|| unsafe { std::slice::from_raw_parts(value as *const u8, size) });
            each(&name, value);
        }
    }
}

impl Drop for Fetched<'_> {
    fn drop(&mut self) {
        // SAFETY: each message from `rd_kafka_consume_batch_queue` is
        // destroyed exactly once, here.
        unsafe { rd::rd_kafka_message_destroy(self.message.as_ptr()) }
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use rdkafka::ClientConfig;
    use rdkafka::Message;
    use rdkafka::message::{Header, Headers as _, OwnedHeaders};
    use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};
    use rdkafka::{Offset, TopicPartitionList};

    use super::*;
    use crate::EmbeddedBroker;

    type Headers = Vec<(String, Option<Vec<u8>>)>;

    /// Headers of every kind: text, empty, null, binary, a name beyond ASCII.
    const HEADERS: [(&str, Option<&[u8]>); 5] = [
        ("traceparent", Some(b"00-4bf9-01")),
        ("empty", Some(b"")),
        ("null", None),
        ("binary", Some(&[0, 0xff, 0x80])),
        ("naïve", Some(b"utf-8 name")),
    ];

    fn collect(each: impl FnOnce(&mut dyn FnMut(&str, Option<&[u8]>))) -> Headers {
        let mut all = Vec::new();
        each(&mut |name, value| all.push((name.to_owned(), value.map(<[u8]>::to_vec))));
        all
    }

    /// A record to send, and whether its headers can be read directly.
    #[derive(Clone, Copy)]
    struct Case {
        payload: Option<&'static [u8]>,
        key: Option<&'static [u8]>,
        headers: bool,
        /// A value or key locates the headers.
        direct: bool,
    }

    /// Every kind of record a topic holds, with and without headers, plain
    /// and lz4-compressed: the headers read from the fetched message are
    /// those of librdkafka's parser and of rdkafka's own reading of the same
    /// record, and read directly whenever a value or key locates them.
    #[test]
    fn headers_read_directly_match_librdkafkas_parse() {
        let broker = EmbeddedBroker::with_topics([("headers", 1)]).unwrap();
        let mut with = OwnedHeaders::new();
        for (key, value) in HEADERS {
            with = with.insert(Header { key, value });
        }
        let case =
            |payload: Option<&'static [u8]>, key: Option<&'static [u8]>, headers, direct| Case {
                payload,
                key,
                headers,
                direct,
            };
        let cases = [
            case(Some(b"plain"), None, false, true),
            case(Some(b"with headers"), Some(b"k"), true, true),
            case(None, Some(b"tombstone"), true, true),
            case(Some(b""), Some(b"empty value"), true, true),
            case(Some(b""), None, true, false),
            case(None, None, true, false),
        ];
        for compression in ["none", "lz4"] {
            let producer: ThreadedProducer<DefaultProducerContext> = ClientConfig::new()
                .set("bootstrap.servers", broker.bootstrap_servers())
                .set("compression.type", compression)
                .set("linger.ms", "50")
                .create()
                .unwrap();
            for Case {
                payload,
                key,
                headers,
                ..
            } in cases
            {
                let mut record = BaseRecord::<[u8], [u8]>::to("headers");
                if let Some(payload) = payload {
                    record = record.payload(payload);
                }
                if let Some(key) = key {
                    record = record.key(key);
                }
                if headers {
                    record = record.headers(with.clone());
                }
                producer.send(record).map_err(|(e, _)| e).unwrap();
            }
            producer.flush(Duration::from_secs(10)).unwrap();
        }

        let consumer: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", broker.bootstrap_servers())
            .set("group.id", "headers")
            .set("enable.auto.commit", "false")
            .create()
            .unwrap();
        let queue = PartitionQueue::split(&consumer, "headers", 0, || {}).unwrap();
        let mut assignment = TopicPartitionList::new();
        assignment
            .add_partition_offset("headers", 0, Offset::Beginning)
            .unwrap();
        consumer.assign(&assignment).unwrap();

        let expected: Headers = collect(|each| HEADERS.iter().for_each(|&(n, v)| each(n, v)));
        let total = 2 * cases.len();
        let mut direct_reads = Vec::new();
        let mut seen = 0;
        let deadline = Instant::now() + Duration::from_secs(30);
        while seen < total {
            assert!(Instant::now() < deadline, "read {seen} of {total} records");
            let _ = consumer.poll(Duration::ZERO);
            queue.read(256, |message| {
                assert_eq!(message.error(), None);
                let Case {
                    headers, direct, ..
                } = cases[seen % cases.len()];
                let read = collect(|each| message.headers(each));
                let wire = message.serialized_headers();
                assert_eq!(
                    matches!(wire, Some(Serialized::Wire(_))),
                    direct,
                    "record {seen} read directly"
                );
                let parsed = collect(|each| message.parsed_headers(each));
                assert_eq!(read, parsed, "record {seen}");
                assert_eq!(read, if headers { expected.clone() } else { vec![] });
                direct_reads.push((message.offset(), read));
                seen += 1;
            });
            std::thread::sleep(Duration::from_millis(20));
        }

        // The same records through rdkafka's consumer and its `Headers`.
        let plain: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", broker.bootstrap_servers())
            .set("group.id", "headers-rdkafka")
            .set("enable.auto.commit", "false")
            .create()
            .unwrap();
        plain.assign(&assignment).unwrap();
        let mut by_rdkafka = Vec::new();
        while by_rdkafka.len() < total {
            assert!(
                Instant::now() < deadline,
                "rdkafka read {}",
                by_rdkafka.len()
            );
            let Some(message) = plain.poll(Duration::from_millis(100)) else {
                continue;
            };
            let message = message.unwrap();
            let headers = collect(|each| {
                for header in message.headers().iter().flat_map(|h| h.iter()) {
                    each(header.key, header.value);
                }
            });
            by_rdkafka.push((message.offset(), headers));
        }
        assert_eq!(direct_reads, by_rdkafka);
    }
}
