//! One partition's own message queue, read many messages at a time.
//!
//! librdkafka can route a partition's fetched messages to a queue of its own
//! instead of the consumer's. Reading it with `rd_kafka_consume_batch_queue`
//! takes up to a whole batch in one call and, unlike the event-per-message
//! path of `BaseConsumer::poll`, allocates nothing per message on the Rust
//! side. This module holds the only `unsafe` code of the source: the queue
//! handle and the view of a fetched message.
//!
//! # Headers read from the record
//!
//! librdkafka's header parser (`rd_kafka_message_headers`) allocates a list
//! for every message, even one without headers. Instead, a fetched message's
//! headers are read from the record as fetched, through [`MsgStart`], a
//! mirror of the start of librdkafka's *private* `rd_kafka_msg_t`
//! (`src/rdkafka_msg.h`). A private struct may change in any release, so the
//! direct read is used only when all of these hold, decided once per process
//! and logged at `info`:
//!
//! - [`DIRECT_HEADERS`] is `true` (the switch that turns it off);
//! - the target is 64-bit, where the compile-time assertions below check the
//!   mirror's size and offsets against numbers derived from the C headers;
//! - the librdkafka linked at run time is exactly [`LAYOUT_VERSION`] (2.12.1),
//!   the release those numbers were derived from: another one (an upgrade of
//!   rdkafka-sys, or its `dynamic-linking` feature) gets the parser.
//!
//! Otherwise, and for any message whose fields do not hold together, the
//! headers come from librdkafka's parser, as they would through rdkafka.

use std::ffi::{CStr, CString, c_int, c_void};
use std::marker::PhantomData;
use std::ptr::{self, NonNull};
use std::sync::LazyLock;

use rdkafka::bindings as rd;
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext};
use rdkafka::types::RDKafkaErrorCode;

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

/// A fetched message's headers before parsing.
enum Serialized<'m> {
    /// The record has no header section (message formats before v2).
    Absent,
    /// A v2 record's header section: a count, then each header's name and
    /// value, lengths as zig-zag varints.
    Wire(&'m [u8]),
}

/// Turns the direct read of fetched headers (see the module docs) on or off:
/// with `false`, every header comes from librdkafka's parser.
pub(crate) const DIRECT_HEADERS: bool = true;

/// The librdkafka release whose `rd_kafka_msg_t` (`src/rdkafka_msg.h`)
/// `MsgStart` mirrors, as `rd_kafka_version()` reports it (`RD_KAFKA_VERSION`
/// of its `src/rdkafka.h`: 2.12.1).
const LAYOUT_VERSION: i32 = 0x020c_01ff;

/// Whether the compile-time assertions on `MsgStart` apply to this target.
const LAYOUT_CHECKED_TARGET: bool = cfg!(target_pointer_width = "64");

/// `RD_KAFKA_MSG_F_PRODUCER` of librdkafka 2.12.1's `src/rdkafka_msg.h`
/// (line 107): set on messages made by a producer, whose union holds the
/// producer's fields instead of the unparsed headers. (`0x10000` there is
/// `RD_KAFKA_MSG_F_FREE_RKM`, "msg_t is allocated", which says nothing
/// about the union.)
const RD_KAFKA_MSG_F_PRODUCER: c_int = 0x4_0000;

/// How fetched messages' headers are read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum HeaderPath {
    /// From the record, through `MsgStart`.
    Direct,
    /// By librdkafka's parser, for the reason given.
    Parsed(&'static str),
}

/// The policy of the module docs: the direct read only when switched on,
/// on a target the layout is checked for, with the release it was derived
/// from linked.
fn header_path(switched_on: bool, checked_target: bool, linked: i32) -> HeaderPath {
    if !switched_on {
        HeaderPath::Parsed("the direct read is switched off (queue::DIRECT_HEADERS)")
    } else if !checked_target {
        HeaderPath::Parsed("the message layout is checked on 64-bit targets only")
    } else if linked != LAYOUT_VERSION {
        HeaderPath::Parsed("the linked librdkafka is not 2.12.1, whose message layout is verified")
    } else {
        HeaderPath::Direct
    }
}

/// This process's [`HeaderPath`], decided and logged once.
static HEADER_PATH: LazyLock<HeaderPath> = LazyLock::new(|| {
    let (linked, release) = rdkafka::util::get_rdkafka_version();
    let path = header_path(DIRECT_HEADERS, LAYOUT_CHECKED_TARGET, linked);
    match path {
        HeaderPath::Direct => tracing::info!(
            librdkafka = %release,
            "fetched message headers are read from the record directly"
        ),
        HeaderPath::Parsed(reason) => tracing::info!(
            librdkafka = %release,
            "fetched message headers are parsed by librdkafka: {reason}"
        ),
    }
    path
});

