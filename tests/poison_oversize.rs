//! Oversize poison: a dead letter larger than the producer's `message.max.bytes`
//! (1,000,000 by default), or one the broker refuses, goes out reduced — the
//! payload cut to a prefix or dropped, an oversize key cut, with headers saying
//! so — and its partition keeps flowing; a worker never exits over one. If even
//! the reduced dead letter is refused, `worker.dead_letter.on_failure` decides:
//! `stop` (the default) stops the worker once with an error naming the offset
//! and the way past it; `skip` counts the message and goes on. A dead-letter
//! topic a worker creates mirrors its input's partition count.
//!
//! Every test runs whole worker processes against a broker and counts from
//! outside: the worker's processed records, the dead-letter topic read by a
//! fresh consumer, and the group's committed offsets.

use std::collections::BTreeMap;
use std::time::Duration;

use pythia_tests::*;
use rdkafka::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use rdkafka_sys::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_MSG_SIZE_TOO_LARGE;

const MIB: usize = 1 << 20;
/// The Kafka ApiKey of Produce requests, whose next ones the embedded broker
/// can be told to refuse (from any client: the tests' own producers have
/// flushed by then, so only the worker's dead letters meet the refusals).
const PRODUCE: i16 = 0;
/// What a reduced dead letter keeps of the payload and of an oversize key.
const PAYLOAD_KEPT: usize = 4096;
const KEY_KEPT: usize = 1024;

/// One message to produce: partition, key, payload.
type Input = (i32, Vec<u8>, Vec<u8>);

/// Produces `records` in order, with a limit that lets 10 MB through (the
/// test producer's `message.max.bytes`), and waits until all are delivered.
fn produce_all(bootstrap: &str, topic: &str, records: &[Input]) {
    let producer: BaseProducer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("linger.ms", "2")
        .set("message.max.bytes", "10000000")
        .create()
        .expect("producer");
    for (partition, key, payload) in records {
        let mut record = BaseRecord::to(topic)
            .key(key.as_slice())
            .payload(payload.as_slice())
            .partition(*partition);
        loop {
            match producer.send(record) {
                Ok(()) => break,
                Err((error, back)) => {
                    assert!(
                        matches!(
                            error.rdkafka_error_code(),
                            Some(rdkafka::types::RDKafkaErrorCode::QueueFull)
                        ),
                        "producing to {topic}: {error}"
                    );
                    record = back;
                    producer.poll(Duration::from_millis(10));
                }
            }
        }
    }
    producer
        .flush(Duration::from_secs(60))
        .expect("test messages delivered");
}

