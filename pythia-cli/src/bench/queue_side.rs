//! One side of a queue benchmark round in a process of its own (`pythia
//! bench-queue-side`, started by `pythia bench --broker rabbitmq|redis-list|
//! redis-streams|nats`): it drains one pre-loaded queue and prints one JSON
//! line — its rate, its process's CPU time per message, peak memory and the
//! consumer settings it ran with.
//!
//! The broker's URL comes in the variable a worker reads
//! (`PYTHIA_RABBITMQ__URL`, `PYTHIA_REDIS__URL`, `PYTHIA_NATS__URL`), never
//! on the command line, where `ps` would show its password.

use std::collections::BTreeMap;
use std::io::Write;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context as _, bail};
use serde::{Deserialize, Serialize};

use pythia_kafka::core::WorkerConfig;
use pythia_kafka::core::connector::{Sink, Source};

use super::progress::Progress;
use super::usage::Usage;
use super::workers::{On, PassThrough};
use super::{nats, rabbit, redis, round3};
use crate::broker::BrokerKind;

/// The longest one side may take.
pub(crate) const SIDE_TIMEOUT: Duration = Duration::from_secs(300);

/// What a queue side runs.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub(crate) enum Side {
    /// The raw client loop, acknowledging each message after "processing" it.
    Raw,
    /// A pass-through worker on the broker's connector with its defaults.
    Pythia,
}

impl Side {
    pub(crate) const ALL: [Side; 2] = [Side::Raw, Side::Pythia];

    /// The name in the JSON, as the Kafka bench's `raw` and `pythia`.
    pub(crate) fn name(self) -> &'static str {
        match self {
            Self::Raw => "raw",
            Self::Pythia => "pythia",
        }
    }

    /// What the side is on `broker`, for a person.
    pub(crate) fn label(self, broker: BrokerKind) -> &'static str {
        match (self, broker) {
            (Self::Pythia, _) => "pythia pass-through",
            (Self::Raw, BrokerKind::Rabbitmq) => "raw lapin consumer",
            (Self::Raw, BrokerKind::RedisList) => "raw BLMOVE+LREM loop",
            (Self::Raw, BrokerKind::RedisStreams) => "raw XREADGROUP loop",
            (Self::Raw, BrokerKind::Nats) => "raw JetStream pull",
            (Self::Raw, BrokerKind::Kafka) => "raw poll loop",
        }
    }
}

/// Options of `pythia bench-queue-side`.
#[derive(clap::Args, Debug)]
pub(crate) struct QueueSideArgs {
    #[arg(long, value_enum)]
    broker: BrokerKind,
    #[arg(long, value_enum)]
    side: Side,
    #[arg(long)]
    queue: String,
    #[arg(long)]
    messages: u64,
    #[arg(long)]
    prefetch: u16,
}

/// What a side process drains, and how.
pub(crate) struct Drain {
    /// The queue, list, stream (and its subject) of the run.
    pub(crate) queue: String,
    pub(crate) prefetch: u16,
    pub(crate) timeout: Duration,
    pub(crate) progress: Arc<Progress>,
}

impl Drain {
    /// Runs a pass-through worker on `source` and `sink` until every
    /// message is acknowledged, then awaits `closing` (the sink's close).
    pub(crate) async fn pass_through<S: Source, K: Sink>(
        &self,
        config: &WorkerConfig,
        name: &str,
        source: S,
        sink: Arc<K>,
        closing: impl Future<Output = ()>,
    ) -> anyhow::Result<()> {
        let on = On {
            config: config.clone(),
            name,
            timeout: self.timeout,
        };
        let result = on
            .run(PassThrough, source, sink, self.progress.clone())
            .await;
        closing.await;
        result
    }
}

/// What one side measured, as it prints it.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(crate) struct SideReport {
    pub(crate) side: Side,
    pub(crate) msgs_per_s: f64,
    /// The process's CPU time (user + system, every thread) per message.
    pub(crate) cpu_us_per_msg: f64,
    pub(crate) user_s: f64,
    pub(crate) system_s: f64,
    pub(crate) peak_rss_mib: f64,
    pub(crate) context_switches: u64,
    /// Allocations through Rust's allocator per message, in the steady middle.
    pub(crate) allocs_per_msg: f64,
    /// The consumer's settings (prefetch, ack mode).
    pub(crate) consumer: BTreeMap<String, String>,
}

