//! Workers between two brokers, their `process` unchanged: a RabbitMQ queue
//! to a Kafka topic (on the embedded broker), and a Kafka topic to a
//! RabbitMQ queue. Inputs are acknowledged (or committed) only once their
//! outputs are confirmed by the other broker; an output the Kafka producer
//! refuses is dead-lettered to Kafka, or, with dead letters off, stops the
//! worker and leaves its input in the queue.

mod common;

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::{Broker, unique, url};
use pythia_core::ConfigLoader;
use pythia_core::connector::Sink;
use pythia_kafka::{EmbeddedBroker, KafkaConfig, KafkaSink, KafkaWorker, LagReader};
use pythia_rabbitmq::{
    Context, Message, Outputs, Process, ProcessError, RabbitSink, RabbitWorker, Raw, Worker,
};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Headers as _, Message as _};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};
use tokio::sync::Notify;

/// Partitions of the Kafka topics the tests create.
const PARTITIONS: i32 = 3;
/// The Kafka producer's `message.max.bytes` in the refusal tests.
const MAX_BYTES: usize = 10_000;
/// What a `big` input turns into: more than the producer takes.
const BIG: usize = 2 * MAX_BYTES;

/// Upper-cases its input; an input starting with `big` becomes an output
/// too large for the Kafka producer.
struct Upper;

impl Worker for Upper {
    type Codec = Raw;
}

impl Process for Upper {
    type Input = Bytes;
    type Output = Bytes;

    async fn process(
        &self,
        msg: Message<Bytes>,
        _: &Context,
    ) -> Result<Outputs<Bytes>, ProcessError> {
        let payload = msg.into_payload();
        if payload.starts_with(b"big") {
            return Ok(Outputs::one(Bytes::from(vec![b'x'; BIG])));
        }
        Ok(Outputs::one(Bytes::from(payload.to_ascii_uppercase())))
    }
}

/// The configuration of a worker consuming `queue`.
fn rabbit_config(queue: &str, extra: &[(&str, &str)]) -> pythia_rabbitmq::Config {
    let mut loader = ConfigLoader::new()
        .no_file()
        .env::<&str, &str>([])
        .set("rabbitmq.url", url())
        .set("rabbitmq.queue", queue)
        .set("worker.shutdown_timeout", "10s");
    for (key, value) in extra {
        loader = loader.set(key, *value);
    }
    pythia_rabbitmq::Config::from_loader(loader).expect("a valid RabbitMQ configuration")
}

/// A Kafka producer for `broker` whose outputs go to `topic`.
fn kafka_sink(broker: &EmbeddedBroker, topic: &str) -> KafkaSink {
    let mut kafka = KafkaConfig::default();
    kafka.brokers = Some(broker.bootstrap_servers().to_owned());
    kafka.output_topic = Some(topic.to_owned());
    kafka
        .producer
        .set("message.max.bytes", MAX_BYTES.to_string());
    let sink = KafkaSink::new(&kafka).expect("a Kafka producer");
    assert_eq!(sink.max_record_bytes(), Some(MAX_BYTES));
    sink
}

/// A message read back from Kafka.
struct Read {
    payload: Vec<u8>,
    headers: Vec<(String, String)>,
}

/// Reads `topic` from the start, with a fresh consumer of no group, until
/// `expected` messages arrived and `quiet` passed without another.
fn read_topic(bootstrap: &str, topic: &str, expected: usize, quiet: Duration) -> Vec<Read> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", format!("reader-{topic}"))
        .set("enable.auto.commit", "false")
        .create()
        .expect("a consumer");
    let mut partitions = TopicPartitionList::new();
    for p in 0..PARTITIONS {
        partitions
            .add_partition_offset(topic, p, Offset::Beginning)
            .expect("offset");
    }
    consumer.assign(&partitions).expect("assign");
    let end = Instant::now() + Duration::from_secs(30);
    let mut last = Instant::now();
    let mut read = Vec::new();
    while Instant::now() < end && (read.len() < expected || last.elapsed() < quiet) {
        match consumer.poll(Duration::from_millis(100)) {
            Some(Ok(message)) => {
                last = Instant::now();
                let headers = message.headers().map_or_else(Vec::new, |headers| {
                    headers
                        .iter()
                        .map(|h| {
                            let value = String::from_utf8_lossy(h.value.unwrap_or_default());
                            (h.key.to_owned(), value.into_owned())
                        })
                        .collect()
                });
                read.push(Read {
                    payload: message.payload().unwrap_or_default().to_vec(),
                    headers,
                });
            }
            Some(Err(error)) => panic!("reading {topic}: {error}"),
            None => {}
        }
    }
    read
}

