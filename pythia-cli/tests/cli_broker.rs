//! `pythia broker` hosts an embedded broker that other processes use.

mod common;

use std::process::{Child, Command};
use std::time::{Duration, Instant};

use common::{PYTHIA, Process};
use rdkafka::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use rdkafka::{Message, Offset, TopicPartitionList};

fn wait_exit(child: &mut Child, timeout: Duration) -> std::process::ExitStatus {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        assert!(Instant::now() < deadline, "pythia broker did not exit");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn broker_serves_other_processes_and_stops_on_sigterm() {
    let (mut broker, bootstrap) = Process::start(
        &["broker", "--topic", "orders:8", "--topic", "audit:1"],
        &[],
        "bootstrap=",
    );

    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", &bootstrap)
        .set("group.id", "cli-test")
        .set("enable.auto.commit", "false")
        .create()
        .unwrap();
    let metadata = consumer
        .fetch_metadata(None, Duration::from_secs(10))
        .unwrap();
    let partitions = |name: &str| {
        metadata
            .topics()
            .iter()
            .find(|t| t.name() == name)
            .map(|t| t.partitions().len())
    };
    assert_eq!(partitions("orders"), Some(8));
    assert_eq!(partitions("audit"), Some(1));

    // A message produced by one client is read back by another.
    let producer: BaseProducer = ClientConfig::new()
        .set("bootstrap.servers", &bootstrap)
        .create()
        .unwrap();
    producer
        .send(BaseRecord::to("audit").payload("hello").key("k"))
        .map_err(|(e, _)| e)
        .unwrap();
    producer.flush(Duration::from_secs(10)).unwrap();
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset("audit", 0, Offset::Beginning)
        .unwrap();
    consumer.assign(&tpl).unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    let payload = loop {
        if let Some(Ok(message)) = consumer.poll(Duration::from_millis(100)) {
            break message.payload().map(<[u8]>::to_vec);
        }
        assert!(Instant::now() < deadline, "message not read back");
    };
    assert_eq!(payload.as_deref(), Some(&b"hello"[..]));

    drop(consumer);
    drop(producer);
    broker.terminate();
    let status = wait_exit(&mut broker.child, Duration::from_secs(10));
    assert!(status.success(), "exit status {status:?}");
}

#[test]
fn bad_topic_spec_is_rejected_with_the_format() {
    let output = Command::new(PYTHIA)
        .args(["broker", "--topic", "orders"])
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("NAME:PARTITIONS"), "{stderr}");
}

#[test]
fn sasl_without_its_password_names_the_variable() {
    let output = Command::new(PYTHIA)
        .args(["broker", "--sasl-plain-user", "ops"])
        .env_remove("PYTHIA_BROKER_SASL_PASSWORD")
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("PYTHIA_BROKER_SASL_PASSWORD"), "{stderr}");
}
