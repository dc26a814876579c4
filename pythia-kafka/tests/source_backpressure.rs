//! The Kafka source runs at most a couple of batches ahead of a runtime that
//! is not taking them, so a partition's pause takes effect within a few
//! hundred messages; what it held back still arrives, in order, once taken.

use std::time::{Duration, Instant};

use pythia_kafka::core::PartitionId;
use pythia_kafka::core::connector::{Source, SourceEvent};
use pythia_kafka::{Config, ConfigLoader, KafkaSource};
use rdkafka::config::ClientConfig;
use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};

const MESSAGES: i64 = 20_000;

async fn next(source: &mut KafkaSource) -> SourceEvent {
    tokio::time::timeout(Duration::from_secs(30), source.next())
        .await
        .expect("an event within 30 s")
        .expect("the source is open")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_runtime_that_takes_no_batches_holds_the_source_back_and_loses_nothing() {
    let loader = ConfigLoader::new()
        .no_file()
        .env::<&str, &str>([])
        .set("kafka.brokers", "embedded")
        .set("kafka.group", "backpressure")
        .set("kafka.topics", "backpressure.in")
        .set("kafka.embedded_partitions", 1);
    let mut config = Config::from_loader(loader).unwrap();
    let broker = config.start_embedded().unwrap().expect("embedded broker");

    let producer: ThreadedProducer<DefaultProducerContext> = ClientConfig::new()
        .set("bootstrap.servers", broker.bootstrap_servers())
        .create()
        .unwrap();
    for i in 0..MESSAGES {
        let payload = i.to_string();
        let mut record =
            BaseRecord::<[u8], [u8]>::to("backpressure.in").payload(payload.as_bytes());
        while let Err((_, back)) = producer.send(record) {
            record = back;
            std::thread::sleep(Duration::from_millis(5));
        }
    }
    producer.flush(Duration::from_secs(30)).unwrap();

    let mut source = KafkaSource::new(&config, "backpressure").unwrap();
    let partition = PartitionId::new("backpressure.in", 0);
    let mut received: Vec<i64> = Vec::new();
    loop {
        match next(&mut source).await {
            SourceEvent::Assigned(_) => {}
            SourceEvent::Messages(batch) => {
                received.extend(batch.iter().map(|m| m.offset()));
                break;
            }
            SourceEvent::Revoked(revocation) => revocation.drained(),
            SourceEvent::Lost(_) => panic!("partition lost"),
            _ => {}
        }
    }

    // The runtime is busy: nothing is taken for a while, and the source stops
    // reading once two more batches wait (at most 256 of a partition per pass).
    tokio::time::sleep(Duration::from_secs(2)).await;
    let handed_out = source.tracker().in_flight(&partition);
    assert!(
        handed_out <= received.len() + 2 * 256 + 256,
        "the source handed out {handed_out} of {MESSAGES} messages while the runtime took {}",
        received.len()
    );

    let deadline = Instant::now() + Duration::from_secs(60);
    while received.len() < MESSAGES as usize {
        assert!(
            Instant::now() < deadline,
            "received {} of {MESSAGES}",
            received.len()
        );
        if let SourceEvent::Messages(batch) = next(&mut source).await {
            received.extend(batch.iter().map(|m| m.offset()));
        }
    }
    assert_eq!(
        received,
        (0..MESSAGES).collect::<Vec<_>>(),
        "every offset once, in order"
    );
    source.close(Duration::from_secs(10)).await.unwrap();
}
