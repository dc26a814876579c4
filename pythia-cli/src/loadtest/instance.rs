//! One instance of a load test: a Pythia worker process that reports what it
//! processed to the `pythia loadtest` process that started it.
//!
//! It is configured like any worker (`PYTHIA_*` variables, which the load test
//! sets) and speaks a line protocol on stdout:
//!
//! - `assigned <n>` whenever the number of partitions it holds changes;
//! - `done <id> <latency_us>` for every message processed, `id` being the load
//!   test's message number (the payload's first 8 bytes) and the latency measured
//!   from the message's create time;
//! - `bad <partition> <offset>` for a message that carries no id.
//!
//! With `kafka.output_topic` set (`PYTHIA_KAFKA__OUTPUT_TOPIC`), each message
//! is also sent there unchanged, so a test can count outputs from outside.
//!
//! It stops (drains, commits, leaves the group) when its stdin closes, or on
//! SIGTERM / SIGINT.

use std::io::{Read, Write};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::Context as _;
use bytes::Bytes;
use pythia_kafka::{Config, ConfigLoader, Context, KafkaWorker, Message, Outputs, Process};
use pythia_kafka::{ProcessError, Raw, Worker};

use super::work::Work;

/// How often reports are written to the load test.
const FLUSH_EVERY: Duration = Duration::from_millis(20);

/// The hidden `pythia loadtest-worker` command.
#[derive(clap::Args, Debug)]
pub(crate) struct Args {
    /// Simulated work per message.
    #[arg(long, value_parser = Work::parse, default_value = "noop")]
    work: Work,
    /// Run the classic rdkafka poll loop instead of a Pythia worker.
    #[arg(long)]
    raw: bool,
}

/// Lines for the load test, written in batches by a flushing thread.
#[derive(Default)]
pub(crate) struct Reporter {
    buffer: Mutex<Vec<u8>>,
}

impl Reporter {
    pub(crate) fn line(&self, args: std::fmt::Arguments<'_>) {
        let mut buffer = self.buffer.lock().unwrap_or_else(|p| p.into_inner());
        let _ = buffer.write_fmt(args);
    }

    /// Writes what is buffered; false when the load test stopped reading.
    pub(crate) fn flush(&self) -> bool {
        let batch = std::mem::take(&mut *self.buffer.lock().unwrap_or_else(|p| p.into_inner()));
        if batch.is_empty() {
            return true;
        }
        let mut stdout = std::io::stdout().lock();
        stdout
            .write_all(&batch)
            .and_then(|()| stdout.flush())
            .is_ok()
    }
}

struct LoadWorker {
    work: Work,
    /// Send each message on to `kafka.output_topic`.
    forward: bool,
    reporter: Arc<Reporter>,
}

// By hand, with no spec: the load test configures everything by variables.
impl Worker for LoadWorker {
    type Codec = Raw;
}

impl Process for LoadWorker {
    type Input = Bytes;
    type Output = Bytes;

    async fn process(
        &self,
        msg: Message<Bytes>,
        _: &Context,
    ) -> Result<Outputs<Bytes>, ProcessError> {
        self.work.run().await;
        let payload = msg.payload();
        match payload.get(..8) {
            Some(id) => {
                let id = u64::from_le_bytes(id.try_into().unwrap_or_default());
                let created_us = msg.timestamp_ms().unwrap_or_default().saturating_mul(1000);
                let latency_us = now_us().saturating_sub(created_us).max(0);
                self.reporter.line(format_args!("done {id} {latency_us}\n"));
            }
            None => self
                .reporter
                .line(format_args!("bad {} {}\n", msg.partition(), msg.offset())),
        }
        Ok(if self.forward {
            Outputs::one(payload.clone())
        } else {
            Outputs::none()
        })
    }
}

pub(crate) fn now_us() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_micros() as i64)
        .unwrap_or_default()
}

/// Runs the instance until its stdin closes or a signal arrives.
pub(crate) fn run(args: Args) -> anyhow::Result<()> {
    if args.raw {
        return super::raw::run(args.work);
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(serve(args))
}

async fn serve(args: Args) -> anyhow::Result<()> {
    let config = Config::from_loader(ConfigLoader::new().default_value("worker.name", "loadtest"))?;
    let reporter = Arc::new(Reporter::default());
    let worker = LoadWorker {
        work: args.work,
        forward: config.kafka.output_topic.is_some(),
        reporter: reporter.clone(),
    };
    let instance = KafkaWorker::builder(worker).config(config).build()?;
    let mut status = instance.status();

    let flusher = {
        let reporter = reporter.clone();
        std::thread::spawn(move || {
            while Arc::strong_count(&reporter) > 1 {
                std::thread::sleep(FLUSH_EVERY);
                if !reporter.flush() {
                    break;
                }
            }
            reporter.flush();
        })
    };
    // The load test closes our stdin to stop us (or dies, which closes it too).
    let (stdin_closed, closed) = tokio::sync::oneshot::channel::<()>();
    std::thread::spawn(move || {
        let mut sink = [0u8; 64];
        let mut stdin = std::io::stdin().lock();
        while matches!(stdin.read(&mut sink), Ok(n) if n > 0) {}
        let _ = stdin_closed.send(());
    });
    let assignments = {
        let reporter = reporter.clone();
        tokio::spawn(async move {
            loop {
                let held = status.borrow_and_update().assigned.len();
                reporter.line(format_args!("assigned {held}\n"));
                reporter.flush();
                if status.changed().await.is_err() {
                    break;
                }
            }
        })
    };
    let result = instance
        .run(async {
            tokio::select! {
                _ = closed => {}
                () = pythia_kafka::core::shutdown::signal() => {}
            }
        })
        .await;
    assignments.abort();
    let _ = assignments.await;
    drop(reporter);
    let _ = flusher.join();
    result?;
    Ok(())
}
