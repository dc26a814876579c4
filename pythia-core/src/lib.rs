//! Pythia's broker-agnostic core: the [`Worker`] trait a user implements, the
//! [`Message`] it receives, codecs, the [`Source`]/[`Sink`] traits connectors
//! implement, and the [`Runtime`] that runs ordered lanes per partition with
//! backpressure, at-least-once offset tracking and graceful shutdown.
//!
//! Most users depend on a connector such as `pythia-kafka`, which re-exports
//! what is needed here.
//!
//! The path of a message, module by module: [`source`] → [`runtime`] (routing,
//! backpressure) → lane (ordering) → [`codec`] (decode) → [`Worker::process`] →
//! [`sink`] (delivery) → [`offsets`] (what is safe to commit). Observing a run:
//! [`metrics`], [`health`], [`endpoint`] (the HTTP server for both), [`trace`].

pub mod codec;
pub mod config;
pub mod endpoint;
mod error;
pub mod health;
mod lane;
mod message;
pub mod metrics;
pub mod offsets;
pub mod runtime;
pub mod shutdown;
pub mod sink;
pub mod source;
pub mod trace;
mod worker;

pub use codec::{Json, Raw, Utf8};
pub use config::{ConfigError, ConfigLoader, WorkerConfig};
pub use error::Error;
pub use message::{Header, Headers, Message, PartitionId};
pub use metrics::Metrics;
pub use runtime::{Phase, RunSummary, Runtime, Status};
pub use sink::{NoSink, Record, Sink, SinkError};
pub use source::{Acker, Revocation, Source, SourceEvent};
pub use worker::{Context, ErrorKind, Output, Outputs, ProcessError, Worker};
