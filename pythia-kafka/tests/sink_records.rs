//! What the Kafka sink writes: a record's payload, key and headers reach the
//! broker as given, on its own topic, the configured output topic or a sink's;
//! a topic librdkafka cannot use is refused with its name, at start when it is
//! configured and on the record otherwise.

use std::time::{Duration, Instant};

use pythia_kafka::core::{ConfigError, Headers, Record, SinkError};
use pythia_kafka::{Config, ConfigLoader, EmbeddedBroker, KafkaError, KafkaSink};
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Headers as _, Message as _};

fn config(set: &[(&str, &str)]) -> (Config, EmbeddedBroker) {
    let mut loader = ConfigLoader::new()
        .no_file()
        .env::<&str, &str>([])
        .set("kafka.brokers", "embedded")
        .set("kafka.group", "sink-records")
        .set("kafka.topics", "unused.in")
        .set("kafka.embedded_partitions", 1);
    for &(key, value) in set {
        loader = loader.set(key, value);
    }
    let mut config = Config::from_loader(loader).unwrap();
    let broker = config.start_embedded().unwrap().expect("embedded broker");
    (config, broker)
}

/// Every message of `topic` (one partition), read from the start.
fn read_all(bootstrap: &str, topic: &str, count: usize) -> Vec<rdkafka::message::OwnedMessage> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", format!("read-{topic}"))
        .set("auto.offset.reset", "earliest")
        .set("enable.auto.commit", "false")
        .create()
        .unwrap();
    consumer.subscribe(&[topic]).unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut messages = Vec::new();
    while messages.len() < count {
        assert!(
            Instant::now() < deadline,
            "read {} of {count} messages of {topic}",
            messages.len()
        );
        if let Some(message) = consumer.poll(Duration::from_millis(200)) {
            messages.push(message.unwrap().detach());
        }
    }
    messages
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn payload_key_and_headers_arrive_as_given_on_every_kind_of_topic() {
    let (config, broker) = config(&[
        ("kafka.output_topic", "records.out"),
        ("kafka.sinks.audit", "records.audit"),
    ]);
    for topic in ["records.out", "records.audit", "records.named"] {
        broker.create_topic(topic, 1).unwrap();
    }
    let sink = KafkaSink::new(&config.kafka).unwrap();

    let mut headers = Headers::new();
    headers
        .append(
            "traceparent",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        )
        .append("empty", "");
    let traced = Record::new("with headers")
        .with_key("k1")
        .with_headers(headers);
    let mut null = Headers::new();
    null.append_null("null");
    let null_valued = Record::new("null header").with_headers(null);
    let records = [
        traced,
        null_valued,
        Record::new("to the sink").with_sink("audit"),
        // Twice to a topic of no configuration: its handle is made once and reused.
        Record::new("named 1").with_topic("records.named"),
        Record::new("named 2")
            .with_topic("records.named")
            .with_key("k2"),
    ];
    for record in records {
        sink.produce(record).await.await.expect("delivered");
    }

    let out = read_all(broker.bootstrap_servers(), "records.out", 2);
    assert_eq!(out[0].payload(), Some(&b"with headers"[..]));
    assert_eq!(out[0].key(), Some(&b"k1"[..]));
    let headers = out[0].headers().expect("headers");
    let headers: Vec<(&str, Option<&[u8]>)> = headers.iter().map(|h| (h.key, h.value)).collect();
    assert_eq!(
        headers,
        [
            (
                "traceparent",
                Some(&b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"[..])
            ),
            ("empty", Some(&b""[..])),
        ]
    );
    assert_eq!(out[1].payload(), Some(&b"null header"[..]));
    assert_eq!(out[1].key(), None);
    let headers: Vec<(&str, Option<&[u8]>)> = out[1]
        .headers()
        .expect("headers")
        .iter()
        .map(|h| (h.key, h.value))
        .collect();
    assert_eq!(
        headers,
        [("null", None)],
        "a null value stays null, not empty"
    );

    let audit = read_all(broker.bootstrap_servers(), "records.audit", 1);
    assert_eq!(audit[0].payload(), Some(&b"to the sink"[..]));
    assert!(audit[0].headers().is_none(), "no headers were given");

    let named = read_all(broker.bootstrap_servers(), "records.named", 2);
    let payloads: Vec<_> = named
        .iter()
        .map(|m| m.payload().unwrap().to_vec())
        .collect();
    assert_eq!(payloads, [b"named 1".to_vec(), b"named 2".to_vec()]);
    assert_eq!(named[1].key(), Some(&b"k2"[..]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_record_to_a_topic_librdkafka_refuses_is_settled_as_failed_with_the_topic() {
    let (config, broker) = config(&[("kafka.output_topic", "records.out")]);
    broker.create_topic("records.out", 1).unwrap();
    let sink = KafkaSink::new(&config.kafka).unwrap();

    let refused = sink
        .produce(Record::new("x").with_topic("bad\0topic"))
        .await
        .await;
    match refused {
        Err(SinkError::Delivery { topic, reason }) => {
            assert_eq!(topic, "bad\0topic");
            assert!(reason.contains("NUL"), "{reason}");
        }
        other => panic!("expected a refused delivery, got {other:?}"),
    }
    let too_long = "t".repeat(600);
    let refused = sink
        .produce(Record::new("x").with_topic(too_long.as_str()))
        .await
        .await;
    match refused {
        Err(SinkError::Delivery { topic, reason }) => {
            assert_eq!(topic, too_long);
            assert!(reason.contains("refused the topic name"), "{reason}");
        }
        other => panic!("expected a refused delivery, got {other:?}"),
    }
    // The sink still works after refusing.
    sink.produce(Record::new("fine"))
        .await
        .await
        .expect("delivered after a refusal");
    assert_eq!(
        read_all(broker.bootstrap_servers(), "records.out", 1)[0].payload(),
        Some(&b"fine"[..])
    );
}

#[test]
fn a_configured_topic_librdkafka_refuses_stops_the_sink_at_start_naming_the_key() {
    let long = "t".repeat(600);
    let (config, _broker) = config(&[("kafka.sinks.audit", long.as_str())]);
    match KafkaSink::new(&config.kafka) {
        Err(KafkaError::Config(ConfigError::InvalidValue { key, reason })) => {
            assert_eq!(key, "kafka.sinks.audit");
            assert!(reason.contains("not a usable topic name"), "{reason}");
        }
        other => panic!("expected a config error, got {other:?}"),
    }
}