/// The start of librdkafka's internal `rd_kafka_msg_t`, up to a consumed
/// message's unparsed headers (`rkm_u.consumer.binhdrs`).
#[repr(C)]
struct MsgStart {
    rkmessage: rd::rd_kafka_message_t,
    link: [*mut c_void; 2],
    flags: c_int,
    timestamp_type: c_int,
    timestamp: i64,
    /// The parsed list, once someone asked for it.
    headers: *mut rd::rd_kafka_headers_t,
    status: c_int,
    broker_id: i32,
    /// `rd_kafkap_bytes_t`: the length, then the data pointer.
    binhdrs_len: i32,
    binhdrs_data: *const u8,
}

// `MsgStart` against librdkafka 2.12.1 (rdkafka-sys 4.10.0+2.12.1), on a
// 64-bit (LP64) target: pointers and `size_t` are 8 bytes, `int`, `int32_t`
// and C enums 4, `int64_t` 8, each aligned to its size.
//
// - `rd_kafka_message_t`, `src/rdkafka.h` lines 1466-1496: `err` (enum) at
//   0, `rkt` at 8 (after 4 bytes of padding), `partition` at 16, `payload`
//   at 24, `len` 32, `key` 40, `key_len` 48, `offset` 56, `_private` 64: 72
//   bytes. It is the first field of `rd_kafka_msg_t`.
// - `rd_kafka_msg_t`, `src/rdkafka_msg.h` lines 89-159: `rkm_link` is a
//   `TAILQ_ENTRY`, two pointers (`src/queue.h` lines 410-415), at 72;
//   `rkm_flags` (int) 88; `rkm_tstype` (enum) 92; `rkm_timestamp` (int64_t)
//   96; `rkm_headers` (pointer) 104; `rkm_status` (enum) 112;
//   `rkm_broker_id` (int32_t) 116; then the union `rkm_u` at 120, already
//   8-aligned (its `rd_ts_t` members are `int64_t`, `src/rdtypes.h` line 44).
// - `rkm_u.consumer.binhdrs` is an `rd_kafkap_bytes_t`, `src/rdkafka_proto.h`
//   lines 387-393: `int32_t len` at 120, then `const void *data` at 128.
//
// A C program built against those headers and that release's generated
// `config.h` printed the same offsets (and `sizeof(rd_kafka_msg_t)` 176, of
// which `MsgStart` mirrors the first 136 bytes).
#[cfg(target_pointer_width = "64")]
const _: () = {
    use std::mem::{offset_of, size_of};

    type Message = rd::rd_kafka_message_t;
    assert!(size_of::<Message>() == 72);
    assert!(offset_of!(Message, err) == 0);
    assert!(offset_of!(Message, rkt) == 8);
    assert!(offset_of!(Message, partition) == 16);
    assert!(offset_of!(Message, payload) == 24);
    assert!(offset_of!(Message, len) == 32);
    assert!(offset_of!(Message, key) == 40);
    assert!(offset_of!(Message, key_len) == 48);
    assert!(offset_of!(Message, offset) == 56);
    assert!(offset_of!(Message, _private) == 64);

    assert!(offset_of!(MsgStart, rkmessage) == 0);
    assert!(offset_of!(MsgStart, link) == 72);
    assert!(offset_of!(MsgStart, flags) == 88);
    assert!(offset_of!(MsgStart, timestamp_type) == 92);
    assert!(offset_of!(MsgStart, timestamp) == 96);
    assert!(offset_of!(MsgStart, headers) == 104);
    assert!(offset_of!(MsgStart, status) == 112);
    assert!(offset_of!(MsgStart, broker_id) == 116);
    assert!(offset_of!(MsgStart, binhdrs_len) == 120);
    assert!(offset_of!(MsgStart, binhdrs_data) == 128);
    assert!(size_of::<MsgStart>() == 136);
};

impl MsgStart {
    /// The consumed message's unparsed headers, or `None` when its fields
    /// do not hold together (a producer's message, headers parsed already,
    /// or not right after the value or key).
    ///
    /// # Safety
    ///
    /// `self` is the start of a live message: when its fields hold
    /// together, `binhdrs_data` points to `binhdrs_len` readable bytes that
    /// outlive the borrow of `self`.
    unsafe fn serialized_headers(&self) -> Option<Serialized<'_>> {
        if !self.headers.is_null() || self.flags & RD_KAFKA_MSG_F_PRODUCER != 0 {
            return None;
        }
        let len = usize::try_from(self.binhdrs_len).ok()?;
        if len == 0 {
            return Some(Serialized::Absent);
        }
        // In a v2 record the headers follow the value, and an empty or null
        // value (one byte of length, 0 or -1) follows the key. A pointer
        // anywhere else means the fields are not where this reads them;
        // without a value or key to check against, librdkafka is asked.
        let raw = &self.rkmessage;
        let expected = if !raw.payload.is_null() && raw.len > 0 {
            raw.payload.cast::<u8>().wrapping_add(raw.len)
        } else if !raw.key.is_null() && raw.key_len > 0 {
            raw.key.cast::<u8>().wrapping_add(raw.key_len + 1)
        } else {
            return None;
        };
        if self.binhdrs_data != expected.cast_const() {
            return None;
        }
        // SAFETY: by the caller's promise: for a fetched message librdkafka
        // keeps `len` bytes of serialized headers at `binhdrs_data`, in the
        // fetched buffer the message holds.
        Some(Serialized::Wire(unsafe {
            std::slice::from_raw_parts(self.binhdrs_data, len)
        }))
    }
}

