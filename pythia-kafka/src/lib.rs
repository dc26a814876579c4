//! Pythia's Kafka connector: run a [`Worker`] as a member of a Kafka consumer
//! group, with an idempotent producer for its outputs and an in-process broker
//! for development.
//!
//! ```no_run
//! use pythia_kafka::{Config, Context, Json, Message, Outputs, ProcessError, Worker};
//!
//! #[derive(serde::Deserialize)]
//! struct Order { id: u64, amount_cents: u64 }
//!
//! struct Totals;
//!
//! impl Worker for Totals {
//!     type Input = Order;
//!     type Output = u64;
//!     type Codec = Json;
//!
//!     async fn process(&self, msg: Message<Order>, _: &Context) -> Result<Outputs<u64>, ProcessError> {
//!         Ok(Outputs::one(msg.payload().amount_cents))
//!     }
//! }
//!
//! #[tokio::main]
//! async fn main() -> Result<(), Box<dyn std::error::Error>> {
//!     // PYTHIA_KAFKA__BROKERS=host:9092 PYTHIA_KAFKA__GROUP=totals PYTHIA_KAFKA__TOPICS=orders
//!     pythia_kafka::run(Totals, Config::load()?).await?;
//!     Ok(())
//! }
//! ```

mod config;
mod embedded;
mod error;
mod lag;
mod log;
mod observe;
mod run;
mod sink;
mod source;

pub use config::{
    AssignmentStrategy, Config, EMBEDDED, GroupProtocol, KafkaConfig, Properties, Secret, Security,
};
pub use embedded::{EMBEDDED_SESSION_TIMEOUT, EmbeddedBroker, EmbeddedError};
pub use error::KafkaError;
pub use lag::{LagReader, lag_json};
pub use log::{LogConfig, LogFormat, init_logs};
pub use run::{EMBEDDED_FETCH_WAIT, KafkaWorker, run, run_shared, run_until};
pub use sink::{KafkaDelivery, KafkaSink};
pub use source::{KafkaAcker, KafkaSource};

pub use pythia_core as core;
pub use pythia_core::{
    ConfigLoader, Context, Json, Message, Output, Outputs, Phase, ProcessError, Raw, RunSummary,
    Status, Utf8, Worker,
};

/// The README's examples compile as doc tests.
#[doc = include_str!("../../README.md")]
#[cfg(doctest)]
pub struct ReadmeDoctests;

/// Installs a human-readable log subscriber on stderr, filtered by `RUST_LOG`
/// (default `info`; librdkafka's own logs come through at `warn`). Does nothing
/// if a subscriber is already installed. See [`init_logs`] for JSON logs.
pub fn init_tracing() {
    init_logs(&LogConfig::default());
}
