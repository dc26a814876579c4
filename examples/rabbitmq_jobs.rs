//! RabbitMQ jobs: a `jobs` work queue shared by worker instances with
//! prefetch 10. Each job writes one document keyed by its `job_id` to Redis
//! (`SET <namespace>:doc:<job_id> <document> NX`, with its counters, in one
//! script), so a job delivered twice (a producer retry, or a redelivery after
//! a crash) is written once; the message is acknowledged only after the write
//! returns.
//!
//! Needs RabbitMQ (127.0.0.1:5672, guest/guest) and Redis (127.0.0.1:6379):
//!
//! ```text
//! cargo run --release --example rabbitmq_jobs                       # the demo
//! cargo run --release --example rabbitmq_jobs -- worker             # one worker, until SIGTERM
//! cargo run --release --example rabbitmq_jobs -- enqueue 10000      # jobs for the workers
//! cargo run --release --example rabbitmq_jobs -- report             # what Redis holds
//! cargo run --release --example rabbitmq_jobs -- clear              # deletes it
//! ```
//!
//! The demo runs two instances in this process, enqueues 2,000 jobs plus 20
//! sent twice, and ends with a line like `enqueued=2020 processed=2020
//! documents=2000 duplicates=20 per_instance=[1013,1007] stale=0
//! elapsed_ms=…` (`stale`: jobs an interrupted earlier run left in the queue,
//! taken and not written); it deletes its Redis keys at the end. `worker`,
//! `enqueue` and `report` are the same pieces as processes of their own, as
//! `deploy/docker/docker-compose.yml` runs them (`docker compose --profile
//! rabbitmq up --scale jobs-worker=2`); `report` prints `documents=…
//! duplicates=… processed=…`.
//!
//! Settings: `PYTHIA_RABBITMQ__URL` (`amqp://user:password@host:5672/%2f`)
//! and `PYTHIA_RABBITMQ__QUEUE` as for any RabbitMQ worker; `JOBS_REDIS_URL`
//! (default `redis://127.0.0.1:6379`) and `JOBS_NAMESPACE` (default `jobs`;
//! the demo uses one of its own).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use pythia_kafka::core::Record;
use pythia_kafka::core::connector::{Receipt, Sink};
use pythia_rabbitmq::prelude::*;
use pythia_rabbitmq::{RabbitSink, RabbitWorker};
use redis::aio::ConnectionManager;
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

const JOBS: u64 = 2_000;
/// Every this many jobs, one is enqueued twice.
const RESENT_EVERY: u64 = 100;

/// Writes the document if absent and counts the job, atomically: KEYS are
/// the document, `processed`, `documents` and `duplicates`; returns 1 when
/// the document was written.
const WRITE_ONCE: &str = r"
if redis.call('SET', KEYS[1], ARGV[1], 'NX') then
  redis.call('INCR', KEYS[2]); redis.call('INCR', KEYS[3]); return 1
end
redis.call('INCR', KEYS[2]); redis.call('INCR', KEYS[4]); return 0
";

#[derive(Debug, Serialize, Deserialize)]
struct Job {
    /// Which run enqueued it: the demo takes jobs an interrupted earlier
    /// run left in the queue and counts them apart, not written.
    run: u32,
    job_id: String,
    customer: u64,
}

/// The document store: Redis, shared by every instance and process.
#[derive(Clone)]
struct Documents {
    redis: ConnectionManager,
    namespace: String,
}

/// What the store counted.
struct Counts {
    processed: u64,
    documents: u64,
    duplicates: u64,
}

impl Documents {
    async fn connect(namespace: String) -> anyhow::Result<Self> {
        let url =
            std::env::var("JOBS_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into());
        let client = redis::Client::open(url.as_str())
            .with_context(|| format!("JOBS_REDIS_URL={url} is not a Redis URL"))?;
        let redis = tokio::time::timeout(Duration::from_secs(10), ConnectionManager::new(client))
            .await
            .map_err(anyhow::Error::from)
            .and_then(|connected| connected.map_err(anyhow::Error::from))
            .with_context(|| format!("Redis does not answer at {url} (set JOBS_REDIS_URL)"))?;
        Ok(Self { redis, namespace })
    }

    fn key(&self, name: &str) -> String {
        format!("{}:{name}", self.namespace)
    }

    /// Writes the document of `job` unless one exists; false if it did.
    async fn write_once(&self, job: &Job) -> redis::RedisResult<bool> {
        let document = format!(
            r#"{{"job_id":"{}","customer":{}}}"#,
            job.job_id, job.customer
        );
        let written: i64 = redis::cmd("EVAL")
            .arg(WRITE_ONCE)
            .arg(4)
            .arg(self.key(&format!("doc:{}", job.job_id)))
            .arg(self.key("processed"))
            .arg(self.key("documents"))
            .arg(self.key("duplicates"))
            .arg(document)
            .query_async(&mut self.redis.clone())
            .await?;
        Ok(written == 1)
    }

    async fn counts(&self) -> redis::RedisResult<Counts> {
        let (processed, documents, duplicates): (Option<u64>, Option<u64>, Option<u64>) =
            redis::cmd("MGET")
                .arg(self.key("processed"))
                .arg(self.key("documents"))
                .arg(self.key("duplicates"))
                .query_async(&mut self.redis.clone())
                .await?;
        Ok(Counts {
            processed: processed.unwrap_or(0),
            documents: documents.unwrap_or(0),
            duplicates: duplicates.unwrap_or(0),
        })
    }

    /// Deletes every key of the namespace.
    async fn clear(&self) -> redis::RedisResult<()> {
        let mut redis = self.redis.clone();
        let pattern = self.key("*");
        let mut cursor = 0u64;
        loop {
            let (next, keys): (u64, Vec<String>) = redis::cmd("SCAN")
                .arg(cursor)
                .arg("MATCH")
                .arg(&pattern)
                .arg("COUNT")
                .arg(1000)
                .query_async(&mut redis)
                .await?;
            if !keys.is_empty() {
                redis::cmd("DEL")
                    .arg(keys)
                    .query_async::<()>(&mut redis)
                    .await?;
            }
            if next == 0 {
                return Ok(());
            }
            cursor = next;
        }
    }
}

/// Writes each job's document once; counts the jobs it handled.
#[derive(Worker)]
#[pythia(topic = "jobs", max_in_flight = 64)]
struct JobWriter {
    /// The demo's run: jobs of another run are stale. `None`: take all.
    run: Option<u32>,
    documents: Documents,
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
        if self.run.is_some_and(|run| msg.payload().run != run) {
            self.stale.fetch_add(1, Ordering::Relaxed);
            return Ok(Outputs::none());
        }
        // A failed write is retried, then the job dead-lettered: never acked
        // without its document.
        self.documents.write_once(msg.payload()).await?;
        self.processed.fetch_add(1, Ordering::Relaxed);
        Ok(Outputs::none())
    }
}

