//! RabbitMQ to Kafka: a worker consumes the RabbitMQ work queue
//! `jobs-to-kafka` and produces each result to the Kafka topic
//! `jobs.results`; its `process` is the one it would have on either broker.
//! A job is acknowledged on RabbitMQ only once Kafka confirmed its result.
//!
//! Needs RabbitMQ (by default on 127.0.0.1:5672, guest/guest); Kafka is the
//! embedded broker unless `PYTHIA_KAFKA__BROKERS` names one:
//!
//! ```text
//! cargo run --release --example rabbitmq_to_kafka
//! ```
//!
//! It enqueues 1,000 jobs and one that is not JSON, and ends with a line like
//! `enqueued=1001 processed=1000 results=1000 dead_letters=1 elapsed_ms=…`:
//! the malformed job is dead-lettered through the worker's sink, so it lands
//! on the Kafka topic `jobs-to-kafka.dlq`, not on a RabbitMQ queue.
//!
//! Both connectors read the same `pythia.toml` and `PYTHIA_*` variables:
//! `[rabbitmq]` for the source, `[kafka]` for the sink; each lets the other's
//! section be.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use pythia_examples::{message_count, wait_until};
use pythia_kafka::KafkaSink;
use pythia_kafka::core::Record;
use pythia_kafka::core::connector::{Receipt, Sink};
use pythia_rabbitmq::prelude::*;
use pythia_rabbitmq::{RabbitSink, RabbitWorker};
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

const JOBS: u64 = 1_000;

#[derive(Debug, Serialize, Deserialize)]
struct Job {
    job_id: String,
    n: u64,
}

#[derive(Debug, Serialize, Deserialize)]
struct Squared {
    job_id: String,
    square: u64,
}

/// Squares each job's number; the result goes wherever the worker's sink
/// sends it (here: Kafka).
#[derive(Worker)]
#[pythia(topic = "jobs-to-kafka", output = "jobs.results", max_in_flight = 64)]
struct Squarer {
    processed: Arc<AtomicU64>,
}

impl Process for Squarer {
    type Input = Job;
    type Output = Squared;

    async fn process(
        &self,
        msg: Message<Job>,
        _ctx: &Context,
    ) -> Result<Outputs<Squared>, ProcessError> {
        let job = msg.payload();
        self.processed.fetch_add(1, Ordering::Relaxed);
        Ok(Outputs::one(Squared {
            job_id: job.job_id.clone(),
            square: job.n * job.n,
        }))
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    pythia_rabbitmq::init_tracing();
    // The source: [rabbitmq] (queue `jobs-to-kafka`, from the derive).
    let rabbit = pythia_rabbitmq::Config::for_worker::<Squarer>().context("loading [rabbitmq]")?;
    let queue = rabbit.rabbitmq.queue.clone().unwrap_or_default();

    // The sink: [kafka] (output topic `jobs.results`, from the derive). A
    // producer needs brokers only, not a group or input topics.
    let mut kafka: pythia_kafka::Config = pythia_kafka::Config::loader_for::<Squarer>()
        .default_value("kafka.brokers", "embedded")
        .load()
        .context("loading [kafka]")?;
    kafka.kafka.validate_clients()?;
    // Creates `jobs.results` on the embedded broker.
    let broker = kafka.start_embedded()?;
    let brokers = kafka.kafka.brokers.clone().unwrap_or_default();
    let results_topic = kafka.kafka.output_topic.clone().unwrap_or_default();
    // Dead letters go through the sink: to the Kafka topic `<queue>.dlq`.
    let dead_letter_topic = rabbit.worker.dead_letter.topic_for(&queue);
    if let Some(broker) = &broker {
        broker.create_topic(&dead_letter_topic, 1)?;
    }
    let results_before = message_count(&brokers, &results_topic)?;
    let dead_letters_before = message_count(&brokers, &dead_letter_topic)?;
    let sink = KafkaSink::new(&kafka.kafka)?;

    let processed = Arc::new(AtomicU64::new(0));
    let worker = Squarer {
        processed: processed.clone(),
    };
    let instance = RabbitWorker::builder(worker)
        .config(rabbit.clone())
        .sink(sink.clone())
        .build()?;
    let mut status = instance.status();
    let stop = CancellationToken::new();
    let running = tokio::spawn(instance.run(stop.clone().cancelled_owned()));
    // Consuming (and the queue declared) before the jobs go in.
    tokio::time::timeout(
        Duration::from_secs(30),
        status.wait_for(|s| !s.assigned.is_empty()),
    )
    .await
    .context("the worker did not start consuming within 30 s: does RabbitMQ run?")??;

    // The jobs, published to the queue with confirms.
    let producer_config = pythia_rabbitmq::Config::from_loader(
        pythia_rabbitmq::Config::loader_for::<Squarer>().set("rabbitmq.output", queue.as_str()),
    )?;
    let producer = RabbitSink::new(&producer_config, "rabbitmq-to-kafka-producer");
    let started = Instant::now();
    let mut confirmations = Vec::new();
    let jobs = (0..JOBS).map(|n| {
        serde_json::to_vec(&Job {
            job_id: format!("job-{n}"),
            n,
        })
    });
    for payload in jobs.chain([Ok(b"{not json".to_vec())]) {
        let (receipt, confirmed) = Receipt::channel();
        producer.send(Record::new(payload?), receipt).await;
        confirmations.push(confirmed);
    }
    let enqueued = confirmations.len() as u64;
    for confirmed in confirmations {
        confirmed
            .await
            .context("a job was not confirmed by RabbitMQ")?;
    }
    producer.close().await;

    let counts = || -> anyhow::Result<(i64, i64)> {
        Ok((
            message_count(&brokers, &results_topic)? - results_before,
            message_count(&brokers, &dead_letter_topic)? - dead_letters_before,
        ))
    };
    let mut last = (0, 0);
    wait_until(Duration::from_secs(120), || {
        last = counts().unwrap_or(last);
        last == (JOBS as i64, 1)
    })
    .await
    .with_context(|| format!("results and dead letters on Kafka: {last:?}"))?;
    let elapsed = started.elapsed();
    stop.cancel();
    running.await??;
    let (results, dead_letters) = counts()?;
    println!(
        "enqueued={enqueued} processed={} results={results} dead_letters={dead_letters} elapsed_ms={}",
        processed.load(Ordering::Relaxed),
        elapsed.as_millis()
    );
    Ok(())
}