/// Runs `pythia bench-queue-side`.
pub(crate) fn run(args: QueueSideArgs) -> anyhow::Result<()> {
    let progress = Arc::new(Progress::new(args.messages));
    // As `#[tokio::main]` builds it in a user's binary, for both sides.
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    let drain = Drain {
        queue: args.queue,
        prefetch: args.prefetch,
        timeout: SIDE_TIMEOUT,
        progress: progress.clone(),
    };
    super::alloc::enable();
    let label = args.side.label(args.broker);
    let consumer = runtime.block_on(async {
        match args.broker {
            BrokerKind::Rabbitmq => rabbit::drain(args.side, &drain).await,
            BrokerKind::RedisList | BrokerKind::RedisStreams => {
                redis::drain(args.broker, args.side, &drain).await
            }
            BrokerKind::Nats => nats::drain(args.side, &drain).await,
            BrokerKind::Kafka => {
                bail!("bench-queue-side runs queues, not Kafka: see `pythia bench`")
            }
        }
    })?;
    let usage = progress.usage().unwrap_or_else(Usage::now);
    let measured = progress
        .measured()
        .with_context(|| format!("the {label} did not finish"))?;
    let report = SideReport {
        side: args.side,
        msgs_per_s: measured.msgs_per_s.round(),
        cpu_us_per_msg: round3(usage.cpu().as_secs_f64() * 1e6 / args.messages as f64),
        user_s: (usage.user_s * 1e6).round() / 1e6,
        system_s: (usage.system_s * 1e6).round() / 1e6,
        peak_rss_mib: round3(usage.peak_rss_mib),
        context_switches: usage.context_switches,
        allocs_per_msg: round3(measured.allocs_per_msg),
        consumer,
    };
    let mut stdout = std::io::stdout().lock();
    writeln!(stdout, "{}", serde_json::to_string(&report)?)?;
    stdout.flush()?;
    Ok(())
}

/// The pass-through worker's settings that matter here, as its
/// configuration has them.
pub(crate) fn worker_settings(config: &pythia_kafka::core::WorkerConfig) -> [(String, String); 2] {
    [
        (
            "worker.ordering".to_owned(),
            format!("{:?}", config.ordering).to_lowercase(),
        ),
        (
            "worker.max_in_flight".to_owned(),
            config.max_in_flight.to_string(),
        ),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_report_reads_back_as_written_with_the_kafka_side_names() {
        let report = SideReport {
            side: Side::Pythia,
            msgs_per_s: 1.0,
            cpu_us_per_msg: 0.5,
            user_s: 0.1,
            system_s: 0.2,
            peak_rss_mib: 20.0,
            context_switches: 7,
            allocs_per_msg: 3.0,
            consumer: BTreeMap::new(),
        };
        let text = serde_json::to_string(&report).unwrap();
        assert!(text.contains("\"side\":\"pythia\""), "{text}");
        let back: SideReport = serde_json::from_str(&text).unwrap();
        assert_eq!(back.side, Side::Pythia);
        assert_eq!(Side::Raw.name(), "raw");
    }

    #[test]
    fn raw_labels_say_which_loop_and_fit_the_column() {
        assert_eq!(Side::Raw.label(BrokerKind::Rabbitmq), "raw lapin consumer");
        for broker in [
            BrokerKind::Rabbitmq,
            BrokerKind::RedisList,
            BrokerKind::RedisStreams,
            BrokerKind::Nats,
        ] {
            for side in Side::ALL {
                assert!(side.label(broker).chars().count() <= 20, "{broker:?}");
            }
        }
        assert_ne!(
            Side::Raw.label(BrokerKind::RedisList),
            Side::Raw.label(BrokerKind::RedisStreams)
        );
    }
}
