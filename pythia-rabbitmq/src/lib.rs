//! Pythia's RabbitMQ connector: run a [`Worker`] on a RabbitMQ work queue,
//! the same worker that runs on Kafka, with its `process` unchanged.
//!
//! ```no_run
//! use pythia_rabbitmq::prelude::*;
//!
//! #[derive(serde::Deserialize)]
//! struct Job { id: String }
//!
//! #[derive(Worker)]
//! #[pythia(topic = "jobs", output = "jobs.done")]
//! struct Jobs;
//!
//! impl Process for Jobs {
//!     type Input = Job;
//!     type Output = String;
//!
//!     async fn process(&self, msg: Message<Job>, _: &Context) -> Result<Outputs<String>, ProcessError> {
//!         Ok(Outputs::one(msg.payload().id.clone()))
//!     }
//! }
//!
//! #[tokio::main]
//! async fn main() -> Result<(), pythia_core::Error> {
//!     // PYTHIA_RABBITMQ__URL=amqp://user:password@rabbit:5672/%2f
//!     RabbitWorker::builder(Jobs).build()?.run_until_signal().await?;
//!     Ok(())
//! }
//! ```
//!
//! # How a worker declares its broker
//!
//! The broker is chosen where the worker is run, not in the worker:
//! `RabbitWorker::builder(worker)` runs it on RabbitMQ as
//! `KafkaWorker::builder(worker)` runs it on Kafka. The derive's `topic` is
//! the queue and its `output` the routing key of outputs; `[rabbitmq]`
//! settings (file < `PYTHIA_RABBITMQ__*` variables < code) override them
//! (see [`RabbitConfig`]). A binary that runs either picks the builder from
//! its own setting.
//!
//! Outputs need not go back to RabbitMQ: [`Builder::sink`] takes any sink,
//! such as `pythia_kafka::KafkaSink`, for a worker that consumes a queue and
//! produces to Kafka; dead letters then go through that sink too (the Kafka
//! topic `jobs.dlq` for queue `jobs`). A `pythia.toml` may hold both
//! `[rabbitmq]` and `[kafka]`: each connector reads its own section and
//! lets the other's be.
//!
//! # The queue in the runtime
//!
//! A queue has no partitions: the source reports the queue as one partition
//! (`<queue>/0`), and the default ordering is `none`, so the up to `prefetch`
//! (default 10) deliveries the broker sends each instance are processed at
//! the same time, and fair dispatch shares the queue among instances. Each
//! delivery gets an offset of the source's own (delivery tags restart with
//! each channel); a message is acknowledged (`basic.ack`) only when it and
//! its outputs are done, outputs being confirmed by the broker (publisher
//! confirms). What is not acknowledged when an instance dies, is stopped or
//! loses its connection goes back to the queue and is delivered again,
//! with the redelivered flag (header [`headers::REDELIVERED`]).
//!
//! Failures follow the worker's policy: retried in process
//! (`worker.retry`), then published to the dead-letter queue
//! (`worker.dead_letter.topic`, `jobs.dlq` for `jobs`) with the reason in
//! the `pythia.dlq.*` headers, and acknowledged. With dead letters off, a
//! failure stops the instance and its unacknowledged messages are requeued.
//!
//! A lost connection turns readiness false; the source reconnects with
//! backoff (`rabbitmq.reconnect_min` … `reconnect_max`) and consumes again.
//! On SIGTERM the instance stops taking messages, finishes and acknowledges
//! those in flight, cancels its consumer and closes.
//!
//! Metrics: the worker's own (`pythia_messages_total`, …) and the queue's
//! (see [`metrics`]). The guide is `docs/rabbitmq.md`.

#![forbid(unsafe_code)]

mod builder;
mod config;
mod error;
pub mod headers;
pub mod metrics;
mod observe;
mod run;
mod sink;
mod source;
mod topology;

pub use builder::Builder;
pub use config::{AmqpUrl, Config, DEFAULT_URL, QueueMode, RabbitConfig};
pub use error::RabbitError;
pub use run::RabbitWorker;
pub use sink::RabbitSink;
pub use source::{RabbitAcker, RabbitSource};

pub use pythia_core as core;
pub use pythia_core::{
    ConfigLoader, Context, Error, Json, Message, Output, Outputs, Process, ProcessError, Raw,
    RunSummary, Utf8, Worker,
};

/// What a worker's source file needs: `use pythia_rabbitmq::prelude::*;`.
pub mod prelude {
    pub use crate::{Config, RabbitWorker};
    pub use pythia_core::{
        Context, Json, Message, Output, Outputs, Process, ProcessError, Raw, Utf8, Worker,
    };
}

/// The RabbitMQ guide's examples compile as doc tests.
#[doc = include_str!("../../docs/rabbitmq.md")]
#[cfg(doctest)]
pub struct GuideDoctests;

/// Installs a human-readable log subscriber on stderr, filtered by `RUST_LOG`
/// (default `info`). Does nothing if a subscriber is already installed.
pub fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
}