/// Reads `topic` on a blocking thread.
async fn read_kafka(bootstrap: &str, topic: &str, expected: usize, quiet: Duration) -> Vec<Read> {
    let (bootstrap, topic) = (bootstrap.to_owned(), topic.to_owned());
    tokio::task::spawn_blocking(move || read_topic(&bootstrap, &topic, expected, quiet))
        .await
        .expect("the reader")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rabbitmq_queue_feeds_a_kafka_topic_and_every_job_is_acknowledged() {
    const N: usize = 200;
    let mut rabbit = Broker::connect().await;
    let queue = unique("to-kafka");
    rabbit.queue(&queue).await;
    rabbit.own(&format!("{queue}.dlq"));
    let kafka = EmbeddedBroker::start().expect("the embedded broker");
    let topic = format!("{queue}.done");
    kafka.create_topic(&topic, PARTITIONS).expect("topic");
    rabbit
        .publish(&queue, (0..N).map(|i| format!("job-{i}").into_bytes()))
        .await;

    let worker = RabbitWorker::builder(Upper)
        .config(rabbit_config(&queue, &[]))
        .sink(kafka_sink(&kafka, &topic))
        .build()
        .expect("the worker");
    let stop = Arc::new(Notify::new());
    let stopped = stop.clone();
    let run = tokio::spawn(worker.run(async move { stopped.notified().await }));

    let read = read_kafka(
        kafka.bootstrap_servers(),
        &topic,
        N,
        Duration::from_millis(500),
    )
    .await;
    stop.notify_one();
    let summary = run.await.expect("the run").expect("a clean run");
    let payloads: BTreeSet<Vec<u8>> = read.iter().map(|r| r.payload.clone()).collect();
    let expected: BTreeSet<Vec<u8>> = (0..N).map(|i| format!("JOB-{i}").into_bytes()).collect();
    assert_eq!(read.len(), N, "one output per job, no duplicates");
    assert_eq!(payloads, expected);
    assert_eq!(summary.processed, N as u64, "{summary:?}");
    // The worker is gone: anything unacknowledged would be ready again.
    assert_eq!(rabbit.depth(&queue).await, (0, 0), "every job acknowledged");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_output_kafka_refuses_is_dead_lettered_to_the_kafka_topic_of_the_queue() {
    let mut rabbit = Broker::connect().await;
    let queue = unique("to-kafka-refused");
    rabbit.queue(&queue).await;
    rabbit.own(&format!("{queue}.dlq"));
    let kafka = EmbeddedBroker::start().expect("the embedded broker");
    let topic = format!("{queue}.done");
    let dead_letters = format!("{queue}.dlq");
    kafka.create_topic(&topic, PARTITIONS).expect("topic");
    kafka
        .create_topic(&dead_letters, PARTITIONS)
        .expect("dlq topic");
    rabbit
        .publish(&queue, [b"a".to_vec(), b"big-1".to_vec(), b"b".to_vec()])
        .await;

    let worker = RabbitWorker::builder(Upper)
        .config(rabbit_config(&queue, &[]))
        .sink(kafka_sink(&kafka, &topic))
        .build()
        .expect("the worker");
    let stop = Arc::new(Notify::new());
    let stopped = stop.clone();
    let run = tokio::spawn(worker.run(async move { stopped.notified().await }));

    let letters = read_kafka(
        kafka.bootstrap_servers(),
        &dead_letters,
        1,
        Duration::from_millis(300),
    )
    .await;
    let outputs = read_kafka(
        kafka.bootstrap_servers(),
        &topic,
        2,
        Duration::from_millis(300),
    )
    .await;
    stop.notify_one();
    let summary = run.await.expect("the run").expect("a clean run");
    let mut payloads: Vec<_> = outputs.iter().map(|r| r.payload.clone()).collect();
    payloads.sort();
    assert_eq!(payloads, [b"A".to_vec(), b"B".to_vec()]);
    assert_eq!(letters.len(), 1, "one dead letter, on Kafka");
    let header = |name: &str| {
        letters[0]
            .headers
            .iter()
            .find(|(key, _)| key == name)
            .map(|(_, value)| value.clone())
    };
    let reason = header("pythia.dlq.reason").unwrap_or_default();
    assert!(
        reason.contains("refused"),
        "the reason says why: {:?}",
        letters[0].headers
    );
    assert_eq!(header("pythia.dlq.topic").as_deref(), Some(queue.as_str()));
    assert_eq!(header("pythia.dlq.kind").as_deref(), Some("output_refused"));
    assert!(summary.processed >= 2, "{summary:?}");
    assert_eq!(
        rabbit.depth(&queue).await,
        (0, 0),
        "the refused job is acknowledged once dead-lettered"
    );
    assert!(
        !rabbit.exists(&format!("{queue}.dlq")).await,
        "no RabbitMQ dead-letter queue declared: dead letters go to Kafka"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_dead_letters_off_a_refused_output_stops_the_worker_and_its_job_stays_queued() {
    let mut rabbit = Broker::connect().await;
    let queue = unique("to-kafka-stop");
    rabbit.queue(&queue).await;
    let kafka = EmbeddedBroker::start().expect("the embedded broker");
    let topic = format!("{queue}.done");
    kafka.create_topic(&topic, PARTITIONS).expect("topic");
    rabbit.publish(&queue, [b"big-1".to_vec()]).await;

    let worker = RabbitWorker::builder(Upper)
        .config(rabbit_config(
            &queue,
            &[("worker.dead_letter.enabled", "false")],
        ))
        .sink(kafka_sink(&kafka, &topic))
        .build()
        .expect("the worker");
    let result = tokio::time::timeout(Duration::from_secs(60), worker.run(std::future::pending()))
        .await
        .expect("the worker stops by itself");
    let error = result.expect_err("a refused output fails the run");
    assert!(
        error.to_string().contains("refused") || format!("{error:?}").contains("Refused"),
        "{error}"
    );
    assert_eq!(
        rabbit.depth(&queue).await,
        (1, 0),
        "the job is back in its queue, unacknowledged"
    );
    let outputs = read_kafka(
        kafka.bootstrap_servers(),
        &topic,
        0,
        Duration::from_millis(300),
    )
    .await;
    assert!(outputs.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kafka_topic_feeds_a_rabbitmq_queue_and_the_group_commits_it_all() {
    const N: usize = 200;
    let mut rabbit = Broker::connect().await;
    let input = unique("from-kafka");
    let output = format!("{input}.out");
    // The sink publishes to existing queues; a RabbitMQ source would declare them.
    rabbit.queue(&output).await;
    rabbit.queue(&format!("{input}.dlq")).await;
    let kafka = EmbeddedBroker::start().expect("the embedded broker");
    kafka.create_topic(&input, PARTITIONS).expect("topic");

    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", kafka.bootstrap_servers())
        .create()
        .expect("a producer");
    for i in 0..N {
        let payload = format!("event-{i}");
        let key = i.to_string();
        producer
            .send(
                FutureRecord::to(&input).payload(&payload).key(&key),
                Duration::from_secs(10),
            )
            .await
            .expect("produced");
    }

    let group = format!("{input}-group");
    let mut config = pythia_kafka::Config::from_loader(
        ConfigLoader::new()
            .no_file()
            .env::<&str, &str>([])
            .set("kafka.brokers", "embedded")
            .set("kafka.group", group.as_str())
            .set("kafka.topics", input.as_str())
            .set("kafka.embedded_partitions", PARTITIONS as i64)
            .set("worker.shutdown_timeout", "10s"),
    )
    .expect("a valid Kafka configuration");
    config.use_embedded(&kafka).expect("the embedded broker");
    let publisher_config = rabbit_config(&input, &[("rabbitmq.output", output.as_str())]);
    let publisher = RabbitSink::new(&publisher_config, "mixed-test-publisher");
    let worker = KafkaWorker::builder(Upper)
        .config(config.clone())
        .sink(publisher.clone())
        .build()
        .expect("the worker");
    let stop = Arc::new(Notify::new());
    let stopped = stop.clone();
    let run = tokio::spawn(worker.run(async move { stopped.notified().await }));

    let taken = rabbit
        .take(
            &output,
            N,
            Duration::from_millis(500),
            Duration::from_secs(60),
        )
        .await;
    stop.notify_one();
    let summary = run.await.expect("the run").expect("a clean run");
    publisher.close().await;
    let payloads: BTreeSet<Vec<u8>> = taken.iter().map(|t| t.payload.clone()).collect();
    let expected: BTreeSet<Vec<u8>> = (0..N).map(|i| format!("EVENT-{i}").into_bytes()).collect();
    assert_eq!(taken.len(), N, "one output per event, no duplicates");
    assert_eq!(payloads, expected);
    assert_eq!(summary.processed, N as u64, "{summary:?}");

    let kafka_config = config.kafka.clone();
    let lags = tokio::task::spawn_blocking(move || {
        LagReader::new(&kafka_config, &group, Duration::from_secs(5))
            .expect("a lag reader")
            .read(&[input], None)
            .expect("the group's lag")
    })
    .await
    .expect("the lag reader");
    assert_eq!(lags.len(), PARTITIONS as usize, "{lags:?}");
    let committed: i64 = lags.iter().map(|l| l.committed.unwrap_or(0)).sum();
    assert_eq!(committed, N as i64, "the commits cover the topic: {lags:?}");
    assert!(lags.iter().all(|l| l.lag == 0), "{lags:?}");
}
