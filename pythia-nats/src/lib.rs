//! Pythia's NATS connector: run a [`Worker`] on a NATS JetStream durable
//! pull consumer, the same worker that runs on Kafka or RabbitMQ, with its
//! `process` unchanged.
//!
//! ```no_run
//! use pythia_nats::prelude::*;
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
//!     // PYTHIA_NATS__URL=nats://user:password@nats:4222
//!     NatsWorker::builder(Jobs).build()?.run_until_signal().await?;
//!     Ok(())
//! }
//! ```
//!
//! # How a worker declares its broker
//!
//! The broker is chosen where the worker is run, not in the worker:
//! `NatsWorker::builder(worker)` runs it on NATS as
//! `KafkaWorker::builder(worker)` runs it on Kafka. The derive's `topic` is
//! the subject consumed and its `output` the subject of outputs; `[nats]`
//! settings (file < `PYTHIA_NATS__*` variables < code) override them (see
//! [`NatsConfig`]). A `pythia.toml` may also hold `[kafka]` or `[rabbitmq]`:
//! each connector reads its own section and lets the others be.
//!
//! # The consumer in the runtime
//!
//! The instances share one durable pull consumer (`nats.consumer`) on the
//! stream holding the subject (`nats.stream`), and the server hands each
//! message to one of them: work-queue semantics. The stream has no
//! partitions: the source reports the subject as one partition
//! (`<subject>/0`), and the default ordering is `none`, so the up to
//! `nats.concurrency` (default 4) messages an instance holds are processed
//! at the same time. A message is acknowledged (`+ACK`) only when it and
//! its outputs are done, outputs being confirmed by the server (PubAck);
//! while it is worked on, it is reported in progress (`+WPI`) every
//! `nats.progress_interval` (a third of `nats.ack_wait`), so a long job is
//! not handed to another instance. What an instance that dies held is
//! delivered again after `ack_wait`, with its delivery count (header
//! [`headers::DELIVERED`]). `nats.max_ack_pending` bounds what all
//! instances hold together.
//!
//! Failures follow the worker's policy: retried in process
//! (`worker.retry`), then published to the dead-letter subject
//! (`worker.dead_letter.topic`, `jobs.dlq` for `jobs`, in its own stream)
//! with the reason in the `pythia.dlq.*` headers, and acknowledged. A
//! message delivered `nats.max_deliver` times without an acknowledgement
//! (it crashed or stalled the instances that took it) is dead-lettered
//! unprocessed on its last delivery and terminated (`+TERM`).
//!
//! A lost connection turns readiness false; the client reconnects with
//! backoff (`nats.reconnect_min` … `reconnect_max`) and the source fetches
//! again. On SIGTERM the instance stops fetching, finishes and acknowledges
//! what it holds, gives back what it could not finish (`-NAK`) and closes.
//!
//! Metrics: the worker's own (`pythia_messages_total`, …) and the
//! consumer's (see [`metrics`]). The guide is `docs/nats.md`.

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
pub use config::{Config, Create, DEFAULT_URL, NatsConfig, NatsUrl};
pub use error::NatsError;
pub use run::NatsWorker;
pub use sink::NatsSink;
pub use source::{GIVEN_UP_KIND, NatsAcker, NatsSource};

pub use pythia_core as core;
pub use pythia_core::{
    ConfigLoader, Context, Error, Json, Message, Output, Outputs, Process, ProcessError, Raw,
    RunSummary, Utf8, Worker,
};

/// What a worker's source file needs: `use pythia_nats::prelude::*;`.
pub mod prelude {
    pub use crate::{Config, NatsWorker};
    pub use pythia_core::{
        Context, Json, Message, Output, Outputs, Process, ProcessError, Raw, Utf8, Worker,
    };
}

/// The NATS guide's examples compile as doc tests.
#[doc = include_str!("../../docs/nats.md")]
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

#[cfg(test)]
mod tests {
    fn send_sync<T: Send + Sync + 'static>() {}
    fn send<T: Send + 'static>() {}

    #[test]
    fn public_types_can_cross_threads() {
        send_sync::<crate::Config>();
        send_sync::<crate::NatsSink>();
        send_sync::<crate::NatsAcker>();
        send_sync::<crate::NatsError>();
        send::<crate::NatsSource>();
    }
}
