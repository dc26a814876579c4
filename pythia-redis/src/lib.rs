//! Pythia's Redis connector: run a [`Worker`] on a Redis stream read in a
//! consumer group, or on a Redis list used as a reliable queue, the same
//! worker that runs on Kafka, with its `process` unchanged.
//!
//! ```no_run
//! use pythia_redis::prelude::*;
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
//!     // PYTHIA_REDIS__URL=redis://:password@redis:6379/0
//!     // PYTHIA_REDIS__MODE=list for a list instead of a stream
//!     RedisWorker::builder(Jobs).build()?.run_until_signal().await?;
//!     Ok(())
//! }
//! ```
//!
//! # How a worker declares its input
//!
//! The broker is chosen where the worker is run, not in the worker:
//! `RedisWorker::builder(worker)` runs it on Redis as
//! `KafkaWorker::builder(worker)` runs it on Kafka. The derive's `topic` is
//! the input stream (or list) and its `output` the stream (or list) of
//! outputs; `[redis]` settings (file < `PYTHIA_REDIS__*` variables < code)
//! override them (see [`RedisConfig`]). A `pythia.toml` may hold the other
//! connectors' sections too: each reads its own.
//!
//! # Streams
//!
//! With `redis.mode = "stream"` (the default) every instance is a consumer
//! of one consumer group (`redis.group`, the worker's name by default,
//! created with `MKSTREAM` from `redis.group_start` when missing) and reads
//! new entries with `XREADGROUP`, holding at most `redis.prefetch`
//! unacknowledged. An entry is acknowledged (`XACK`) only when it and its
//! outputs are done. The entries an instance holds stay in the group's
//! pending list under its consumer name; it renews them every third of
//! `redis.claim_idle` (`XCLAIM … JUSTID`), so a long job is never taken
//! from a live instance; when an instance dies, its entries go idle and
//! another instance claims them with `XAUTOCLAIM` after `claim_idle`. An
//! entry delivered more than `redis.max_deliveries` times goes to the
//! dead-letter stream instead. Outputs are added with `XADD` (capped with
//! `redis.output_maxlen`).
//!
//! # Lists
//!
//! With `redis.mode = "list"` the input is a list producers `LPUSH` to.
//! An instance moves each element it takes into a processing list of its
//! own (`BLMOVE … RIGHT LEFT`), removes it from there when done (`LREM`),
//! and keeps a heartbeat key alive; a reaper run by every instance moves
//! the processing lists of instances whose heartbeat expired back onto the
//! queue, in one Lua script. Outputs are pushed with `LPUSH`.
//!
//! # In the runtime
//!
//! Neither has partitions: the source reports the input as one partition
//! (`<input>/0`), and the default ordering is `none`, so the messages an
//! instance holds are processed at the same time. Failures follow the
//! worker's policy: retried in process (`worker.retry`), then added to the
//! dead-letter stream (`worker.dead_letter.topic`, `jobs.dlq` for `jobs`)
//! with the reason in the `pythia.dlq.*` fields, and acknowledged.
//!
//! A lost connection turns readiness false; the source reconnects with
//! backoff (`redis.reconnect_min` … `reconnect_max`), keeps what it holds
//! and takes again. On SIGTERM the instance stops taking, finishes and
//! acknowledges what it holds, and gives back what is left for the others.
//!
//! Metrics: the worker's own (`pythia_messages_total`, …) and the input's
//! (see [`metrics`]). The guide is `docs/redis.md`.

#![forbid(unsafe_code)]

mod builder;
mod config;
mod connection;
mod error;
pub mod fields;
pub mod metrics;
mod observe;
mod run;
mod sink;
mod source;

pub use builder::Builder;
pub use config::{Config, DEFAULT_URL, GroupStart, Mode, RedisConfig, RedisUrl};
pub use error::RedisError;
pub use run::RedisWorker;
pub use sink::RedisSink;
pub use source::{RedisAcker, RedisSource};

pub use pythia_core as core;
pub use pythia_core::{
    ConfigLoader, Context, Error, Json, Message, Output, Outputs, Process, ProcessError, Raw,
    RunSummary, Utf8, Worker,
};

/// What a worker's source file needs: `use pythia_redis::prelude::*;`.
pub mod prelude {
    pub use crate::{Config, RedisWorker};
    pub use pythia_core::{
        Context, Json, Message, Output, Outputs, Process, ProcessError, Raw, Utf8, Worker,
    };
}

/// The Redis guide's examples compile as doc tests.
#[doc = include_str!("../../docs/redis.md")]
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