/// More headers than librdkafka's parser accepts in one record.
const MAX_HEADERS: i64 = 100_000;

/// Calls `each` with every header of a v2 header section; `None`, before
/// calling `each`, if the section is malformed.
fn for_each_header(wire: &[u8], each: &mut impl FnMut(&str, Option<&[u8]>)) -> Option<()> {
    let mut reader = Wire(wire);
    let count = reader.varint()?;
    if count <= 0 {
        return Some(());
    }
    if count > MAX_HEADERS {
        return None;
    }
    // Checked in full before the first call: a malformed section is left
    // to librdkafka's parser, which rejects it whole.
    let mut check = Wire(reader.0);
    for _ in 0..count {
        check.bytes()??;
        check.bytes()?;
    }
    for _ in 0..count {
        let name = reader.bytes()??;
        let value = reader.bytes()?;
        each(&String::from_utf8_lossy(name), value);
    }
    Some(())
}

/// A reader of Kafka's v2 record encoding.
struct Wire<'b>(&'b [u8]);

impl<'b> Wire<'b> {
    /// A zig-zag varint of at most 64 bits.
    fn varint(&mut self) -> Option<i64> {
        let mut value = 0u64;
        for shift in (0..64).step_by(7) {
            let (&byte, rest) = self.0.split_first()?;
            self.0 = rest;
            value |= u64::from(byte & 0x7f) << shift;
            if byte & 0x80 == 0 {
                return Some((value >> 1) as i64 ^ -((value & 1) as i64));
            }
        }
        None
    }

    /// Length-prefixed bytes: `Some(None)` for length -1 (null).
    fn bytes(&mut self) -> Option<Option<&'b [u8]>> {
        let len = self.varint()?;
        if len == -1 {
            return Some(None);
        }
        let len = usize::try_from(len).ok()?;
        if len > self.0.len() {
            return None;
        }
        let (bytes, rest) = self.0.split_at(len);
        self.0 = rest;
        Some(Some(bytes))
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

    #[test]
    fn the_linked_librdkafka_is_the_release_whose_messages_are_read_directly() {
        let (linked, release) = rdkafka::util::get_rdkafka_version();
        assert_eq!(
            linked, LAYOUT_VERSION,
            "librdkafka {release} ({linked:#x}) is linked: check `MsgStart` and its assertions against its src/rdkafka_msg.h and update LAYOUT_VERSION"
        );
        assert_eq!(*HEADER_PATH, HeaderPath::Direct);
    }

    #[test]
    fn the_direct_read_needs_the_switch_a_checked_target_and_the_exact_release() {
        let parsed = |path| matches!(path, HeaderPath::Parsed(_));
        // (switched on, checked target, linked release, direct)
        let table = [
            (true, true, LAYOUT_VERSION, true),
            (false, true, LAYOUT_VERSION, false),
            (true, false, LAYOUT_VERSION, false),
            (true, true, 0x020c_00ff, false), // 2.12.0
            (true, true, 0x020c_0200, false), // a 2.12.2 pre-release
            (true, true, 0x020d_00ff, false), // 2.13.0
        ];
        for (switched_on, checked_target, linked, direct) in table {
            let path = header_path(switched_on, checked_target, linked);
            assert_eq!(
                path == HeaderPath::Direct,
                direct,
                "{switched_on} {checked_target} {linked:#x}: {path:?}"
            );
            assert_eq!(parsed(path), !direct);
        }
    }

    /// A message start as librdkafka lays it out, over `record`: a value of
    /// `value_len` bytes followed by the header section.
    fn message_over(record: &[u8], value_len: usize, flags: c_int) -> MsgStart {
        MsgStart {
            rkmessage: rd::rd_kafka_message_t {
                err: rd::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_NO_ERROR,
                rkt: ptr::null_mut(),
                partition: 0,
                payload: record.as_ptr().cast_mut().cast(),
                len: value_len,
                key: ptr::null_mut(),
                key_len: 0,
                offset: 0,
                _private: ptr::null_mut(),
            },
            link: [ptr::null_mut(); 2],
            flags,
            timestamp_type: 0,
            timestamp: 0,
            headers: ptr::null_mut(),
            status: 0,
            broker_id: -1,
            binhdrs_len: i32::try_from(record.len() - value_len).unwrap(),
            binhdrs_data: record[value_len..].as_ptr(),
        }
    }

