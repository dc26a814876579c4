//! What metrics cost: pass-through throughput (one output per input) on the
//! embedded broker with the metrics server off and on, alternating runs.
//!
//! `cargo bench -p pythia-kafka --bench metrics_cost` (`BENCH_MESSAGES`, `BENCH_ROUNDS`).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use pythia_kafka::{
    Config, ConfigLoader, Context, EmbeddedBroker, KafkaWorker, Message, Outputs, Process,
    ProcessError, Raw, Worker,
};
use rdkafka::ClientConfig;
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use tokio::sync::Notify;

const PARTITIONS: i32 = 8;

struct PassThrough {
    seen: AtomicU64,
    target: u64,
    done: Notify,
}

impl Worker for PassThrough {
    type Codec = Raw;
}

impl Process for PassThrough {
    type Input = Bytes;
    type Output = Bytes;

    async fn process(
        &self,
        msg: Message<Bytes>,
        _: &Context,
    ) -> Result<Outputs<Bytes>, ProcessError> {
        if self.seen.fetch_add(1, Ordering::Relaxed) + 1 == self.target {
            self.done.notify_one();
        }
        Ok(Outputs::one(msg.into_payload()))
    }
}

fn produce(bootstrap: &str, n: u64) {
    let producer: BaseProducer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("linger.ms", "20")
        .set("compression.type", "lz4")
        .create()
        .expect("producer");
    let payload = [b'x'; 100];
    for i in 0..n {
        let mut record = BaseRecord::<(), _>::to("in")
            .payload(&payload[..])
            .partition((i % PARTITIONS as u64) as i32);
        while let Err((_, back)) = producer.send(record) {
            record = back;
            producer.poll(Duration::from_millis(5));
        }
    }
    producer.flush(Duration::from_secs(120)).expect("flush");
}

/// Messages per second from the first assignment to the last message processed.
async fn run(bootstrap: &str, group: &str, n: u64, metrics: bool) -> f64 {
    let mut loader = ConfigLoader::new()
        .no_file()
        .env([("PYTHIA_KAFKA__CONSUMER__FETCH_WAIT_MAX_MS", "100")])
        .set("kafka.brokers", bootstrap)
        .set("kafka.group", group)
        .set("kafka.topics", "in")
        .set("kafka.output_topic", "out")
        .set("kafka.group_protocol", "consumer");
    if metrics {
        loader = loader.set("metrics.address", "127.0.0.1:0");
    }
    let config = Config::from_loader(loader).expect("config");
    let worker = Arc::new(PassThrough {
        seen: AtomicU64::new(0),
        target: n,
        done: Notify::new(),
    });
    let instance = KafkaWorker::shared(worker.clone(), config).expect("worker");
    let mut status = instance.status();
    let done = worker.clone();
    let run = tokio::spawn(instance.run(async move { done.done.notified().await }));
    status
        .wait_for(|s| !s.assigned.is_empty())
        .await
        .expect("assignment");
    let started = Instant::now();
    let summary = run.await.expect("join").expect("run");
    let elapsed = started.elapsed();
    assert!(summary.processed >= n, "{summary:?}");
    n as f64 / elapsed.as_secs_f64()
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

#[tokio::main]
async fn main() {
    let n: u64 = std::env::var("BENCH_MESSAGES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(200_000);
    let rounds: usize = std::env::var("BENCH_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(5);
    let broker =
        EmbeddedBroker::with_topics([("in", PARTITIONS), ("out", PARTITIONS)]).expect("broker");
    let bootstrap = broker.bootstrap_servers().to_owned();
    produce(&bootstrap, n);
    let (mut off, mut on) = (Vec::new(), Vec::new());
    for round in 0..rounds {
        // Alternate which goes first, so drift on a noisy machine hits both.
        for metrics in if round % 2 == 0 {
            [false, true]
        } else {
            [true, false]
        } {
            let rate = run(&bootstrap, &format!("bench-{round}-{metrics}"), n, metrics).await;
            println!(
                "round {round} metrics={} {rate:.0} msg/s",
                if metrics { "on" } else { "off" }
            );
            if metrics {
                on.push(rate)
            } else {
                off.push(rate)
            }
        }
    }
    let (off, on) = (median(off), median(on));
    println!(
        "messages={n} rounds={rounds} median off={off:.0} msg/s on={on:.0} msg/s difference={:+.1}%",
        (on - off) / off * 100.0
    );
}
