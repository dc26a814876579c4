//! Pipelines in one process: stages share one embedded broker; a stage that
//! stops on a failure stops the others; a stage with a bad configuration is named.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use pythia_kafka::core::{Error, Record};
use pythia_kafka::prelude::*;
use pythia_kafka::{ConfigLoader, KafkaConfig, KafkaSink, Utf8};

/// Doubles numbers; fails on 13 when asked to.
#[derive(Default, Worker)]
#[pythia(topic = "numbers", output = "doubled", codec = (Utf8, Utf8))]
struct Double {
    seen: AtomicU64,
}

impl Process for Double {
    type Input = String;
    type Output = String;
    async fn process(
        &self,
        msg: Message<String>,
        _: &Context,
    ) -> Result<Outputs<String>, ProcessError> {
        self.seen.fetch_add(1, Ordering::Relaxed);
        let n: u64 = msg.payload().parse()?;
        Ok(Outputs::one((2 * n).to_string()))
    }
}

/// Sums what reaches it; rejects 26 (13 doubled) when `strict`.
#[derive(Default, Worker)]
#[pythia(topic = "doubled", codec = "utf8")]
struct Sum {
    total: AtomicU64,
    count: AtomicU64,
    strict: bool,
}

impl Process for Sum {
    type Input = String;
    type Output = ();
    async fn process(
        &self,
        msg: Message<String>,
        _: &Context,
    ) -> Result<Outputs<()>, ProcessError> {
        let n: u64 = msg.payload().parse()?;
        if self.strict && n == 26 {
            return Err(ProcessError::permanent("26 is not allowed"));
        }
        self.total.fetch_add(n, Ordering::Relaxed);
        self.count.fetch_add(1, Ordering::Relaxed);
        Ok(Outputs::none())
    }
}

fn base() -> ConfigLoader {
    ConfigLoader::new()
        .no_file()
        .env::<&str, &str>([])
        .set("kafka.brokers", "embedded")
        .set("kafka.embedded_partitions", 2)
}

async fn produce(brokers: &str, numbers: impl Iterator<Item = u64>) {
    let mut config = KafkaConfig::default();
    config.brokers = Some(brokers.to_owned());
    let sink = KafkaSink::new(&config).unwrap();
    for n in numbers {
        let record = Record::new(n.to_string()).with_topic("numbers");
        sink.produce(record).await.await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stages_share_one_embedded_broker() {
    let (double, sum) = (Arc::new(Double::default()), Arc::new(Sum::default()));
    let pipeline = Pipeline::builder(base())
        .stage(double.clone())
        .stage(sum.clone())
        .build()
        .unwrap();
    let names: Vec<&str> = pipeline.statuses().into_iter().map(|(n, _)| n).collect();
    assert_eq!(names, ["double", "sum"]);
    produce(pipeline.brokers(), 1..=100).await;
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let run = tokio::spawn(pipeline.run(async {
        let _ = stopped.await;
    }));
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while sum.count.load(Ordering::Relaxed) < 100 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "not all numbers arrived"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    stop.send(()).unwrap();
    let summaries = run.await.unwrap().unwrap();
    assert_eq!(
        sum.total.load(Ordering::Relaxed),
        2 * (1..=100).sum::<u64>()
    );
    let processed: Vec<(String, u64)> = summaries
        .into_iter()
        .map(|s| (s.name, s.summary.processed))
        .collect();
    assert_eq!(
        processed,
        [("double".to_owned(), 100), ("sum".to_owned(), 100)]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_stage_stops_the_pipeline_with_its_error() {
    let strict = Sum {
        strict: true,
        ..Sum::default()
    };
    // With dead letters off, a message that fails stops its stage.
    let pipeline = Pipeline::builder(base().set("worker.dead_letter.enabled", false))
        .stage(Double::default())
        .stage(strict)
        .build()
        .unwrap();
    produce(pipeline.brokers(), 1..=20).await;
    // No shutdown is asked for: the failure alone ends the run.
    let result = tokio::time::timeout(
        Duration::from_secs(60),
        pipeline.run(std::future::pending()),
    )
    .await
    .expect("the pipeline stopped after the failure");
    match result {
        Err(Error::Process {
            partition, reason, ..
        }) => {
            assert_eq!(partition.topic(), "doubled");
            assert!(reason.contains("26 is not allowed"), "{reason}");
        }
        other => panic!("expected the sum stage's failure, got {other:?}"),
    }
}

#[test]
fn a_stage_with_a_bad_configuration_is_named() {
    let error = Pipeline::builder(base().set("worker.max_in_flight", 0))
        .stage(Double::default())
        .build()
        .err()
        .expect("max_in_flight = 0 is refused");
    let text = error.to_string();
    assert!(text.contains("worker.max_in_flight"), "{text}");
    assert!(text.contains("double"), "{text}");
}