    /// The flags librdkafka 2.12.1 sets (`src/rdkafka_msg.h` lines 105-107):
    /// only a producer's message has its union read otherwise.
    #[test]
    fn only_a_producers_message_is_refused_by_its_flags() {
        const FREE_RKM: c_int = 0x1_0000;
        const ACCOUNT: c_int = 0x2_0000;
        const PRODUCER: c_int = 0x4_0000;
        // The value "v", then one header "a" = "xy".
        let record = [b'v', 2, 2, b'a', 4, b'x', b'y'];
        let read = |flags| {
            let msg = message_over(&record, 1, flags);
            // SAFETY: the message's pointers are into `record`, which
            // outlives it.
            match unsafe { msg.serialized_headers() } {
                Some(Serialized::Wire(wire)) => Some(wire.to_vec()),
                Some(Serialized::Absent) => Some(vec![]),
                None => None,
            }
        };
        assert_eq!(read(0), Some(record[1..].to_vec()), "fetched");
        // A message librdkafka allocated on its own (`rd_kafka_message_new`,
        // src/rdkafka_msg.c line 1300) is still a consumer's.
        assert_eq!(read(FREE_RKM), Some(record[1..].to_vec()), "allocated");
        // A producer's (src/rdkafka_msg.c lines 171-172), even without the others.
        assert_eq!(read(PRODUCER | FREE_RKM | ACCOUNT), None, "produced");
        assert_eq!(read(PRODUCER), None, "producer flag alone");
        assert_eq!(RD_KAFKA_MSG_F_PRODUCER, PRODUCER);
    }

    /// The flags of a message librdkafka made for a producer, read through
    /// `MsgStart` from its delivery report: the offset and the bit agree
    /// with the linked library.
    #[test]
    fn a_delivered_message_reads_as_a_producers() {
        use std::sync::Mutex;

        use rdkafka::ClientContext;
        use rdkafka::producer::{DeliveryResult, ProducerContext};

        #[derive(Default)]
        struct Flags(Mutex<Vec<c_int>>);
        impl ClientContext for Flags {}
        impl ProducerContext for Flags {
            type DeliveryOpaque = ();
            fn delivery(&self, result: &DeliveryResult<'_>, _: ()) {
                let message = match result {
                    Ok(message) | Err((_, message)) => message,
                };
                // SAFETY: a delivery report's message is a live
                // `rd_kafka_msg_t` of the linked release (the layout test
                // above), whose start `MsgStart` mirrors.
                let flags = unsafe { (*message.ptr().cast::<MsgStart>()).flags };
                self.0.lock().unwrap().push(flags);
            }
        }

        let broker = EmbeddedBroker::with_topics([("delivered", 1)]).unwrap();
        let producer: ThreadedProducer<Flags> = ClientConfig::new()
            .set("bootstrap.servers", broker.bootstrap_servers())
            .create_with_context(Flags::default())
            .unwrap();
        producer
            .send(BaseRecord::<[u8], [u8]>::to("delivered").payload(b"v"))
            .map_err(|(e, _)| e)
            .unwrap();
        producer.flush(Duration::from_secs(10)).unwrap();
        let flags = producer.context().0.lock().unwrap().clone();
        assert_eq!(flags.len(), 1);
        assert_ne!(flags[0] & RD_KAFKA_MSG_F_PRODUCER, 0, "{:#x}", flags[0]);
    }

    #[test]
    fn malformed_header_sections_are_left_to_librdkafka() {
        let read = |wire: &[u8]| {
            let mut all = Vec::new();
            let done = for_each_header(wire, &mut |name, value: Option<&[u8]>| {
                all.push((name.to_owned(), value.map(<[u8]>::to_vec)))
            });
            done.map(|()| all)
        };
        // Two headers: "a" = "xy", "b" = null.
        assert_eq!(
            read(&[4, 2, b'a', 4, b'x', b'y', 2, b'b', 1]),
            Some(vec![("a".into(), Some(b"xy".to_vec())), ("b".into(), None)])
        );
        assert_eq!(read(&[0]), Some(vec![]), "no headers");
        // A value longer than the section, a null name, a count with no
        // headers after it, a varint that never ends: nothing is reported.
        assert_eq!(read(&[2, 2, b'a', 10, b'x']), None);
        assert_eq!(read(&[2, 1, 0]), None);
        assert_eq!(read(&[4, 2, b'a', 0]), None);
        assert_eq!(read(&[0x80; 11]), None);
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
