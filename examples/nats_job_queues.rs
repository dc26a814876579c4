//! NATS job queues: three JetStream work queues, each with a worker pool of
//! its own concurrency, as a job system splits its work: `general` jobs 4 at
//! a time per worker, `cpu` jobs 2 (on the CPU pool), `io` jobs 8 (waiting on
//! a remote service). Every pool's instances share one durable pull consumer,
//! so each job goes to one instance; a job is acknowledged once done, and a
//! long one sends progress acknowledgements so it is not delivered again
//! while its worker lives.
//!
//! Needs NATS with JetStream (127.0.0.1:4222, `nats-server -js`):
//!
//! ```text
//! cargo run --release --example nats_job_queues                        # the demo
//! cargo run --release --example nats_job_queues -- worker io           # one pool's worker, until SIGTERM
//! cargo run --release --example nats_job_queues -- enqueue io 1000     # jobs for it
//! ```
//!
//! The demo runs the three pools in this process on subjects of their own,
//! publishes 200 jobs to each and ends with a line per queue, such as
//! `queue=io concurrency=8 processed=200 peak_in_flight=8 elapsed_ms=…`:
//! no pool ever ran more jobs at once than its concurrency. It deletes its
//! streams at the end. `worker` and `enqueue` are the same pieces as
//! processes of their own (`docker compose --profile nats up --scale
//! io-worker=3`).
//!
//! Settings: `PYTHIA_NATS__URL` (`nats://user:password@host:4222`) as for
//! any NATS worker; `JOBS_PREFIX` (default `jobs`) names the subjects
//! `<prefix>.general`, `<prefix>.cpu` and `<prefix>.io`.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use pythia_nats::core::Record;
use pythia_nats::core::connector::{Receipt, Sink};
use pythia_nats::prelude::*;
use pythia_nats::{NatsSink, NatsWorker};
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

const JOBS_PER_QUEUE: u64 = 200;

/// The queues and their worker pools' concurrency.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Queue {
    General,
    Cpu,
    Io,
}

impl Queue {
    const ALL: [Queue; 3] = [Queue::General, Queue::Cpu, Queue::Io];

    fn name(self) -> &'static str {
        match self {
            Self::General => "general",
            Self::Cpu => "cpu",
            Self::Io => "io",
        }
    }

    /// Jobs one worker of the pool runs at once.
    fn concurrency(self) -> usize {
        match self {
            Self::General => 4,
            Self::Cpu => 2,
            Self::Io => 8,
        }
    }

    fn parse(name: &str) -> anyhow::Result<Self> {
        Self::ALL
            .into_iter()
            .find(|q| q.name() == name)
            .with_context(|| format!("`{name}` is not a queue: general, cpu or io"))
    }
}

#[derive(Debug, Serialize, Deserialize)]
struct Job {
    job_id: u64,
    /// How much work: iterations for a CPU job, milliseconds otherwise.
    size: u64,
}

/// Jobs running now and the most that ran at once.
#[derive(Default)]
struct InFlight {
    now: AtomicUsize,
    peak: AtomicUsize,
    processed: AtomicU64,
}

impl InFlight {
    fn enter(&self) {
        let now = self.now.fetch_add(1, Ordering::SeqCst) + 1;
        self.peak.fetch_max(now, Ordering::SeqCst);
    }

    fn leave(&self) {
        self.now.fetch_sub(1, Ordering::SeqCst);
        self.processed.fetch_add(1, Ordering::Relaxed);
    }
}

/// One queue's worker: what a job does depends on its queue.
#[derive(Worker)]
#[pythia(topic = "jobs.general")]
struct JobRunner {
    queue: Queue,
    in_flight: Arc<InFlight>,
}

impl Process for JobRunner {
    type Input = Job;
    type Output = ();

    async fn process(&self, msg: Message<Job>, ctx: &Context) -> Result<Outputs<()>, ProcessError> {
        let size = msg.payload().size;
        self.in_flight.enter();
        match self.queue {
            Queue::Cpu => {
                ctx.compute(move || (0..size).fold(0u64, |h, i| h.rotate_left(5) ^ i))
                    .await?;
            }
            Queue::General | Queue::Io => tokio::time::sleep(Duration::from_millis(size)).await,
        }
        self.in_flight.leave();
        Ok(Outputs::none())
    }
}

fn prefix() -> String {
    std::env::var("JOBS_PREFIX").unwrap_or_else(|_| "jobs".into())
}

/// The configuration of `queue`'s pool under `prefix`.
fn pool_config(prefix: &str, queue: Queue) -> anyhow::Result<pythia_nats::Config> {
    let subject = format!("{prefix}.{}", queue.name());
    pythia_nats::Config::from_loader(
        pythia_nats::Config::loader_for::<JobRunner>()
            .set("worker.name", format!("{prefix}-{}", queue.name()))
            .set("nats.subject", subject.as_str())
            .set(
                "nats.consumer",
                format!("{prefix}-{}-workers", queue.name()),
            )
            .set("nats.concurrency", queue.concurrency() as i64),
    )
    .with_context(|| format!("the configuration of queue {}", queue.name()))
}

