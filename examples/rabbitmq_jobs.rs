//! RabbitMQ jobs: a `jobs` work queue shared by two worker instances with
//! prefetch 10; each job writes one document keyed by its `job_id`, so a job
//! delivered twice (a producer retry, or a redelivery after a crash) is
//! written once.
//!
//! Needs RabbitMQ (by default on 127.0.0.1:5672, guest/guest):
//!
//! ```text
//! cargo run --release --example rabbitmq_jobs
//! ```
//!
//! Set `PYTHIA_RABBITMQ__URL=amqp://user:password@host:5672/%2f` for another
//! broker, `PYTHIA_RABBITMQ__QUEUE` for another queue (the demo empties it
//! It enqueues 2,000 jobs plus 20 sent twice, and ends with a line like
//! `enqueued=2020 processed=2020 documents=2000 duplicates=20
//! per_instance=[1013,1007] stale=0 elapsed_ms=…` (`stale`: jobs an
//! interrupted earlier run left in the queue, taken and not written).
//!
//! The document store here is a map in the process, shared by both
//! instances, so the example needs nothing but RabbitMQ; in production the
//! same line is an idempotent write to a shared store (Redis
//! `SET <job_id> <document> NX`, or a Postgres upsert on `job_id`), and the
//! message is acknowledged only after it returns.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use pythia_kafka::core::Record;
use pythia_kafka::core::connector::{Receipt, Sink};
use pythia_rabbitmq::prelude::*;
use pythia_rabbitmq::{RabbitSink, RabbitWorker};
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

const JOBS: u64 = 2_000;
/// Every this many jobs, one is enqueued twice.
const RESENT_EVERY: u64 = 100;

#[derive(Debug, Serialize, Deserialize)]
struct Job {
    /// Which run of the demo enqueued it: jobs an interrupted earlier run
    /// left in the queue are taken and counted apart, not written.
    run: u32,
    job_id: String,
    customer: u64,
}

/// The documents written, by job id: insert if absent.
#[derive(Default)]
struct Documents {
    by_job: Mutex<HashMap<String, String>>,
    duplicates: AtomicU64,
}

impl Documents {
    /// Writes the document of `job` unless it exists; false if it did.
    fn write_once(&self, job: &Job) -> bool {
        let mut by_job = self.by_job.lock().unwrap_or_else(|p| p.into_inner());
        if by_job.contains_key(&job.job_id) {
            self.duplicates.fetch_add(1, Ordering::Relaxed);
            return false;
        }
        let document = format!(
            r#"{{"job_id":"{}","customer":{}}}"#,
            job.job_id, job.customer
        );
        by_job.insert(job.job_id.clone(), document);
        true
    }

    fn len(&self) -> usize {
        self.by_job.lock().unwrap_or_else(|p| p.into_inner()).len()
    }
}

/// Writes each job's document once; counts the jobs it handled.
#[derive(Worker)]
#[pythia(topic = "jobs", max_in_flight = 64)]
struct JobWriter {
    run: u32,
    documents: Arc<Documents>,
    processed: Arc<AtomicU64>,
    stale: Arc<AtomicU64>,
}

impl Process for JobWriter {
    type Input = Job;
    type Output = ();

    async fn process(
        &self,
        msg: Message<Job>,
        _ctx: &Context,
    ) -> Result<Outputs<()>, ProcessError> {
        if msg.payload().run != self.run {
            self.stale.fetch_add(1, Ordering::Relaxed);
            return Ok(Outputs::none());
        }
        // The write of a real job: some I/O.
        tokio::time::sleep(Duration::from_millis(2)).await;
        self.documents.write_once(msg.payload());
        self.processed.fetch_add(1, Ordering::Relaxed);
        Ok(Outputs::none())
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    pythia_rabbitmq::init_tracing();
    let config =
        pythia_rabbitmq::Config::for_worker::<JobWriter>().context("loading the configuration")?;
    let queue = config.rabbitmq.queue.clone().unwrap_or_default();

    // The producer: publishes to the queue itself, with confirms.
    let producer_config = pythia_rabbitmq::Config::from_loader(
        pythia_rabbitmq::Config::loader_for::<JobWriter>().set("rabbitmq.output", queue.as_str()),
    )?;
    let producer = RabbitSink::new(&producer_config, "rabbitmq-jobs-producer");

    let run = std::process::id();
    let stale = Arc::new(AtomicU64::new(0));
    let documents = Arc::new(Documents::default());
    let counters: Vec<Arc<AtomicU64>> = (0..2).map(|_| Arc::default()).collect();
    let stop = CancellationToken::new();
    let mut instances = Vec::new();
    for (i, processed) in counters.iter().enumerate() {
        let worker = JobWriter {
            run,
            documents: documents.clone(),
            processed: processed.clone(),
            stale: stale.clone(),
        };
        let mut instance_config = config.clone();
        instance_config.worker.instance = Some(format!("jobs-{i}"));
        let instance = RabbitWorker::builder(worker)
            .config(instance_config)
            .build()?;
        let mut status = instance.status();
        let stop = stop.clone();
        instances.push(tokio::spawn(async move {
            instance.run(stop.cancelled_owned()).await
        }));
        // Consuming (and the queue declared) before the jobs go in.
        tokio::time::timeout(
            Duration::from_secs(30),
            status.wait_for(|s| !s.assigned.is_empty()),
        )
        .await
        .context("the worker did not start consuming within 30 s: does RabbitMQ run?")??;
    }

    let started = Instant::now();
    let mut confirmations = Vec::new();
    for id in 0..JOBS {
        let job = Job {
            run,
            job_id: format!("job-{id}"),
            customer: id % 97,
        };
        let payload = serde_json::to_vec(&job)?;
        let copies = if id % RESENT_EVERY == 0 { 2 } else { 1 };
        for _ in 0..copies {
            let (receipt, confirmed) = Receipt::channel();
            let record = Record::new(payload.clone()).with_key(job.job_id.clone());
            producer.send(record, receipt).await;
            confirmations.push(confirmed);
        }
    }
    let enqueued = confirmations.len() as u64;
    for confirmed in confirmations {
        confirmed
            .await
            .context("a job was not confirmed by the broker")?;
    }

    let total = || {
        counters
            .iter()
            .map(|c| c.load(Ordering::Relaxed))
            .sum::<u64>()
    };
    let deadline = Instant::now() + Duration::from_secs(120);
    while total() < enqueued {
        if Instant::now() > deadline {
            bail!("only {} of {enqueued} jobs processed in 120 s", total());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let elapsed = started.elapsed();
    stop.cancel();
    for instance in instances {
        instance.await??;
    }
    producer.close().await;
    let per_instance: Vec<String> = counters
        .iter()
        .map(|c| c.load(Ordering::Relaxed).to_string())
        .collect();
    println!(
        "enqueued={enqueued} processed={} documents={} duplicates={} per_instance=[{}] stale={} elapsed_ms={}",
        total(),
        documents.len(),
        documents.duplicates.load(Ordering::Relaxed),
        per_instance.join(","),
        stale.load(Ordering::Relaxed),
        elapsed.as_millis()
    );
    Ok(())
}
