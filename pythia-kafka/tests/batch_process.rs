//! Batches: `process_batch` gets up to `worker.batch_size` messages of one
//! partition in offset order; each message commits by its own result — a
//! failed one is retried alone, a permanent failure is dead-lettered.

mod common;
use common::{committed_total, high_total};

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use pythia_kafka::core::Record;
use pythia_kafka::prelude::*;
use pythia_kafka::{KafkaSink, Utf8};
use rayon::prelude::*;

/// Sums digits in batches on the CPU pool; "flaky" items fail once, "poison" always.
#[derive(Default, Worker)]
#[pythia(topic = "numbers", codec = (Utf8, Utf8))]
struct Summer {
    batches: Mutex<Vec<Vec<i64>>>,
    flaky_failed: AtomicU64,
    processed: AtomicU64,
}

impl Process for Summer {
    type Input = String;
    type Output = String;

    async fn process(
        &self,
        msg: Message<String>,
        _: &Context,
    ) -> Result<Outputs<String>, ProcessError> {
        // Called for items retried alone.
        if msg.payload() == "poison" {
            return Err(ProcessError::permanent("poison"));
        }
        self.processed.fetch_add(1, Ordering::Relaxed);
        Ok(Outputs::none())
    }

    async fn process_batch(
        &self,
        messages: Vec<Message<String>>,
        ctx: &Context,
    ) -> Vec<Result<Outputs<String>, ProcessError>> {
        let offsets: Vec<i64> = messages.iter().map(Message::offset).collect();
        self.batches.lock().unwrap().push(offsets);
        let payloads: Vec<String> = messages.into_iter().map(Message::into_payload).collect();
        let first_time = self.flaky_failed.load(Ordering::Relaxed) == 0;
        let results = ctx
            .compute_parallel(move || {
                payloads
                    .par_iter()
                    .map(|p| match p.as_str() {
                        "poison" => Err(ProcessError::permanent("poison")),
                        "flaky" if first_time => Err(ProcessError::msg("flaky")),
                        digits => Ok(digits.bytes().map(u64::from).sum::<u64>()),
                    })
                    .collect::<Vec<_>>()
            })
            .await
            .expect("no panic");
        results
            .into_iter()
            .map(|r| {
                r.map(|_| {
                    self.processed.fetch_add(1, Ordering::Relaxed);
                    Outputs::none()
                })
                .inspect_err(|e| {
                    if e.to_string() == "flaky" {
                        self.flaky_failed.fetch_add(1, Ordering::Relaxed);
                    }
                })
            })
            .collect()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batches_commit_per_message_outcome() {
    let mut config = Config::from_loader(
        Config::loader_for::<Summer>()
            .no_file()
            .env::<&str, &str>([])
            .set("kafka.brokers", "embedded")
            .set("kafka.embedded_partitions", 1)
            .set("kafka.commit_interval", "100ms")
            .set("worker.batch_size", 16)
            .set("worker.batch_timeout", "50ms")
            .set("worker.retry.initial_backoff", "10ms"),
    )
    .unwrap();
    let broker = config.start_embedded().unwrap().expect("embedded broker");
    let bootstrap = broker.bootstrap_servers().to_owned();
    let sink = KafkaSink::new(&config.kafka).unwrap();
    // 100 numbers, one flaky and one poison among them.
    let mut deliveries = Vec::new();
    for i in 0..100u32 {
        let payload = match i {
            37 => "flaky".to_owned(),
            61 => "poison".to_owned(),
            n => n.to_string(),
        };
        let record = Record::new(payload).with_topic("numbers");
        deliveries.push(sink.produce(record).await);
    }
    for d in deliveries {
        d.await.unwrap();
    }

    let summer = std::sync::Arc::new(Summer::default());
    let instance = KafkaWorker::builder(summer.clone())
        .config(config)
        .build()
        .unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let run = tokio::spawn(instance.run(async {
        let _ = stopped.await;
    }));
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while committed_total(&bootstrap, "summer", "numbers", 1) != Some(100) {
        assert!(
            tokio::time::Instant::now() < deadline,
            "not everything committed"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    stop.send(()).unwrap();
    let summary = run.await.unwrap().unwrap();

    let batches = summer.batches.lock().unwrap().clone();
    assert!(
        batches.iter().all(|b| !b.is_empty() && b.len() <= 16),
        "{batches:?}"
    );
    assert!(
        batches.iter().any(|b| b.len() > 1),
        "messages were batched: {batches:?}"
    );
    let offsets: Vec<i64> = batches.concat();
    assert!(
        offsets.windows(2).all(|w| w[0] < w[1]),
        "batches in offset order: {batches:?}"
    );
    assert_eq!(offsets.len(), 100, "each message in exactly one batch");
    assert_eq!(summer.flaky_failed.load(Ordering::Relaxed), 1);
    assert_eq!(
        summer.processed.load(Ordering::Relaxed),
        99,
        "the flaky one on its retry"
    );
    assert_eq!(summary.processed, 100, "99 processed and one dead-lettered");
    assert_eq!(
        high_total(&bootstrap, "numbers.dlq", 1),
        1,
        "the poison one"
    );
}
