//! `pythia lag` reads a group's lag from the broker with no consumer running:
//! as a table, as JSON, and as an exporter whose gauges match; and lag after
//! retention never exceeds what is readable nor goes negative.

mod common;

use std::process::Command;
use std::time::{Duration, Instant};

use common::{PYTHIA, Process, http_get_ok as http_get};

use pythia_kafka::EmbeddedBroker;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};

fn produce(bootstrap: &str, topic: &str, partition: i32, count: usize, size: usize) {
    let producer: BaseProducer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("linger.ms", "5")
        .create()
        .expect("producer");
    // Incompressible payloads, so retention by size really drops them.
    let mut state = 0x9e37_79b9_7f4a_7c15u64 ^ (partition as u64);
    for _ in 0..count {
        let payload: Vec<u8> = (0..size)
            .map(|_| {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                state as u8
            })
            .collect();
        let mut record = BaseRecord::<(), _>::to(topic)
            .payload(&payload)
            .partition(partition);
        loop {
            match producer.send(record) {
                Ok(()) => break,
                Err((_, back)) => {
                    record = back;
                    producer.poll(Duration::from_millis(10));
                }
            }
        }
    }
    producer.flush(Duration::from_secs(60)).expect("flush");
}

fn commit(bootstrap: &str, group: &str, topic: &str, offsets: &[(i32, i64)]) {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", group)
        .create()
        .expect("consumer");
    let mut tpl = TopicPartitionList::new();
    for &(partition, offset) in offsets {
        tpl.add_partition_offset(topic, partition, Offset::Offset(offset))
            .unwrap();
    }
    consumer.commit(&tpl, CommitMode::Sync).expect("commit");
}

fn lag_json(bootstrap: &str, group: &str, topic: &str) -> serde_json::Value {
    let out = Command::new(PYTHIA)
        .args(["lag", "--brokers", bootstrap, "--group", group])
        .args(["--topic", topic, "--json"])
        .env("RUST_LOG", "warn")
        .output()
        .expect("run pythia lag");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("JSON on stdout")
}

#[test]
fn lag_of_a_group_without_consumers_as_table_json_and_exporter() {
    let broker = EmbeddedBroker::with_topics([("orders", 3)]).unwrap();
    let bootstrap = broker.bootstrap_servers();
    for p in 0..3 {
        produce(bootstrap, "orders", p, 10, 100);
    }
    // Partition 2 has no commit yet: all of it is lag.
    commit(bootstrap, "billing", "orders", &[(0, 2), (1, 5)]);

    let json = lag_json(bootstrap, "billing", "orders");
    assert_eq!(json["group"], "billing");
    assert_eq!(json["lag"], 8 + 5 + 10, "{json}");
    let partitions = json["partitions"].as_array().unwrap();
    let lags: Vec<(i64, Option<i64>, i64)> = partitions
        .iter()
        .map(|p| {
            (
                p["partition"].as_i64().unwrap(),
                p["committed"].as_i64(),
                p["lag"].as_i64().unwrap(),
            )
        })
        .collect();
    assert_eq!(lags, [(0, Some(2), 8), (1, Some(5), 5), (2, None, 10)]);
    assert!(
        partitions
            .iter()
            .all(|p| p["lag_seconds"].as_f64().is_some_and(|s| s >= 0.0)),
        "{json}"
    );

    let table = Command::new(PYTHIA)
        .args(["lag", "--brokers", bootstrap, "--group", "billing"])
        .env("RUST_LOG", "warn")
        .output()
        .expect("run pythia lag");
    let table = String::from_utf8_lossy(&table.stdout);
    assert!(
        table.contains("group billing: total lag 23 over 3 partitions"),
        "topics discovered from the group's commits:\n{table}"
    );

    let (exporter, address) = Process::start(
        &[
            "lag",
            "--brokers",
            bootstrap,
            "--group",
            "billing",
            "--topic",
            "orders",
            "--serve",
            "127.0.0.1:0",
            "--interval",
            "200ms",
        ],
        &[],
        "serving=",
    );
    let metrics = http_get(&address, "/metrics");
    for (partition, _, lag) in &lags {
        let series = format!(
            r#"pythia_consumer_lag{{group="billing",partition="{partition}",topic="orders"}} {lag}"#
        );
        assert!(
            metrics.lines().any(|l| l == series),
            "{series} in:\n{metrics}"
        );
    }
    let served: serde_json::Value = serde_json::from_str(&http_get(&address, "/lag")).unwrap();
    assert_eq!(served["lag"], 23);

    // The exporter follows new commits.
    commit(bootstrap, "billing", "orders", &[(2, 10)]);
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let served: serde_json::Value = serde_json::from_str(&http_get(&address, "/lag")).unwrap();
        if served["lag"] == 13 {
            break;
        }
        assert!(Instant::now() < deadline, "exporter still reports {served}");
        std::thread::sleep(Duration::from_millis(100));
    }
    drop(exporter);
}

#[test]
fn lag_after_retention_counts_only_readable_messages_and_is_never_negative() {
    let broker = EmbeddedBroker::with_topics([("logs", 1)]).unwrap();
    let bootstrap = broker.bootstrap_servers();
    // About 9 MiB into a partition that keeps about 5 MiB.
    produce(bootstrap, "logs", 0, 150, 64 * 1024);
    let before = lag_json(bootstrap, "fresh", "logs");
    let p = &before["partitions"][0];
    let (low, high) = (
        p["low_watermark"].as_i64().unwrap(),
        p["high_watermark"].as_i64().unwrap(),
    );
    assert_eq!(high, 150);
    assert!(
        low > 0,
        "retention should have dropped the oldest messages: {before}"
    );
    assert_eq!(
        p["lag"],
        high - low,
        "no commit yet: everything readable is lag"
    );

    // A commit below the low watermark: the deleted messages are not lag.
    commit(bootstrap, "old", "logs", &[(0, 3)]);
    let json = lag_json(bootstrap, "old", "logs");
    let lag = json["partitions"][0]["lag"].as_i64().unwrap();
    assert_eq!(lag, high - low, "{json}");
    assert!(
        json["partitions"][0]["lag_seconds"].as_f64().is_some(),
        "{json}"
    );

    // A commit past the high watermark: lag 0, not negative.
    commit(bootstrap, "ahead", "logs", &[(0, high + 10)]);
    let json = lag_json(bootstrap, "ahead", "logs");
    assert_eq!(json["partitions"][0]["lag"], 0, "{json}");
    assert_eq!(json["lag"], 0, "{json}");
}
