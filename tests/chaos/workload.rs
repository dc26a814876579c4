//! The load of a chaos run: numbered messages from a plain rdkafka producer
//! (no Pythia code), and the worker processes that turn each message into one
//! output with the same payload.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use pythia_tests::WorkerSpec;
use rdkafka::ClientConfig;
use rdkafka::client::ClientContext;
use rdkafka::message::Message as _;
use rdkafka::producer::{BaseProducer, BaseRecord, DeliveryResult, Producer, ProducerContext};

use crate::broker::{INPUT, OUTPUT};
use crate::settings::{
    CLASSIC_SESSION_TIMEOUT, COMMIT_INTERVAL, DELAY_MS, PARTITIONS, Protocol, SHUTDOWN_TIMEOUT,
};

/// What the producer's delivery reports said.
#[derive(Debug, Clone)]
pub(crate) struct Produced {
    /// The high watermark of each partition of `in` once all were delivered:
    /// the offset after the last delivered message.
    pub(crate) highs: Vec<i64>,
    /// The offset in `in` of each id, from its delivery report.
    pub(crate) offsets: Vec<i64>,
}

/// Collects the delivery reports.
struct Deliveries {
    highs: Mutex<Vec<i64>>,
    offsets: Mutex<Vec<i64>>,
    failures: Mutex<Vec<String>>,
}

impl ClientContext for Deliveries {}

impl ProducerContext for Deliveries {
    type DeliveryOpaque = ();

    fn delivery(&self, result: &DeliveryResult<'_>, _: ()) {
        match result {
            Ok(m) => {
                let mut highs = self.highs.lock().unwrap_or_else(|p| p.into_inner());
                let high = &mut highs[m.partition() as usize];
                *high = (*high).max(m.offset() + 1);
                let id = (m.payload())
                    .and_then(|p| std::str::from_utf8(p).ok())
                    .and_then(|s| s.parse::<usize>().ok());
                let mut offsets = self.offsets.lock().unwrap_or_else(|p| p.into_inner());
                if let Some(slot) = id.and_then(|id| offsets.get_mut(id)) {
                    *slot = m.offset();
                }
            }
            Err((e, _)) => self
                .failures
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .push(e.to_string()),
        }
    }
}

/// Produces ids `0..n` to `in`: payload the id in decimal, id `i` to partition
/// `i % PARTITIONS`, spread evenly over `over` (as fast as possible when it is
/// zero). Returns once every message is delivered; a failed delivery fails the
/// test.
pub(crate) fn produce(bootstrap: &str, n: u64, over: Duration) -> Produced {
    let producer: BaseProducer<Deliveries> = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("linger.ms", "5")
        .create_with_context(Deliveries {
            highs: Mutex::new(vec![0; PARTITIONS as usize]),
            offsets: Mutex::new(vec![-1; n as usize]),
            failures: Mutex::default(),
        })
        .expect("producer");
    let start = Instant::now();
    for id in 0..n {
        let due = start + over.mul_f64(id as f64 / n as f64);
        while let Some(wait) = due.checked_duration_since(Instant::now()) {
            producer.poll(wait);
        }
        let payload = id.to_string();
        let mut record = BaseRecord::to(INPUT)
            .payload(&payload)
            .key(&payload)
            .partition((id % PARTITIONS as u64) as i32);
        loop {
            match producer.send(record) {
                Ok(()) => break,
                Err((_, back)) => {
                    record = back;
                    producer.poll(Duration::from_millis(10));
                }
            }
        }
        producer.poll(Duration::ZERO);
    }
    producer
        .flush(Duration::from_secs(120))
        .expect("every input delivered within 120 s");
    let context = producer.context();
    let failures = context.failures.lock().expect("failures").clone();
    assert!(
        failures.is_empty(),
        "{} inputs were not delivered: {:?}",
        failures.len(),
        &failures[..failures.len().min(5)]
    );
    let highs = context.highs.lock().expect("highs").clone();
    assert_eq!(
        highs.iter().sum::<i64>(),
        n as i64,
        "the delivery reports do not add up to the {n} messages produced"
    );
    let offsets = context.offsets.lock().expect("offsets").clone();
    Produced { highs, offsets }
}

/// How every instance of a run is started: the test worker in `group` on
/// `in`, one output per message to `out` (its payload), `DELAY_MS` of
/// simulated I/O per message, the given group protocol, and the commit
/// interval and shutdown timeout the targets are computed from.
pub(crate) fn workers<'a>(
    bootstrap: &'a str,
    group: &'a str,
    protocol: Protocol,
) -> WorkerSpec<'a> {
    let spec = WorkerSpec::new(bootstrap, group, INPUT)
        .env("PYTHIA_KAFKA__GROUP_PROTOCOL", protocol.as_str())
        .env("PYTHIA_KAFKA__OUTPUT_TOPIC", OUTPUT)
        .env(
            "PYTHIA_KAFKA__COMMIT_INTERVAL",
            format!("{}ms", COMMIT_INTERVAL.as_millis()),
        )
        .env(
            "PYTHIA_WORKER__SHUTDOWN_TIMEOUT",
            format!("{}ms", SHUTDOWN_TIMEOUT.as_millis()),
        )
        .env("TEST_OUTPUT", 1)
        .env("TEST_DELAY_MS", DELAY_MS);
    match protocol {
        Protocol::Consumer => spec,
        Protocol::Classic => spec
            .env("PYTHIA_KAFKA__ASSIGNMENT_STRATEGY", "cooperative-sticky")
            .env(
                "PYTHIA_KAFKA__SESSION_TIMEOUT",
                format!("{}ms", CLASSIC_SESSION_TIMEOUT.as_millis()),
            ),
    }
}
