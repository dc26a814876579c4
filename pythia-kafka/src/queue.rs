//! One partition's own message queue, read many messages at a time.
//!
//! librdkafka can route a partition's fetched messages to a queue of its own
//! instead of the consumer's. Reading it with `rd_kafka_consume_batch_queue`
//! takes up to a whole batch in one call and, unlike the event-per-message
//! path of `BaseConsumer::poll`, allocates nothing per message on the Rust
//! side. This module holds the only `unsafe` code of the source: the queue
//! handle and the view of a fetched message.

use std::ffi::{CStr, CString, c_void};
use std::marker::PhantomData;
use std::ptr::{self, NonNull};

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
            // SAFETY: librdkafka hands out NUL-terminated names and `size`
            // bytes of value (or null for a null value).
            let name = unsafe { CStr::from_ptr(name) }.to_string_lossy();
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
