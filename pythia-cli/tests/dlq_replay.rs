//! Dead letters go back where they came from with `pythia dlq replay`, once the
//! cause is fixed; a second replay finds nothing new.

use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use pythia_kafka::core::Record;
use pythia_kafka::prelude::*;
use pythia_kafka::{KafkaConfig, KafkaSink, LagReader, Utf8};

/// The messages `topic` holds: the sum of its partitions' high watermarks.
fn high_total(bootstrap: &str, topic: &str) -> i64 {
    let mut kafka = KafkaConfig::default();
    kafka.brokers = Some(bootstrap.to_string());
    let mut reader = LagReader::new(&kafka, "dlq-replay-watermarks", Duration::from_secs(10))
        .expect("a lag reader");
    let partitions = reader
        .read(&[topic.to_string()], None)
        .expect("the topic's watermarks");
    partitions.iter().map(|p| p.high_watermark).sum()
}

/// Rejects "bad" payloads until fixed.
#[derive(Default, Worker)]
#[pythia(topic = "orders", codec = (Utf8, Utf8))]
struct Picky {
    fixed: AtomicBool,
    processed: AtomicU64,
}

impl Process for Picky {
    type Input = String;
    type Output = String;
    async fn process(
        &self,
        msg: Message<String>,
        _: &Context,
    ) -> Result<Outputs<String>, ProcessError> {
        if msg.payload().starts_with("bad") && !self.fixed.load(Ordering::Relaxed) {
            return Err(ProcessError::permanent("bad order"));
        }
        self.processed.fetch_add(1, Ordering::Relaxed);
        Ok(Outputs::none())
    }
}

fn replay(bootstrap: &str, extra: &[&str]) -> String {
    let output = Command::new(env!("CARGO_BIN_EXE_pythia"))
        .args([
            "dlq",
            "replay",
            "--brokers",
            bootstrap,
            "--topic",
            "orders.dlq",
        ])
        .args(extra)
        .env("RUST_LOG", "warn")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(
        output.status.success(),
        "replay failed: {stdout}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    stdout
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replayed_dead_letters_are_processed_once_the_cause_is_fixed() {
    let mut config = Config::from_loader(
        Config::loader_for::<Picky>()
            .no_file()
            .env::<&str, &str>([])
            .set("kafka.brokers", "embedded")
            .set("kafka.embedded_partitions", 2)
            .set("kafka.commit_interval", "100ms"),
    )
    .unwrap();
    let broker = config.start_embedded().unwrap().expect("embedded broker");
    let bootstrap = broker.bootstrap_servers().to_owned();
    let sink = KafkaSink::new(&config.kafka).unwrap();
    for payload in ["ok-1", "bad-1", "ok-2", "bad-2", "ok-3"] {
        let record = Record::new(payload).with_key(payload).with_topic("orders");
        sink.produce(record).await.await.unwrap();
    }

    let picky = Arc::new(Picky::default());
    let instance = KafkaWorker::builder(picky.clone())
        .config(config)
        .build()
        .unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let run = tokio::spawn(instance.run(async {
        let _ = stopped.await;
    }));
    let wait = |what: &str, done: &dyn Fn() -> bool| {
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        while !done() {
            assert!(
                std::time::Instant::now() < deadline,
                "timed out waiting for {what}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    };
    wait("the good orders and two dead letters", &|| {
        picky.processed.load(Ordering::Relaxed) == 3 && high_total(&bootstrap, "orders.dlq") == 2
    });

    // A dry run changes nothing.
    assert!(replay(&bootstrap, &["--dry-run"]).contains("replayed=2 skipped=0"));
    assert_eq!(high_total(&bootstrap, "orders"), 5);

    picky.fixed.store(true, Ordering::Relaxed);
    assert!(replay(&bootstrap, &[]).contains("replayed=2 skipped=0"));
    wait("the replayed orders processed", &|| {
        picky.processed.load(Ordering::Relaxed) == 5
    });
    assert_eq!(
        high_total(&bootstrap, "orders"),
        7,
        "two orders back on their topic"
    );
    assert_eq!(
        high_total(&bootstrap, "orders.dlq"),
        2,
        "no new dead letters"
    );

    // The replay committed: nothing is replayed twice.
    assert!(replay(&bootstrap, &[]).contains("replayed=0 skipped=0"));

    stop.send(()).unwrap();
    let summary = run.await.unwrap().unwrap();
    assert_eq!(
        summary.processed, 7,
        "5 orders, 2 dead-lettered, 2 replayed"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reduced_dead_letter_is_not_replayed_as_if_it_were_the_original() {
    use pythia_kafka::core::Headers;
    use pythia_kafka::core::dead_letter::header;
    let broker = pythia_kafka::EmbeddedBroker::with_topics([("cut", 1), ("cut.dlq", 1)]).unwrap();
    let bootstrap = broker.bootstrap_servers().to_owned();
    let mut config = pythia_kafka::KafkaConfig::default();
    config.brokers = Some(bootstrap.clone());
    let sink = KafkaSink::new(&config).unwrap();
    let letter = |truncated: Option<&str>| {
        let mut headers = Headers::new();
        headers.append(header::TOPIC, "cut");
        headers.append(header::PARTITION, "0");
        headers.append(header::OFFSET, "7");
        if let Some(truncated) = truncated {
            headers.append(header::TRUNCATED, truncated.to_owned());
        }
        Record::new("prefix of the payload")
            .with_topic("cut.dlq")
            .with_headers(headers)
    };
    for record in [letter(None), letter(Some("payload"))] {
        sink.produce(record).await.await.unwrap();
    }
    let output = Command::new(env!("CARGO_BIN_EXE_pythia"))
        .args([
            "dlq",
            "replay",
            "--brokers",
            &bootstrap,
            "--topic",
            "cut.dlq",
        ])
        .env("RUST_LOG", "warn")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stdout}{stderr}");
    assert!(stdout.contains("replayed=1 skipped=1"), "{stdout}");
    assert!(
        stderr.contains("cut/0@7"),
        "the warning names the original: {stderr}"
    );
    assert_eq!(
        high_total(&bootstrap, "cut"),
        1,
        "only the whole one went back"
    );
}
