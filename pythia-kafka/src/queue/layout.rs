//! The mirror of the start of librdkafka's private message struct, through
//! which a fetched message's headers are read without librdkafka's parser.
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

use std::ffi::{c_int, c_void};
use std::sync::LazyLock;

use rdkafka::bindings as rd;

use super::headers::Serialized;

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
pub(super) enum HeaderPath {
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
        HeaderPath::Parsed("the direct read is switched off (queue::layout::DIRECT_HEADERS)")
    } else if !checked_target {
        HeaderPath::Parsed("the message layout is checked on 64-bit targets only")
    } else if linked != LAYOUT_VERSION {
        HeaderPath::Parsed("the linked librdkafka is not 2.12.1, whose message layout is verified")
    } else {
        HeaderPath::Direct
    }
}

/// This process's [`HeaderPath`], decided and logged once.
pub(super) static HEADER_PATH: LazyLock<HeaderPath> = LazyLock::new(|| {
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
pub(super) struct MsgStart {
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
    pub(super) unsafe fn serialized_headers(&self) -> Option<Serialized<'_>> {
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

#[cfg(test)]
mod tests {
    use std::ptr;
    use std::time::Duration;

    use rdkafka::ClientConfig;
    use rdkafka::producer::{BaseRecord, Producer, ThreadedProducer};

    use super::*;
    use crate::EmbeddedBroker;

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
}
