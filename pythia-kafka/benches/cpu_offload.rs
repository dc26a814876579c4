//! CPU offload: the same per-message CPU work done three ways on a topic of
//! one partition (fewer partitions than cores, so only the pool can spread the
//! work):
//!
//! - **inline**: on the lane's task, one message at a time (`ordering = "partition"`);
//! - **compute**: `Context::compute` per message with `ordering = "none"`
//!   (work measured below `worker.compute_inline_below` runs inline);
//! - **batch**: `batch_size` messages at a time, spread over the pool with
//!   `Context::compute_parallel` and rayon's `par_iter`.
//!
//! Prints messages per second each way and each pooled way's speedup over
//! inline, for work of about 1 µs, 10 µs, 100 µs and 1 ms per message.
//!
//! `cargo bench -p pythia-kafka --bench cpu_offload` (`BENCH_SCALE` multiplies
//! the message counts; `BENCH_WORK_US=10` runs one case).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use rayon::prelude::*;

use pythia_kafka::core::Record;
use pythia_kafka::{
    Config, ConfigLoader, Context, EmbeddedBroker, KafkaSink, KafkaWorker, Message, Outputs,
    Process, ProcessError, Raw, Worker,
};

/// Messages per batch in the batch mode.
const BATCH: usize = 1024;

/// Where a message's CPU work runs.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Mode {
    /// On the lane's task, one message at a time (`ordering = "partition"`).
    Inline,
    /// `Context::compute` per message, messages in parallel (`ordering = "none"`).
    Compute,
    /// Batches of one partition (`batch_size`), spread over the pool with
    /// `Context::compute_parallel` and `par_iter`.
    Batch,
}

/// Spends `work` of CPU per message, where `mode` says.
struct Spin {
    work: Duration,
    mode: Mode,
    done: AtomicU64,
}

fn spin(work: Duration) -> u64 {
    let until = Instant::now() + work;
    let mut x = 1u64;
    while Instant::now() < until {
        for _ in 0..16 {
            x = x
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
        }
    }
    std::hint::black_box(x)
}

impl Worker for Spin {
    type Codec = Raw;
}

impl Process for Spin {
    type Input = bytes::Bytes;
    type Output = ();

    async fn process(
        &self,
        _: Message<bytes::Bytes>,
        ctx: &Context,
    ) -> Result<Outputs<()>, ProcessError> {
        let work = self.work;
        match self.mode {
            Mode::Compute => {
                ctx.compute(move || spin(work)).await?;
            }
            Mode::Inline | Mode::Batch => {
                spin(work);
            }
        }
        self.done.fetch_add(1, Ordering::Relaxed);
        Ok(Outputs::none())
    }

    async fn process_batch(
        &self,
        messages: Vec<Message<bytes::Bytes>>,
        ctx: &Context,
    ) -> Vec<Result<Outputs<()>, ProcessError>> {
        let (n, work) = (messages.len(), self.work);
        let spun = ctx
            .compute_parallel(move || messages.par_iter().map(|_| spin(work)).sum::<u64>())
            .await;
        self.done.fetch_add(n as u64, Ordering::Relaxed);
        (0..n)
            .map(|_| match &spun {
                Ok(_) => Ok(Outputs::none()),
                Err(error) => Err(ProcessError::msg(error)),
            })
            .collect()
    }
}

