//! CPU-heavy work per message on the runtime's rayon pool: each order carries
//! a small grayscale image; the worker blurs it, hashes it and reports its mean
//! brightness. The work runs on `ctx.compute`, so the tokio threads that poll
//! Kafka and answer health checks stay free, and with `ordering = "none"` one
//! partition's images spread over every core.
//!
//! ```text
//! cargo run --release --example cpu_heavy
//! ```
//!
//! It ends with `produced=<n> processed=<n> cpu_threads=<t> ...` and fails if
//! any image was lost or hashed differently from a check done inline.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::ensure;
use pythia_examples::{produce, wait_until};
use pythia_kafka::KafkaSink;
use pythia_kafka::core::Record;
use pythia_kafka::prelude::*;
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

const SIDE: usize = 96;

#[derive(Serialize, Deserialize)]
struct Upload {
    id: u64,
    seed: u64,
}

/// The image of an upload: pseudo-random pixels from its seed.
fn image(seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    (0..SIDE * SIDE)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 56) as u8
        })
        .collect()
}

/// A 3×3 box blur, then an FNV-1a hash and the mean of the result.
fn analyse(pixels: &[u8]) -> (u64, f64) {
    let mut blurred = vec![0u8; pixels.len()];
    for y in 1..SIDE - 1 {
        for x in 1..SIDE - 1 {
            let mut sum = 0u32;
            for dy in 0..3 {
                for dx in 0..3 {
                    sum += pixels[(y + dy - 1) * SIDE + x + dx - 1] as u32;
                }
            }
            blurred[y * SIDE + x] = (sum / 9) as u8;
        }
    }
    let hash = blurred.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ *b as u64).wrapping_mul(0x100_0000_01b3)
    });
    let mean = blurred.iter().map(|b| *b as f64).sum::<f64>() / blurred.len() as f64;
    (hash, mean)
}

#[derive(Default, Worker)]
#[pythia(topic = "uploads", ordering = "none", max_in_flight = 256)]
struct Thumbnails {
    hashes: Mutex<BTreeMap<u64, u64>>,
}

impl Process for Thumbnails {
    type Input = Upload;
    type Output = ();

    async fn process(
        &self,
        msg: Message<Upload>,
        ctx: &Context,
    ) -> Result<Outputs<()>, ProcessError> {
        let upload = msg.into_payload();
        let (hash, _mean) = ctx.compute(move || analyse(&image(upload.seed))).await?;
        self.hashes
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(upload.id, hash);
        Ok(Outputs::none())
    }
}

const UPLOADS: u64 = 4_000;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    pythia_kafka::init_tracing();
    // One partition: only the pool spreads its work over the cores.
    let mut config = Config::from_loader(
        Config::loader_for::<Thumbnails>()
            .default_value("kafka.brokers", "embedded")
            .default_value("kafka.embedded_partitions", 1),
    )?;
    let _broker = config.start_embedded()?;
    let worker = Arc::new(Thumbnails::default());
    let instance = KafkaWorker::builder(worker.clone())
        .config(config.clone())
        .build()?;
    let mut status = instance.status();
    let stop = CancellationToken::new();
    let run = tokio::spawn(instance.run(stop.clone().cancelled_owned()));
    tokio::time::timeout(
        Duration::from_secs(30),
        status.wait_for(|s| !s.assigned.is_empty()),
    )
    .await??;

    let sink = KafkaSink::new(&config.kafka)?;
    let started = Instant::now();
    let records = (0..UPLOADS).map(|id| {
        let upload = Upload {
            id,
            seed: id.wrapping_mul(0x9E37_79B9_7F4A_7C15),
        };
        Record::new(serde_json::to_vec(&upload).expect("uploads serialize")).with_topic("uploads")
    });
    let produced = produce(&sink, records).await?;
    let done = || {
        worker
            .hashes
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .len() as u64
            >= produced
    };
    wait_until(Duration::from_secs(300), done).await?;
    let elapsed = started.elapsed();
    stop.cancel();
    let summary = run.await??;

    // The same work done inline agrees with what the pool computed.
    let hashes = worker
        .hashes
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .clone();
    let mismatched = (0..UPLOADS)
        .step_by(97)
        .filter(|id| {
            hashes.get(id) != Some(&analyse(&image(id.wrapping_mul(0x9E37_79B9_7F4A_7C15))).0)
        })
        .count();
    println!(
        "produced={produced} processed={} cpu_threads={} partitions=1 elapsed={:.2}s rate={:.0} images/s mismatched={mismatched}",
        summary.processed,
        std::thread::available_parallelism().map_or(1, usize::from),
        elapsed.as_secs_f64(),
        summary.processed as f64 / elapsed.as_secs_f64(),
    );
    ensure!(
        summary.processed == produced,
        "processed {} of {produced}",
        summary.processed
    );
    ensure!(
        mismatched == 0,
        "{mismatched} hashes differ from the inline check"
    );
    Ok(())
}
