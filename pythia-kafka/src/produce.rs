//! Enqueueing records on the producer by topic handle.
//!
//! rdkafka's `BaseProducer::send` names a record's topic by its string: every
//! call allocates a C copy of the name, and librdkafka then looks the topic up
//! by name under the client's lock. Here each topic's librdkafka handle is made
//! once and kept for the producer's life, and a record is enqueued with
//! `rd_kafka_producev` on that handle. Delivery reports still reach the
//! producer's context as rdkafka's own sends do: the record's opaque is the
//! boxed receipt that [`ProducerContext::delivery`] gets back.

use std::collections::HashMap;
use std::ffi::{CString, c_void};
use std::ptr::NonNull;
use std::sync::{Arc, RwLock};

use pythia_core::{ConfigError, Record, SinkError};
use rdkafka::producer::{Producer as _, ProducerContext, ThreadedProducer};
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::util::IntoOpaque;
use rdkafka_sys as rdsys;
use rdkafka_sys::rd_kafka_vtype_t::*;

use crate::config::KafkaConfig;

/// `RD_KAFKA_PARTITION_UA`: the partitioner chooses.
const PARTITION_UNASSIGNED: i32 = -1;

/// One topic's librdkafka handle, released when dropped.
pub(crate) struct Topic {
    name: Arc<str>,
    handle: NonNull<rdsys::rd_kafka_topic_t>,
}

// SAFETY: librdkafka's topic handles are reference counted and may be used and
// released from any thread.
unsafe impl Send for Topic {}
// SAFETY: as above; `rd_kafka_producev` takes the handle from any thread.
unsafe impl Sync for Topic {}

impl Topic {
    /// The handle of `name` on `producer`, or why librdkafka refused it (an
    /// empty name, or one with a NUL byte or of more than 512 bytes).
    fn new<C: ProducerContext + 'static>(
        producer: &ThreadedProducer<C>,
        name: &str,
    ) -> Result<Self, String> {
        let c_name =
            CString::new(name).map_err(|_| "the topic name holds a NUL byte".to_owned())?;
        // SAFETY: the client pointer is valid while `producer` lives; the name
        // is copied by librdkafka, and a null configuration takes the defaults.
        let handle = unsafe {
            rdsys::rd_kafka_topic_new(
                producer.client().native_ptr(),
                c_name.as_ptr(),
                std::ptr::null_mut(),
            )
        };
        let handle = NonNull::new(handle).ok_or_else(|| {
            // SAFETY: reads this thread's last librdkafka error.
            let code: RDKafkaErrorCode = unsafe { rdsys::rd_kafka_last_error() }.into();
            format!("librdkafka refused the topic name: {code}")
        })?;
        Ok(Self {
            name: Arc::from(name),
            handle,
        })
    }

    pub(crate) fn name(&self) -> &str {
        &self.name
    }
}

impl Drop for Topic {
    fn drop(&mut self) {
        // SAFETY: the handle came from `rd_kafka_topic_new` and is released
        // once; records still queued hold their own references to the topic.
        unsafe { rdsys::rd_kafka_topic_destroy(self.handle.as_ptr()) };
    }
}

/// Where a producer's records go, with each topic's handle: the output topic
/// and the sinks' topics made at start, any other topic on its first record.
pub(crate) struct Topics {
    /// `kafka.output_topic`: records that name neither a topic nor a sink.
    default: Option<Topic>,
    /// `kafka.sinks`: records that name a sink.
    sinks: HashMap<String, Topic>,
    /// Topics that records name themselves.
    named: RwLock<HashMap<Arc<str>, Arc<Topic>>>,
}

/// A topic handle, borrowed from the configured ones or shared from those made
/// later.
pub(crate) enum TopicRef<'a> {
    Fixed(&'a Topic),
    Named(Arc<Topic>),
}

impl std::ops::Deref for TopicRef<'_> {
    type Target = Topic;

    fn deref(&self) -> &Topic {
        match self {
            Self::Fixed(topic) => topic,
            Self::Named(topic) => topic,
        }
    }
}

impl Topics {
    /// Handles of the configured topics, made now; a topic librdkafka refuses
    /// is a configuration error of its key.
    pub(crate) fn new<C: ProducerContext + 'static>(
        producer: &ThreadedProducer<C>,
        config: &KafkaConfig,
    ) -> Result<Self, ConfigError> {
        let handle = |key: String, name: &str| {
            Topic::new(producer, name).map_err(|reason| {
                ConfigError::invalid(
                    key,
                    format!("{name:?} is not a usable topic name: {reason}"),
                )
            })
        };
        let default = config
            .output_topic
            .as_deref()
            .map(|name| handle("kafka.output_topic".to_owned(), name))
            .transpose()?;
        let sinks = config
            .sinks
            .iter()
            .map(|(sink, name)| Ok((sink.clone(), handle(format!("kafka.sinks.{sink}"), name)?)))
            .collect::<Result<_, ConfigError>>()?;
        Ok(Self {
            default,
            sinks,
            named: RwLock::new(HashMap::new()),
        })
    }

    /// The topic of `record`: its own, else its sink's, else the output topic.
    pub(crate) fn route<C: ProducerContext + 'static>(
        &self,
        producer: &ThreadedProducer<C>,
        record: &Record,
    ) -> Result<TopicRef<'_>, SinkError> {
        if let Some(name) = &record.topic {
            return self
                .named(producer, name)
                .map_err(|reason| SinkError::Delivery {
                    topic: name.to_string(),
                    reason,
                });
        }
        match record.sink {
            Some(sink) => self
                .sinks
                .get(sink)
                .map(TopicRef::Fixed)
                .ok_or_else(|| SinkError::UnknownSink { sink: sink.into() }),
            None => self
                .default
                .as_ref()
                .map(TopicRef::Fixed)
                .ok_or(SinkError::NoTopic),
        }
    }

    /// The handle of a topic a record names, made on its first use.
    fn named<C: ProducerContext + 'static>(
        &self,
        producer: &ThreadedProducer<C>,
        name: &str,
    ) -> Result<TopicRef<'_>, String> {
        let named = self.named.read().unwrap_or_else(|p| p.into_inner());
        if let Some(topic) = named.get(name) {
            return Ok(TopicRef::Named(topic.clone()));
        }
        drop(named);
        let mut named = self.named.write().unwrap_or_else(|p| p.into_inner());
        let topic = match named.get(name) {
            Some(topic) => topic.clone(),
            None => {
                let topic = Arc::new(Topic::new(producer, name)?);
                named.insert(topic.name.clone(), topic.clone());
                topic
            }
        };
        Ok(TopicRef::Named(topic))
    }

    /// The output topic's name and each sink's, for display.
    pub(crate) fn describe(&self) -> (Option<&str>, Vec<(&str, &str)>) {
        let mut sinks: Vec<_> = self
            .sinks
            .iter()
            .map(|(s, t)| (s.as_str(), t.name()))
            .collect();
        sinks.sort_unstable();
        (self.default.as_ref().map(Topic::name), sinks)
    }
}

