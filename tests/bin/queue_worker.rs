//! A worker process on a work queue, for the end-to-end tests of the queue
//! connectors' monitoring (`deploy_queue_monitoring.rs`).
//!
//! `pythia-queue-test-worker rabbitmq|redis|nats`, configured like any Pythia
//! worker on that broker (`PYTHIA_*` variables: `PYTHIA_RABBITMQ__QUEUE`,
//! `PYTHIA_REDIS__INPUT` and `PYTHIA_REDIS__MODE`, `PYTHIA_NATS__SUBJECT`,
//! `PYTHIA_METRICS__ADDRESS`, …), plus:
//! - `TEST_FAIL`: a payload whose `process` fails permanently, so it is
//!   dead-lettered;
//! - `TEST_SLOW_MS`: how long `process` sleeps on a payload starting with
//!   `slow` (a long job, for a test to stop its worker while it holds it).
//!
//! Payloads are raw bytes; the worker produces no outputs.

use std::time::Duration;

use bytes::Bytes;
use pythia_core::{Context, Message, Outputs, Process, ProcessError, Raw, Worker};

/// What the test asked the worker to do.
struct QueueWorker {
    fail: Option<Vec<u8>>,
    slow: Duration,
}

impl Worker for QueueWorker {
    type Codec = Raw;
}

impl Process for QueueWorker {
    type Input = Bytes;
    type Output = Bytes;

    async fn process(
        &self,
        msg: Message<Bytes>,
        _: &Context,
    ) -> Result<Outputs<Bytes>, ProcessError> {
        if self.fail.as_deref() == Some(&msg.payload()[..]) {
            return Err(ProcessError::permanent("the test asked this job to fail"));
        }
        if msg.payload().starts_with(b"slow") {
            tokio::time::sleep(self.slow).await;
        }
        Ok(Outputs::none())
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let broker = std::env::args().nth(1).unwrap_or_default();
    let worker = QueueWorker {
        fail: std::env::var("TEST_FAIL").ok().map(String::into_bytes),
        slow: match std::env::var("TEST_SLOW_MS") {
            Ok(ms) => Duration::from_millis(ms.parse()?),
            Err(_) => Duration::ZERO,
        },
    };
    let processed = match broker.as_str() {
        "rabbitmq" => {
            pythia_rabbitmq::RabbitWorker::builder(worker)
                .config(pythia_rabbitmq::Config::load()?)
                .build()?
                .run_until_signal()
                .await?
                .processed
        }
        "redis" => {
            pythia_redis::RedisWorker::builder(worker)
                .config(pythia_redis::Config::load()?)
                .build()?
                .run_until_signal()
                .await?
                .processed
        }
        "nats" => {
            pythia_nats::NatsWorker::builder(worker)
                .config(pythia_nats::Config::load()?)
                .build()?
                .run_until_signal()
                .await?
                .processed
        }
        other => anyhow::bail!("broker {other:?}: use rabbitmq, redis or nats"),
    };
    eprintln!("queue test worker done: processed={processed}");
    Ok(())
}
