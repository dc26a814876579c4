//! A `traceparent` on an input message arrives on the output of a two-stage
//! pipeline with the same trace id and a new parent id per stage.

use std::time::Duration;

use pythia_tests::*;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Header, Headers as _, OwnedHeaders};
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use rdkafka::{ClientConfig, Message as _};

const TRACE_ID: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const INPUT: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

#[test]
fn traceparent_crosses_two_stages_with_the_same_trace_id() {
    let dir = scratch("trace");
    let broker = broker("stage-in", 1);
    broker.create_topic("stage-mid", 1).unwrap();
    broker.create_topic("stage-out", 1).unwrap();
    let bootstrap = broker.bootstrap_servers();

    let producer: BaseProducer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .create()
        .expect("producer");
    producer
        .send(
            BaseRecord::to("stage-in")
                .payload("hello")
                .key("k")
                .headers(OwnedHeaders::new().insert(Header {
                    key: "traceparent",
                    value: Some(INPUT),
                })),
        )
        .map_err(|(e, _)| e)
        .expect("send");
    producer.flush(Duration::from_secs(30)).expect("flush");

    let _first = WorkerSpec::new(bootstrap, "stage-1", "stage-in")
        .env("TEST_OUTPUT", 1)
        .env("PYTHIA_KAFKA__OUTPUT_TOPIC", "stage-mid")
        .spawn(&dir, "first");
    let _second = WorkerSpec::new(bootstrap, "stage-2", "stage-mid")
        .env("TEST_OUTPUT", 1)
        .env("PYTHIA_KAFKA__OUTPUT_TOPIC", "stage-out")
        .spawn(&dir, "second");

    let read = |topic: &str| -> String {
        let consumer: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", bootstrap)
            .set("group.id", format!("reader-{topic}"))
            .set("auto.offset.reset", "earliest")
            .create()
            .expect("consumer");
        consumer.subscribe(&[topic]).expect("subscribe");
        let mut found = None;
        wait_until(
            Duration::from_secs(90),
            &format!("a message on {topic}"),
            || {
                if let Some(Ok(message)) = consumer.poll(Duration::from_millis(100)) {
                    assert_eq!(message.payload(), Some(&b"hello"[..]));
                    found = message.headers().and_then(|headers| {
                        headers
                            .iter()
                            .find(|h| h.key == "traceparent")
                            .and_then(|h| h.value)
                            .map(|v| String::from_utf8_lossy(v).into_owned())
                    });
                    return true;
                }
                false
            },
        );
        found.unwrap_or_else(|| panic!("the message on {topic} has no traceparent"))
    };
    let mid = read("stage-mid");
    let out = read("stage-out");
    for (stage, value) in [("stage-mid", &mid), ("stage-out", &out)] {
        let parts: Vec<&str> = value.split('-').collect();
        assert_eq!(parts.len(), 4, "{stage}: {value}");
        assert_eq!(parts[1], TRACE_ID, "{stage} keeps the trace id: {value}");
        assert_eq!(parts[3], "01", "{stage} keeps the flags: {value}");
    }
    assert_ne!(mid, INPUT, "each stage gets its own parent id");
    assert_ne!(out, mid, "each stage gets its own parent id");
}
