//! Pythia's Kafka connector: run a [`Worker`] as a member of a Kafka consumer
//! group, with an idempotent producer for its outputs and an in-process broker
//! for development.
//!
//! ```no_run
//! use pythia_kafka::prelude::*;
//!
//! #[derive(serde::Deserialize)]
//! struct Order { id: u64, amount_cents: u64 }
//!
//! #[derive(Worker)]
//! #[pythia(topic = "orders", output = "order-totals")]
//! struct Totals;
//!
//! impl Process for Totals {
//!     type Input = Order;
//!     type Output = u64;
//!
//!     async fn process(&self, msg: Message<Order>, _: &Context) -> Result<Outputs<u64>, ProcessError> {
//!         Ok(Outputs::one(msg.payload().amount_cents))
//!     }
//! }
//!
//! #[tokio::main]
//! async fn main() -> Result<(), pythia_kafka::Error> {
//!     // PYTHIA_KAFKA__BROKERS=host:9092, or "embedded" for an in-process broker
//!     Totals.run().await?;
//!     Ok(())
//! }
//! ```
//!
//! Start with the [README](https://github.com/pythia-rs/pythia#readme) and the
//! guide (`docs/guide.md`); `#[derive(Worker)]` documents each of its keys.
//!
//! Features: `ssl` (TLS with the system OpenSSL), `ssl-vendored` (OpenSSL
//! built in), `zstd` (zstd compression), `otel` (trace export over OTLP).

#![cfg_attr(docsrs, feature(doc_cfg))]
#![deny(clippy::undocumented_unsafe_blocks)]

mod admin;
mod builder;
mod config;
mod embedded;
mod error;
mod lag;
mod log;
mod observe;
mod otel;
mod pipeline;
mod produce;
mod queue;
mod replay;
mod run;
mod sink;
mod source;
pub mod testing;

pub use builder::Builder;
pub use config::{
    AssignmentStrategy, Config, EMBEDDED, GroupProtocol, KafkaConfig, Properties, Secret, Security,
};
pub use embedded::{EMBEDDED_SESSION_TIMEOUT, EmbeddedBroker, EmbeddedError};
pub use error::KafkaError;
pub use lag::{LagReader, lag_json};
pub use log::{LogConfig, LogFormat, Telemetry, init_logs, init_telemetry};
pub use otel::OtelConfig;
pub use pipeline::{Pipeline, PipelineBuilder, StageSummary};
pub use replay::{ReplayOptions, ReplaySummary, replay_dead_letters, replay_selected};
pub use run::{EMBEDDED_FETCH_WAIT, KafkaWorker, WorkerExt};
pub use sink::KafkaSink;
pub use source::{KafkaAcker, KafkaSource};

pub use pythia_core as core;
pub use pythia_core::{
    ConfigLoader, Context, Error, Json, Message, Output, Outputs, Phase, Process, ProcessError,
    Raw, RunSummary, Status, Utf8, Worker, WorkerSpec,
};

/// What a worker's source file needs: `use pythia_kafka::prelude::*;`.
pub mod prelude {
    pub use crate::{Config, KafkaWorker, Pipeline, WorkerExt};
    pub use pythia_core::{
        Context, Json, Message, Output, Outputs, Process, ProcessError, Raw, Utf8, Worker,
    };
}

/// The README's examples compile as doc tests.
#[doc = include_str!("../../README.md")]
#[cfg(doctest)]
pub struct ReadmeDoctests;

/// The guide's examples compile as doc tests.
#[doc = include_str!("../../docs/guide.md")]
#[cfg(doctest)]
pub struct GuideDoctests;

/// Installs a human-readable log subscriber on stderr, filtered by `RUST_LOG`
/// (default `info`; librdkafka's own logs come through at `warn`). Does nothing
/// if a subscriber is already installed. See [`init_logs`] for JSON logs.
pub fn init_tracing() {
    init_logs(&LogConfig::default());
}