/// Messages per second for `n` messages of `work` each.
async fn measure(broker: &EmbeddedBroker, topic: &str, n: u64, work: Duration, mode: Mode) -> f64 {
    broker.create_topic(topic, 1).expect("topic");
    let (ordering, batch_size) = match mode {
        Mode::Inline => ("partition", 1),
        Mode::Compute => ("none", 1),
        Mode::Batch => ("partition", BATCH),
    };
    let config = Config::from_loader(
        ConfigLoader::new()
            .no_file()
            .env::<&str, &str>([])
            .set("kafka.brokers", broker.bootstrap_servers())
            .set("kafka.group", topic)
            .set("kafka.topics", topic)
            .set("kafka.group_protocol", "consumer")
            .set("worker.ordering", ordering)
            .set("worker.batch_size", batch_size as i64)
            .set("worker.batch_timeout", "5ms")
            .set("worker.max_in_flight", 2048)
            .set("worker.partition_buffer", 5000)
            .set("worker.dead_letter.enabled", false),
    )
    .expect("config");
    let mut config = config;
    // Connected by address, so set what `kafka.brokers = "embedded"` would.
    let (name, value) = pythia_kafka::EMBEDDED_FETCH_WAIT;
    config.kafka.consumer.set(name, value);
    // Big producer batches: the mock returns one batch per partition per fetch,
    // which would otherwise cap one partition near 10k msg/s whatever the work.
    config
        .kafka
        .producer
        .set("linger.ms", "50")
        .set("batch.num.messages", "10000")
        .set("batch.size", "1000000");
    let sink = KafkaSink::new(&config.kafka).expect("producer");
    let mut deliveries = Vec::new();
    for i in 0..n {
        let record = Record::new(i.to_le_bytes().to_vec()).with_topic(topic);
        deliveries.push(sink.produce(record).await);
    }
    for d in deliveries {
        d.await.expect("delivered");
    }
    let worker = Arc::new(Spin {
        work,
        mode,
        done: AtomicU64::new(0),
    });
    let instance = KafkaWorker::builder(worker.clone())
        .config(config)
        .build()
        .expect("worker");
    let stop = tokio_util::sync::CancellationToken::new();
    let run = tokio::spawn(instance.run(stop.clone().cancelled_owned()));
    // Timed from the first message processed to the last.
    while worker.done.load(Ordering::Relaxed) == 0 {
        tokio::time::sleep(Duration::from_micros(200)).await;
    }
    let started = Instant::now();
    let first = worker.done.load(Ordering::Relaxed);
    while worker.done.load(Ordering::Relaxed) < n {
        tokio::time::sleep(Duration::from_micros(500)).await;
    }
    let rate = (n - first) as f64 / started.elapsed().as_secs_f64();
    stop.cancel();
    run.await.expect("joined").expect("clean run");
    rate
}

#[tokio::main]
async fn main() {
    let cores = std::thread::available_parallelism().map_or(1, usize::from);
    let scale: f64 = std::env::var("BENCH_SCALE")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1.0);
    let broker = EmbeddedBroker::start().expect("embedded broker");
    println!(
        "cores={cores} partitions=1 batch_size={BATCH} (inline: ordering=partition; compute: ordering=none + Context::compute; batch: process_batch + compute_parallel + par_iter)"
    );
    println!(
        "{:>8} {:>8} {:>12} {:>12} {:>12} {:>9} {:>9}",
        "work", "messages", "inline/s", "compute/s", "batch/s", "compute×", "batch×"
    );
    // BENCH_WORK_US=10 runs only the 10 µs case (for profiling one of them).
    let only: Option<u64> = std::env::var("BENCH_WORK_US")
        .ok()
        .and_then(|s| s.parse().ok());
    let cases = [(1, 100_000), (10, 40_000), (100, 6_000), (1_000, 1_000)];
    for (micros, n) in cases {
        if only.is_some_and(|only| only != micros) {
            continue;
        }
        let n = ((n as f64) * scale).max(BATCH as f64 * 4.0) as u64;
        let work = Duration::from_micros(micros);
        let topic = |mode: Mode| format!("{mode:?}-{micros}").to_lowercase();
        let inline = measure(&broker, &topic(Mode::Inline), n, work, Mode::Inline).await;
        let compute = measure(&broker, &topic(Mode::Compute), n, work, Mode::Compute).await;
        let batch = measure(&broker, &topic(Mode::Batch), n, work, Mode::Batch).await;
        println!(
            "{micros:>6}µs {n:>8} {inline:>12.0} {compute:>12.0} {batch:>12.0} {:>8.2}x {:>8.2}x",
            compute / inline,
            batch / inline
        );
    }
}
