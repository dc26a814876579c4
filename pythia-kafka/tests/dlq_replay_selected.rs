//! `replay_selected` (the console's replay) sends only the chosen dead letters
//! back, without their `pythia.dlq.*` headers, skips reduced ones, and leaves
//! the `pythia dlq replay` group where it was.

use std::time::{Duration, Instant};

use pythia_kafka::{EmbeddedBroker, KafkaConfig, replay_selected};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Header, Headers as _, OwnedHeaders};
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use rdkafka::{ClientConfig, Message as _, Offset, TopicPartitionList};

fn dead_letter(producer: &BaseProducer, payload: &str, origin_offset: i64, truncated: bool) {
    let offset = origin_offset.to_string();
    let mut headers = OwnedHeaders::new()
        .insert(Header {
            key: "trace",
            value: Some("abc"),
        })
        .insert(Header {
            key: "pythia.dlq.reason",
            value: Some("bad order"),
        })
        .insert(Header {
            key: "pythia.dlq.topic",
            value: Some("orders"),
        })
        .insert(Header {
            key: "pythia.dlq.partition",
            value: Some("0"),
        })
        .insert(Header {
            key: "pythia.dlq.offset",
            value: Some(offset.as_str()),
        });
    if truncated {
        headers = headers.insert(Header {
            key: "pythia.dlq.truncated",
            value: Some("payload"),
        });
    }
    producer
        .send(
            BaseRecord::to("orders.dlq")
                .key("k")
                .payload(payload)
                .partition(0)
                .headers(headers),
        )
        .expect("enqueue");
}

/// Every message of `orders` partition 0: payload and header keys.
fn read_orders(bootstrap: &str, expected: usize) -> Vec<(String, Vec<String>)> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", "reader")
        .create()
        .expect("consumer");
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset("orders", 0, Offset::Beginning)
        .unwrap();
    consumer.assign(&tpl).unwrap();
    let mut out = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline && out.len() < expected {
        if let Some(Ok(m)) = consumer.poll(Duration::from_millis(100)) {
            let keys = m
                .headers()
                .map(|hs| hs.iter().map(|h| h.key.to_owned()).collect())
                .unwrap_or_default();
            out.push((
                String::from_utf8_lossy(m.payload().unwrap_or_default()).into_owned(),
                keys,
            ));
        }
    }
    // A little longer, to see extras.
    std::thread::sleep(Duration::from_millis(300));
    while let Some(Ok(m)) = consumer.poll(Duration::from_millis(100)) {
        out.push((
            String::from_utf8_lossy(m.payload().unwrap_or_default()).into_owned(),
            Vec::new(),
        ));
    }
    out
}

#[test]
fn only_the_chosen_dead_letters_go_back() {
    let broker = EmbeddedBroker::with_topics([("orders", 1), ("orders.dlq", 1)]).unwrap();
    let bootstrap = broker.bootstrap_servers();
    let producer: BaseProducer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .create()
        .expect("producer");
    dead_letter(&producer, "first", 10, false);
    dead_letter(&producer, "second", 11, false);
    dead_letter(&producer, "reduced", 12, true);
    producer.flush(Duration::from_secs(10)).expect("flush");

    let mut kafka = KafkaConfig::default();
    kafka.brokers = Some(bootstrap.to_owned());
    let summary = replay_selected(
        &kafka,
        "orders.dlq",
        &[(0, 1), (0, 2)],
        None,
        Duration::from_secs(10),
    )
    .expect("replay");
    assert_eq!(summary.total(), 1);
    assert_eq!(summary.replayed.get("orders"), Some(&1));
    assert_eq!(summary.skipped, 1, "the reduced one is not the original");

    let orders = read_orders(bootstrap, 1);
    assert_eq!(orders.len(), 1, "{orders:?}");
    assert_eq!(orders[0].0, "second");
    assert_eq!(
        orders[0].1,
        ["trace"],
        "pythia.dlq.* headers removed, others kept"
    );

    // `pythia dlq replay`'s group has not moved: all three are still ahead of it.
    let group: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", "pythia-dlq-replay")
        .create()
        .expect("consumer");
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition("orders.dlq", 0);
    let committed = group
        .committed_offsets(tpl, Duration::from_secs(10))
        .expect("committed");
    assert!(
        !matches!(committed.elements()[0].offset(), Offset::Offset(o) if o > 0),
        "{:?}",
        committed.elements()[0].offset()
    );

    // A dead letter that does not exist is an error, and nothing is sent.
    let error = replay_selected(
        &kafka,
        "orders.dlq",
        &[(0, 0), (0, 7)],
        None,
        Duration::from_secs(2),
    )
    .unwrap_err()
    .to_string();
    assert!(
        error.contains("orders.dlq/0@7") && error.contains("nothing replayed"),
        "{error}"
    );
    assert_eq!(read_orders(bootstrap, 1).len(), 1, "nothing more was sent");
}