fn namespace() -> String {
    std::env::var("JOBS_NAMESPACE").unwrap_or_else(|_| "jobs".into())
}

/// Publishes `jobs` jobs (every RESENT_EVERY-th twice) with confirms;
/// returns how many messages went out.
async fn enqueue(config: &pythia_rabbitmq::Config, run: u32, jobs: u64) -> anyhow::Result<u64> {
    let queue = config.rabbitmq.queue.clone().unwrap_or_default();
    let producer_config = pythia_rabbitmq::Config::from_loader(
        pythia_rabbitmq::Config::loader_for::<JobWriter>().set("rabbitmq.output", queue.as_str()),
    )?;
    let producer = RabbitSink::new(&producer_config, "rabbitmq-jobs-producer");
    let mut confirmations = Vec::new();
    for id in 0..jobs {
        let job = Job {
            run,
            job_id: format!("job-{run}-{id}"),
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
    producer.close().await;
    Ok(enqueued)
}

/// Two instances in this process, the jobs, the summary.
async fn demo(config: pythia_rabbitmq::Config) -> anyhow::Result<()> {
    let run = std::process::id();
    let documents = Documents::connect(format!("pythia-example:jobs:{run}")).await?;
    let stale = Arc::new(AtomicU64::new(0));
    let counters: Vec<Arc<AtomicU64>> = (0..2).map(|_| Arc::default()).collect();
    let stop = CancellationToken::new();
    let mut instances = Vec::new();
    for (i, processed) in counters.iter().enumerate() {
        let worker = JobWriter {
            run: Some(run),
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
    let enqueued = enqueue(&config, run, JOBS).await?;
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
    let counts = documents.counts().await?;
    documents.clear().await?;
    let per_instance: Vec<String> = counters
        .iter()
        .map(|c| c.load(Ordering::Relaxed).to_string())
        .collect();
    println!(
        "enqueued={enqueued} processed={} documents={} duplicates={} per_instance=[{}] stale={} elapsed_ms={}",
        counts.processed,
        counts.documents,
        counts.duplicates,
        per_instance.join(","),
        stale.load(Ordering::Relaxed),
        elapsed.as_millis()
    );
    Ok(())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    pythia_rabbitmq::init_tracing();
    let config =
        pythia_rabbitmq::Config::for_worker::<JobWriter>().context("loading the configuration")?;
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.iter().map(String::as_str).collect::<Vec<_>>()[..] {
        [] => demo(config).await,
        ["worker"] => {
            let worker = JobWriter {
                run: None,
                documents: Documents::connect(namespace()).await?,
                processed: Arc::default(),
                stale: Arc::default(),
            };
            let summary = RabbitWorker::builder(worker)
                .config(config)
                .build()?
                .run_until_signal()
                .await?;
            println!("processed={}", summary.processed);
            Ok(())
        }
        ["enqueue", jobs] => {
            let jobs: u64 = jobs
                .parse()
                .with_context(|| format!("`enqueue {jobs}`: the count of jobs, e.g. 10000"))?;
            let enqueued = enqueue(&config, std::process::id(), jobs).await?;
            println!("enqueued={enqueued}");
            Ok(())
        }
        ["report"] => {
            let counts = Documents::connect(namespace()).await?.counts().await?;
            println!(
                "documents={} duplicates={} processed={}",
                counts.documents, counts.duplicates, counts.processed
            );
            Ok(())
        }
        ["clear"] => {
            Documents::connect(namespace()).await?.clear().await?;
            Ok(())
        }
        _ => bail!("usage: rabbitmq_jobs [worker | enqueue <jobs> | report | clear]"),
    }
}