/// A librdkafka header list, released when dropped unless a record took it.
pub(crate) struct Headers(NonNull<rdsys::rd_kafka_headers_t>);

impl Headers {
    /// A list of `headers`, names and values copied.
    pub(crate) fn new<'h>(headers: impl Iterator<Item = (&'h str, Option<&'h [u8]>)>) -> Self {
        // SAFETY: a fresh list, sized for the headers; it grows if need be.
        let list = unsafe { rdsys::rd_kafka_headers_new(headers.size_hint().0) };
        let list = Self(NonNull::new(list).expect("rd_kafka_headers_new returned null"));
        for (name, value) in headers {
            let (value, size) = value.map_or((std::ptr::null(), 0), |v| (v.as_ptr(), v.len()));
            // SAFETY: name and value are copied; a null value with size 0 is a
            // header without a value. Adding fails only on a read-only list.
            unsafe {
                rdsys::rd_kafka_header_add(
                    list.0.as_ptr(),
                    name.as_ptr().cast(),
                    name.len() as isize,
                    value.cast(),
                    size as isize,
                );
            }
        }
        list
    }
}

impl Drop for Headers {
    fn drop(&mut self) {
        // SAFETY: a list this value still owns, released once.
        unsafe { rdsys::rd_kafka_headers_destroy(self.0.as_ptr()) };
    }
}

/// What is enqueued: the payload and key are copied by librdkafka, the
/// headers and the opaque are handed over.
pub(crate) struct Enqueue<'a> {
    pub(crate) payload: Option<&'a [u8]>,
    pub(crate) key: Option<&'a [u8]>,
    pub(crate) headers: Option<Headers>,
}

/// Enqueues a record on `topic` with `opaque` as its delivery opaque. On
/// refusal the opaque comes back with librdkafka's reason; the headers are
/// released either way once librdkafka is done with them.
pub(crate) fn enqueue<C, O>(
    producer: &ThreadedProducer<C>,
    topic: &Topic,
    record: Enqueue<'_>,
    opaque: O,
) -> Result<(), (RDKafkaErrorCode, O)>
where
    C: ProducerContext<DeliveryOpaque = O> + 'static,
    O: IntoOpaque,
{
    fn bytes(bytes: Option<&[u8]>) -> (*mut c_void, usize) {
        bytes.map_or((std::ptr::null_mut(), 0), |b| {
            (b.as_ptr().cast_mut().cast(), b.len())
        })
    }
    let (payload, payload_len) = bytes(record.payload);
    let (key, key_len) = bytes(record.key);
    let headers = record
        .headers
        .as_ref()
        .map_or(std::ptr::null_mut(), |h| h.0.as_ptr());
    let opaque = opaque.into_ptr();
    // SAFETY: the client and topic handles are valid while `producer` and
    // `topic` live. With `RD_KAFKA_MSG_F_COPY` librdkafka copies the payload
    // and key before returning. The argument types match what
    // `rd_kafka_producev` reads for each tag, as in rdkafka's own `send`.
    let err = unsafe {
        rdsys::rd_kafka_producev(
            producer.client().native_ptr(),
            RD_KAFKA_VTYPE_RKT,
            topic.handle.as_ptr(),
            RD_KAFKA_VTYPE_PARTITION,
            PARTITION_UNASSIGNED,
            RD_KAFKA_VTYPE_MSGFLAGS,
            rdsys::RD_KAFKA_MSG_F_COPY,
            RD_KAFKA_VTYPE_VALUE,
            payload,
            payload_len,
            RD_KAFKA_VTYPE_KEY,
            key,
            key_len,
            RD_KAFKA_VTYPE_OPAQUE,
            opaque,
            RD_KAFKA_VTYPE_HEADERS,
            headers,
            RD_KAFKA_VTYPE_END,
        )
    };
    if err == rdsys::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_NO_ERROR {
        // librdkafka owns the headers now and frees them with the record.
        std::mem::forget(record.headers);
        Ok(())
    } else {
        // SAFETY: a refused record's opaque was not kept by librdkafka; it is
        // the pointer made above, taken back once.
        Err((err.into(), unsafe { O::from_ptr(opaque) }))
    }
}