/// `n` good JSON messages spread over `partitions`, ids from `first`.
fn goods(first: u64, n: u64, partitions: &[i32]) -> Vec<Input> {
    (first..first + n)
        .map(|id| {
            let partition = partitions[(id % partitions.len() as u64) as usize];
            (
                partition,
                format!("key-{id}").into_bytes(),
                format!(r#"{{"id":{id}}}"#).into_bytes(),
            )
        })
        .collect()
}

/// Waits until the group committed each partition's high watermark, failing
/// at once with the worker's log if the worker exits meanwhile.
fn wait_committed(worker: &mut Worker, bootstrap: &str, group: &str, topic: &str, partitions: i32) {
    let highs = high_watermarks(bootstrap, topic, partitions);
    wait_until(
        Duration::from_secs(120),
        &format!("{group} to commit {highs:?} on {topic}"),
        || {
            if let Some(status) = worker.try_status() {
                panic!(
                    "the worker exited ({status}) before committing everything; log:\n{}",
                    worker.log_text()
                );
            }
            committed(bootstrap, group, topic, partitions)
                .iter()
                .zip(&highs)
                .all(|(c, h)| *c == Some(*h))
        },
    );
}

/// The worker is still the one started: it never exited. Then it stops
/// cleanly on SIGTERM.
fn assert_never_exited_then_stop(worker: &mut Worker) {
    assert!(
        worker.try_status().is_none(),
        "the worker exited; log:\n{}",
        worker.log_text()
    );
    worker.terminate();
    let status = worker.wait(Duration::from_secs(30));
    assert!(status.success(), "{status}; log:\n{}", worker.log_text());
    let log = worker.log_text();
    assert!(
        !log.contains("worker stopped by a failed message"),
        "no message stopped the worker: {log}"
    );
}

/// What one poison message should become in the dead-letter topic.
struct Expected {
    what: &'static str,
    kind: &'static str,
    /// `pythia.dlq.truncated`, `None` for a whole dead letter.
    truncated: Option<&'static str>,
    key: Vec<u8>,
    payload: Vec<u8>,
}

#[test]
fn oversize_poison_is_dead_lettered_reduced_and_every_partition_reaches_its_end() {
    const TOPIC: &str = "oversize";
    const GROUP: &str = "oversize";
    const PARTITIONS: i32 = 8;
    let dir = scratch("oversize");
    let Some(broker) = selected_broker(TOPIC, PARTITIONS) else {
        return;
    };
    let dlq = format!("{TOPIC}.dlq");
    broker.create_topic(&dlq, PARTITIONS);
    let bootstrap = broker.bootstrap_servers();

    // One poison message per partition, so that each dead letter is known by
    // its original partition; partitions 0 and 6 hold only good ones.
    let pad = |n: usize| {
        let mut v = b"not json ".to_vec();
        v.resize(n, b'x');
        v
    };
    let valid_2mb = {
        let mut v = br#"{"id":1000000,"pad":""#.to_vec();
        v.resize(2 * MIB, b'y');
        v.extend_from_slice(br#""}"#);
        v
    };
    let mut oversize_key = b"poison-key-".to_vec();
    oversize_key.resize(2 * MIB, b'k');
    // Under the test producer's message.max.bytes of 10,000,000 with the
    // key and the record's framing.
    let ten_mb = pad(10_000_000 - 1024);
    let poison: BTreeMap<i32, (Vec<u8>, Expected)> = [
        (
            1,
            b"poison-1mb".to_vec(),
            Expected {
                what: "1 MiB of invalid JSON (at worker.max_message_bytes, so decoded)",
                kind: "decode",
                truncated: Some("payload"),
                key: b"poison-1mb".to_vec(),
                payload: pad(MIB),
            },
        ),
        (
            2,
            b"poison-2mb".to_vec(),
            Expected {
                what: "2 MiB of invalid JSON",
                kind: "too_large",
                truncated: Some("payload"),
                key: b"poison-2mb".to_vec(),
                payload: pad(2 * MIB),
            },
        ),
        (
            3,
            oversize_key.clone(),
            Expected {
                what: "a 2 MiB key",
                kind: "decode",
                truncated: Some("key"),
                key: oversize_key,
                payload: br#"{"id":"#.to_vec(),
            },
        ),
        (
            4,
            b"valid-2mb".to_vec(),
            Expected {
                what: "a valid 2 MiB message over worker.max_message_bytes",
                kind: "too_large",
                truncated: Some("payload"),
                key: b"valid-2mb".to_vec(),
                payload: valid_2mb,
            },
        ),
        (
            5,
            b"poison-small".to_vec(),
            Expected {
                what: "a small invalid message (whole)",
                kind: "decode",
                truncated: None,
                key: b"poison-small".to_vec(),
                payload: br#"{"id":"#.to_vec(),
            },
        ),
        (
            7,
            b"poison-10mb".to_vec(),
            Expected {
                what: "10 MB of invalid JSON",
                kind: "too_large",
                truncated: Some("payload"),
                key: b"poison-10mb".to_vec(),
                payload: ten_mb,
            },
        ),
    ]
    .into_iter()
    .map(|(p, key, expected)| (p, (key, expected)))
    .collect();

    // Good messages before and after each poison one, in partitions 0 to 6.
    // The embedded broker keeps about 5 MiB per partition: a batch over that
    // is kept only in an empty partition, and the next batch there drops it
    // (and, with the mock's bookkeeping, itself). So the 10 MB message has
    // partition 7 to itself; produced among the others, it must not hold
    // them up.
    let mixed: Vec<i32> = (0..7).collect();
    let mut inputs = goods(0, 140, &mixed);
    for (&partition, (key, expected)) in &poison {
        inputs.push((partition, key.clone(), expected.payload.clone()));
    }
    inputs.extend(goods(140, 140, &mixed));
    produce_all(bootstrap, TOPIC, &inputs);

    let mut worker = broker
        .worker(GROUP, TOPIC)
        .env("TEST_CODEC", "json")
        .env("PYTHIA_WORKER__MAX_MESSAGE_BYTES", 1_048_576)
        .spawn(&dir, "w");
    wait_committed(&mut worker, bootstrap, GROUP, TOPIC, PARTITIONS);

    let letters = consume_all(
        bootstrap,
        &dlq,
        PARTITIONS,
        poison.len(),
        Duration::from_secs(30),
    );
    assert_never_exited_then_stop(&mut worker);

    // Every offset is either processed or dead-lettered, once.
    let highs = high_watermarks(bootstrap, TOPIC, PARTITIONS);
    let records = worker.records();
    assert_eq!(records.duplicates(), 0);
    let mut seen: BTreeMap<(i32, i64), &str> = records
        .counts()
        .keys()
        .map(|at| (*at, "processed"))
        .collect();
    assert_eq!(
        letters.len(),
        poison.len(),
        "one dead letter per poison message"
    );
    for letter in &letters {
        let partition: i32 = letter
            .header("pythia.dlq.partition")
            .unwrap()
            .parse()
            .unwrap();
        let offset: i64 = letter.header("pythia.dlq.offset").unwrap().parse().unwrap();
        assert!(
            seen.insert((partition, offset), "dead-lettered").is_none(),
            "{partition}@{offset} processed and dead-lettered"
        );
        let (_, expected) = &poison[&partition];
        let what = expected.what;
        assert_eq!(
            letter.header("pythia.dlq.kind").as_deref(),
            Some(expected.kind),
            "{what}"
        );
        assert!(
            letter
                .header("pythia.dlq.reason")
                .is_some_and(|r| !r.is_empty()),
            "{what}: a reason"
        );
        assert_eq!(
            letter.header("pythia.dlq.topic").as_deref(),
            Some(TOPIC),
            "{what}"
        );
        assert_eq!(
            letter.header("pythia.dlq.worker").as_deref(),
            Some(GROUP),
            "{what}"
        );
        assert_eq!(
            letter.header("pythia.dlq.truncated").as_deref(),
            expected.truncated,
            "{what}"
        );
        let payload = letter.payload.clone().unwrap_or_default();
        let key = letter.key.clone().unwrap_or_default();
        match expected.truncated {
            None => {
                assert_eq!(payload, expected.payload, "{what}: payload unchanged");
                assert_eq!(key, expected.key, "{what}: key unchanged");
            }
            Some("payload") => {
                assert_eq!(
                    payload,
                    expected.payload[..PAYLOAD_KEPT],
                    "{what}: a prefix"
                );
                assert_eq!(
                    letter.header("pythia.dlq.original_size"),
                    Some(expected.payload.len().to_string()),
                    "{what}"
                );
                assert_eq!(key, expected.key, "{what}: key unchanged");
            }
            Some("key") => {
                assert_eq!(key, expected.key[..KEY_KEPT], "{what}: a prefix of the key");
                assert_eq!(
                    letter.header("pythia.dlq.original_key_size"),
                    Some(expected.key.len().to_string()),
                    "{what}"
                );
                assert_eq!(payload, expected.payload, "{what}: payload unchanged");
            }
            Some(other) => panic!("{what}: unexpected truncation {other}"),
        }
    }
    let every: Vec<(i32, i64)> = all_offsets(&highs);
    let missing: Vec<_> = every.iter().filter(|at| !seen.contains_key(at)).collect();
    assert!(
        missing.is_empty(),
        "neither processed nor dead-lettered: {missing:?}"
    );
    assert_eq!(
        seen.len(),
        every.len(),
        "nothing beyond the topic's offsets"
    );
    let goods = every.len() - poison.len();
    assert_eq!(records.unique(), goods, "every good message processed");
}

/// An embedded broker (for its fault injection) with `topic` of two
/// partitions: 20 good messages and, at offset 5 of partition 1, a small
/// poison one; and the topic's empty dead-letter topic.
fn refused_setup(topic: &str) -> pythia_kafka::EmbeddedBroker {
    let broker = broker(topic, 2);
    broker.create_topic(&format!("{topic}.dlq"), 2).unwrap();
    let mut records = goods(0, 20, &[0, 1]);
    // Partition 1 gets ids 1, 3, 5, 7, 9 at offsets 0..5, then the poison.
    records.insert(10, (1, b"poison".to_vec(), b"{\"id\":".to_vec()));
    produce_all(broker.bootstrap_servers(), topic, &records);
    broker
}

#[test]
fn a_dead_letter_the_broker_refuses_goes_out_reduced_and_the_partition_goes_on() {
    let dir = scratch("refused-once");
    let broker = refused_setup("refused");
    let bootstrap = broker.bootstrap_servers();
    // The first produce request the broker gets, the whole dead letter's, is
    // refused as too large; the broker's limit is unknown to the producer.
    broker.fail_requests(PRODUCE, &[RD_KAFKA_RESP_ERR_MSG_SIZE_TOO_LARGE]);
    let mut worker = WorkerSpec::new(bootstrap, "refused-once", "refused")
        .env("TEST_CODEC", "json")
        .env("RUST_LOG", "info") // see run_without_dead_letter_topic
        .spawn(&dir, "w");
    wait_committed(&mut worker, bootstrap, "refused-once", "refused", 2);
    let letters = consume_all(bootstrap, "refused.dlq", 2, 1, Duration::from_secs(20));
    assert_never_exited_then_stop(&mut worker);

    assert_eq!(letters.len(), 1, "{letters:?}");
    let letter = &letters[0];
    assert_eq!(letter.header("pythia.dlq.offset").as_deref(), Some("5"));
    assert_eq!(letter.header("pythia.dlq.partition").as_deref(), Some("1"));
    assert_eq!(letter.header("pythia.dlq.kind").as_deref(), Some("decode"));
    assert!(
        letter
            .header("pythia.dlq.reason")
            .is_some_and(|r| !r.is_empty())
    );
    assert_eq!(
        letter.header("pythia.dlq.truncated").as_deref(),
        Some("payload")
    );
    assert_eq!(
        letter.header("pythia.dlq.original_size").as_deref(),
        Some("6")
    );
    assert!(
        letter.payload.as_deref().unwrap_or_default().is_empty(),
        "{letter:?}"
    );
    assert_eq!(letter.key.as_deref(), Some(&b"poison"[..]));
    assert_eq!(
        worker.records().unique(),
        20,
        "every good message processed"
    );
    assert!(
        worker
            .log_text()
            .contains("dead letter refused; sending it reduced"),
        "{}",
        worker.log_text()
    );
}

#[test]
fn a_dead_letter_refused_even_reduced_stops_the_worker_naming_the_offset() {
    let dir = scratch("refused-stop");
    let broker = refused_setup("stopper");
    let bootstrap = broker.bootstrap_servers();
    // The whole dead letter, then the reduced one.
    broker.fail_requests(PRODUCE, &[RD_KAFKA_RESP_ERR_MSG_SIZE_TOO_LARGE; 2]);
    let mut worker = WorkerSpec::new(bootstrap, "refused-stop", "stopper")
        .env("TEST_CODEC", "json")
        .spawn(&dir, "w");
    let log = worker.expect_failure(Duration::from_secs(60));
    for needle in [
        "stopper/1@5 could not be dead-lettered, even reduced",
        "worker.dead_letter.on_failure = \"skip\"",
        "--topic stopper:1 --to-offset 6",
    ] {
        assert!(log.contains(needle), "{needle:?} in the log:\n{log}");
    }
    let committed = committed(bootstrap, "refused-stop", "stopper", 2);
    assert_eq!(
        committed[1],
        Some(5),
        "partition 1 committed up to the message, not past it"
    );
    assert!(
        !worker
            .records()
            .processed
            .iter()
            .any(|r| r.partition == 1 && r.offset == 5),
        "the poison message was not processed"
    );
    let letters = consume_all(bootstrap, "stopper.dlq", 2, 0, Duration::from_secs(3));
    assert!(
        letters.is_empty(),
        "nothing reached the dead-letter topic: {letters:?}"
    );
}

#[test]
fn with_on_failure_skip_a_dead_letter_refused_even_reduced_is_skipped_counted_and_committed() {
    let dir = scratch("refused-skip");
    let broker = refused_setup("skipper");
    let bootstrap = broker.bootstrap_servers();
    broker.fail_requests(PRODUCE, &[RD_KAFKA_RESP_ERR_MSG_SIZE_TOO_LARGE; 2]);
    let mut worker = WorkerSpec::new(bootstrap, "refused-skip", "skipper")
        .env("TEST_CODEC", "json")
        .env("PYTHIA_WORKER__DEAD_LETTER__ON_FAILURE", "skip")
        .env("PYTHIA_METRICS__ADDRESS", "127.0.0.1:0")
        .env("RUST_LOG", "info") // see run_without_dead_letter_topic
        .spawn(&dir, "w");
    let address = worker.metrics_address(Duration::from_secs(60));
    wait_committed(&mut worker, bootstrap, "refused-skip", "skipper", 2);
    let outcome = |o: &str| {
        let (_, text) = http_get(&address, "/metrics").expect("metrics");
        sample(&text, "pythia_messages_total", &[("outcome", o)])
    };
    wait_until(Duration::from_secs(10), "the skip to be counted", || {
        outcome("skipped") == Some(1.0)
    });
    assert_eq!(outcome("ok"), Some(20.0));
    assert_eq!(outcome("dead_lettered"), Some(0.0));
    let letters = consume_all(bootstrap, "skipper.dlq", 2, 0, Duration::from_secs(3));
    assert_never_exited_then_stop(&mut worker);
    assert!(letters.is_empty(), "{letters:?}");
    assert_eq!(
        worker.records().unique(),
        20,
        "every good message processed"
    );
    let log = worker.log_text();
    assert!(
        log.contains("skipping the message") && log.contains("skipper/1@5"),
        "{log}"
    );
}

/// The partition count of `topic`, once the broker lists it.
fn partition_count(bootstrap: &str, topic: &str) -> Option<usize> {
    let client: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .create()
        .expect("metadata client");
    let metadata = client.fetch_metadata(None, Duration::from_secs(10)).ok()?;
    metadata
        .topics()
        .iter()
        .find(|t| t.name() == topic && t.error().is_none())
        .map(|t| t.partitions().len())
}

/// Runs a worker on `input` (of `partitions`), whose dead-letter topic does
/// not exist, over good messages; once `started` holds (the worker did what
/// it does about the missing topic at start), over a poison message too.
/// Returns the worker once everything is committed.
fn run_without_dead_letter_topic(
    broker: &TestBroker,
    dir: &std::path::Path,
    group: &str,
    input: &str,
    partitions: i32,
    started: (&str, &mut dyn FnMut(&Worker) -> bool),
) -> Worker {
    let bootstrap = broker.bootstrap_servers();
    let all: Vec<i32> = (0..partitions).collect();
    produce_all(bootstrap, input, &goods(0, 30, &all));
    assert_eq!(partition_count(bootstrap, &format!("{input}.dlq")), None);
    let mut worker = broker
        .worker(group, input)
        .env("TEST_CODEC", "json")
        .env("PYTHIA_WORKER__DEAD_LETTER__CREATE", "true")
        // With the harness's `info,librdkafka=warn,rdkafka=warn`, events of
        // the first seconds of a worker are sometimes missing from its log
        // (also `subscribed` and `worker started`; seen with tracing-subscriber
        // 0.3.23): plain `info` keeps the warning this test looks for.
        .env("RUST_LOG", "info")
        .spawn(dir, "w");
    let (what, check) = started;
    wait_until(Duration::from_secs(60), what, || check(&worker));
    let poison = (partitions - 1, b"poison".to_vec(), b"{\"id\":".to_vec());
    produce_all(bootstrap, input, &[poison]);
    wait_committed(&mut worker, bootstrap, group, input, partitions);
    worker
}

#[test]
fn a_missing_dead_letter_topic_is_created_with_its_inputs_partition_count() {
    // The embedded broker (librdkafka's mock) has no CreateTopics: this runs
    // on Tansu or Kafka, reached by address like a production cluster.
    if BrokerKind::selected() == BrokerKind::Embedded {
        eprintln!(
            "skipped: creating topics needs a broker with CreateTopics; run with TEST_BROKER=tansu or kafka (the embedded broker is covered by the test beside this one)"
        );
        return;
    }
    let dir = scratch("dlq-create");
    let Some(broker) = selected_broker("mirrored", 6) else {
        return;
    };
    let bootstrap = broker.bootstrap_servers().to_owned();
    let mut created = |_: &Worker| partition_count(&bootstrap, "mirrored.dlq").is_some();
    let mut worker = run_without_dead_letter_topic(
        &broker,
        &dir,
        "dlq-create",
        "mirrored",
        6,
        ("the worker to create mirrored.dlq", &mut created),
    );
    let letters = consume_all(&bootstrap, "mirrored.dlq", 6, 1, Duration::from_secs(20));
    assert_never_exited_then_stop(&mut worker);
    assert_eq!(
        partition_count(&bootstrap, "mirrored.dlq"),
        Some(6),
        "as many partitions as its input; log:\n{}",
        worker.log_text()
    );
    assert_eq!(letters.len(), 1);
}

#[test]
fn a_broker_that_cannot_create_the_dead_letter_topic_gets_a_warning_and_the_worker_runs_on() {
    let dir = scratch("dlq-nocreate");
    // The embedded broker reached by address, as the workers of every
    // process test reach it: it never answers CreateTopics (the request
    // times out after 10 s), and auto-creates the topic at the first dead
    // letter, with its default of 4 partitions.
    let broker = TestBroker::Embedded(pythia_tests::broker("unmirrored", 6));
    let mut warned = |worker: &Worker| {
        let log = worker.log_text();
        log.contains("could not create the dead-letter topic")
            || log.contains("could not check the dead-letter topics")
    };
    let mut worker = run_without_dead_letter_topic(
        &broker,
        &dir,
        "dlq-nocreate",
        "unmirrored",
        6,
        ("a warning about the dead-letter topic", &mut warned),
    );
    let bootstrap = broker.bootstrap_servers();
    let letters = consume_all(bootstrap, "unmirrored.dlq", 4, 1, Duration::from_secs(20));
    assert_eq!(letters.len(), 1, "dead-lettered to the auto-created topic");
    // Good messages went through while the creation was pending.
    assert_eq!(worker.records().unique(), 30);
    assert_never_exited_then_stop(&mut worker);
}

/// A valid message whose output the producer refuses (1.5 MiB against its
/// 1,000,000-byte `message.max.bytes`): sending it again would fail again,
/// so its message is dead-lettered by reference and the partition goes on.
#[test]
fn an_output_the_broker_refuses_dead_letters_its_message_and_the_partition_goes_on() {
    let dir = scratch("output-refused");
    let topic = "outref";
    let broker = broker(topic, 2);
    let bootstrap = broker.bootstrap_servers();
    for name in ["outref.out", "outref.dlq"] {
        broker.create_topic(name, 2).unwrap();
    }
    let mut records = goods(0, 20, &[0, 1]);
    // Partition 1: ids 1, 3, 5, 7, 9 at offsets 0..5, then the big one at 5.
    records.insert(10, (1, b"big".to_vec(), vec![b'x'; 3 * MIB / 2]));
    produce_all(bootstrap, topic, &records);
    let mut worker = WorkerSpec::new(bootstrap, "output-refused", topic)
        .env("TEST_OUTPUT", "1")
        .env("PYTHIA_KAFKA__OUTPUT_TOPIC", "outref.out")
        .env("RUST_LOG", "info") // see run_without_dead_letter_topic
        .spawn(&dir, "w");
    wait_committed(&mut worker, bootstrap, "output-refused", topic, 2);
    let letters = consume_all(bootstrap, "outref.dlq", 2, 1, Duration::from_secs(20));
    let outputs = consume_all(bootstrap, "outref.out", 2, 20, Duration::from_secs(20));
    assert_never_exited_then_stop(&mut worker);

    assert_eq!(outputs.len(), 20, "every good message's output delivered");
    assert_eq!(letters.len(), 1, "{letters:?}");
    let letter = &letters[0];
    assert_eq!(letter.header("pythia.dlq.partition").as_deref(), Some("1"));
    assert_eq!(letter.header("pythia.dlq.offset").as_deref(), Some("5"));
    assert_eq!(
        letter.header("pythia.dlq.kind").as_deref(),
        Some("output_refused")
    );
    assert!(
        letter
            .header("pythia.dlq.reason")
            .is_some_and(|r| r.contains("refused")),
        "{letter:?}"
    );
    assert!(
        letter.payload.as_deref().unwrap_or_default().is_empty(),
        "a reference: the message is still in its topic"
    );
}