/// Publishes `jobs` jobs to `queue`'s subject, each acknowledged by JetStream.
async fn enqueue(config: &pythia_nats::Config, queue: Queue, jobs: u64) -> anyhow::Result<u64> {
    let mut producer_config = config.clone();
    producer_config.nats.output = producer_config.nats.subject.clone();
    let producer = NatsSink::new(&producer_config, "nats-job-queues-producer");
    let mut confirmations = Vec::new();
    for job_id in 0..jobs {
        let size = match queue {
            Queue::Cpu => 200_000,
            Queue::General => 2,
            Queue::Io => 20,
        };
        let (receipt, confirmed) = Receipt::channel();
        let payload = serde_json::to_vec(&Job { job_id, size })?;
        producer.send(Record::new(payload), receipt).await;
        confirmations.push(confirmed);
    }
    for confirmed in confirmations {
        confirmed
            .await
            .context("a job was not acknowledged by JetStream: does its stream exist (start a worker of the queue once)?")?;
    }
    producer.close().await;
    Ok(jobs)
}

/// The three pools in this process, their jobs, a line per queue.
async fn demo() -> anyhow::Result<()> {
    let prefix = format!("pythia-example-{}", std::process::id());
    let stop = CancellationToken::new();
    let mut pools = Vec::new();
    for queue in Queue::ALL {
        let config = pool_config(&prefix, queue)?;
        let in_flight = Arc::new(InFlight::default());
        let worker = JobRunner {
            queue,
            in_flight: in_flight.clone(),
        };
        let instance = NatsWorker::builder(worker).config(config.clone()).build()?;
        let mut status = instance.status();
        let stop = stop.clone();
        let task = tokio::spawn(async move { instance.run(stop.cancelled_owned()).await });
        // Consuming (its stream and consumer created) before the jobs go in.
        tokio::time::timeout(
            Duration::from_secs(30),
            status.wait_for(|s| !s.assigned.is_empty()),
        )
        .await
        .context("a pool did not start consuming within 30 s: does NATS run with JetStream?")??;
        pools.push((queue, config, in_flight, task));
    }
    let started = Instant::now();
    for (queue, config, ..) in &pools {
        enqueue(config, *queue, JOBS_PER_QUEUE).await?;
    }
    let deadline = Instant::now() + Duration::from_secs(120);
    for (queue, _, in_flight, _) in &pools {
        while in_flight.processed.load(Ordering::Relaxed) < JOBS_PER_QUEUE {
            if Instant::now() > deadline {
                bail!(
                    "queue {}: only {} of {JOBS_PER_QUEUE} jobs done in 120 s",
                    queue.name(),
                    in_flight.processed.load(Ordering::Relaxed)
                );
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    let elapsed = started.elapsed();
    stop.cancel();
    for (queue, config, in_flight, task) in pools {
        task.await??;
        delete_streams(&config).await?;
        println!(
            "queue={} concurrency={} processed={} peak_in_flight={} elapsed_ms={}",
            queue.name(),
            queue.concurrency(),
            in_flight.processed.load(Ordering::Relaxed),
            in_flight.peak.load(Ordering::SeqCst),
            elapsed.as_millis()
        );
    }
    Ok(())
}

/// Deletes the demo's stream of a pool and its dead-letter stream.
async fn delete_streams(config: &pythia_nats::Config) -> anyhow::Result<()> {
    let client = async_nats::connect(config.nats.url.expose())
        .await
        .with_context(|| format!("NATS does not answer at {}", config.nats.url))?;
    let jetstream = async_nats::jetstream::new(client);
    for stream in [
        config.nats.stream_name(),
        config.nats.dead_letter_stream_name(),
    ] {
        let _ = jetstream.delete_stream(&stream).await;
    }
    Ok(())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    pythia_nats::init_tracing();
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.iter().map(String::as_str).collect::<Vec<_>>()[..] {
        [] => demo().await,
        ["worker", queue] => {
            let queue = Queue::parse(queue)?;
            let worker = JobRunner {
                queue,
                in_flight: Arc::default(),
            };
            let summary = NatsWorker::builder(worker)
                .config(pool_config(&prefix(), queue)?)
                .build()?
                .run_until_signal()
                .await?;
            println!("processed={}", summary.processed);
            Ok(())
        }
        ["enqueue", queue, jobs] => {
            let queue = Queue::parse(queue)?;
            let jobs: u64 = jobs.parse().with_context(|| {
                format!(
                    "`enqueue {} {jobs}`: the count of jobs, e.g. 1000",
                    queue.name()
                )
            })?;
            let config = pool_config(&prefix(), queue)?;
            println!("enqueued={}", enqueue(&config, queue, jobs).await?);
            Ok(())
        }
        _ => bail!(
            "usage: nats_job_queues [worker <general|cpu|io> | enqueue <general|cpu|io> <jobs>]"
        ),
    }
}
