//! CPU offload: the same per-message CPU work done inline on the async task
//! (one partition, in order) against `Context::compute` on the rayon pool
//! (`ordering = "none"`), on a topic with fewer partitions than cores, so only
//! the pool can spread the work. Prints messages per second both ways and the
//! speedup, for work of about 1 µs, 10 µs, 100 µs and 1 ms per message.
//!
//! `cargo bench -p pythia-kafka --bench cpu_offload` (`BENCH_SCALE` multiplies
//! the message counts).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use pythia_kafka::core::{Record, Sink};
use pythia_kafka::{
    Config, ConfigLoader, Context, EmbeddedBroker, KafkaSink, KafkaWorker, Message, Outputs,
    Process, ProcessError, Raw, Worker,
};

/// Spends `work` of CPU per message, inline or on the pool.
struct Spin {
    work: Duration,
    offload: bool,
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
        if self.offload {
            ctx.compute(move || spin(work)).await?;
        } else {
            spin(work);
        }
        self.done.fetch_add(1, Ordering::Relaxed);
        Ok(Outputs::none())
    }
}

/// Messages per second for `n` messages of `work` each.
async fn measure(
    broker: &EmbeddedBroker,
    topic: &str,
    n: u64,
    work: Duration,
    offload: bool,
) -> f64 {
    broker.create_topic(topic, 1).expect("topic");
    let ordering = if offload { "none" } else { "partition" };
    let config = Config::from_loader(
        ConfigLoader::new()
            .no_file()
            .env::<&str, &str>([])
            .set("kafka.brokers", broker.bootstrap_servers())
            .set("kafka.group", topic)
            .set("kafka.topics", topic)
            .set("kafka.group_protocol", "consumer")
            .set("worker.ordering", ordering)
            .set("worker.max_in_flight", 512)
            .set("worker.partition_buffer", 5000)
            .set("worker.dead_letter.enabled", false),
    )
    .expect("config");
    let mut config = config;
    // The mock broker answers fetches only at this deadline.
    config.kafka.consumer.set("fetch.wait.max.ms", "10");
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
        deliveries.push(sink.send(record).await.expect("send"));
    }
    for d in deliveries {
        d.await.expect("delivered");
    }
    let worker = Arc::new(Spin {
        work,
        offload,
        done: AtomicU64::new(0),
    });
    let instance = KafkaWorker::shared(worker.clone(), config).expect("worker");
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
        "cores={cores} partitions=1 (pool: ordering=none, Context::compute; inline: ordering=partition)"
    );
    println!(
        "{:>8} {:>8} {:>14} {:>14} {:>8}",
        "work", "messages", "inline msg/s", "pool msg/s", "speedup"
    );
    let cases = [(1, 40_000), (10, 20_000), (100, 4_000), (1_000, 800)];
    for (micros, n) in cases {
        let n = ((n as f64) * scale).max(100.0) as u64;
        let work = Duration::from_micros(micros);
        let inline = measure(&broker, &format!("inline-{micros}"), n, work, false).await;
        let pool = measure(&broker, &format!("pool-{micros}"), n, work, true).await;
        println!(
            "{:>6}µs {n:>8} {inline:>14.0} {pool:>14.0} {:>7.2}x",
            micros,
            pool / inline
        );
    }
}
