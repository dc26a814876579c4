//! One side of a RabbitMQ benchmark round in a process of its own (`pythia
//! bench-rabbit-side`, started by `pythia bench --broker rabbitmq`): it
//! drains one pre-loaded queue with manual acks at the given prefetch and
//! prints one JSON line — its rate, its process's CPU time per message, peak
//! memory and the consumer settings it ran with.
//!
//! The broker's URL comes in `PYTHIA_RABBITMQ__URL`, never on the command
//! line, where `ps` would show its password.

use std::collections::BTreeMap;
use std::io::Write;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context as _, bail};
use pythia_kafka::core::connector::{Health, Runtime};
use pythia_kafka::core::{ConfigLoader, WorkerSpec};
use pythia_rabbitmq::{RabbitSink, RabbitSource};
use serde::{Deserialize, Serialize};

use super::progress::{Counted, Progress};
use super::usage::Usage;
use super::{rabbit_raw, round3, workers};

/// The longest one side may take.
const SIDE_TIMEOUT: Duration = Duration::from_secs(300);

/// What a RabbitMQ side runs.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub(crate) enum RabbitSide {
    /// A lapin consumer acking each delivery after "processing" it.
    Raw,
    /// A pass-through worker on `pythia-rabbitmq` with its defaults.
    Pythia,
}

impl RabbitSide {
    pub(crate) const ALL: [RabbitSide; 2] = [RabbitSide::Raw, RabbitSide::Pythia];

    /// The name in the JSON, as the Kafka bench's `raw` and `pythia`.
    pub(crate) fn name(self) -> &'static str {
        match self {
            Self::Raw => "raw",
            Self::Pythia => "pythia",
        }
    }

    pub(crate) fn label(self) -> &'static str {
        match self {
            Self::Raw => "raw lapin consumer",
            Self::Pythia => "pythia pass-through",
        }
    }
}

/// Options of `pythia bench-rabbit-side`.
#[derive(clap::Args, Debug)]
pub(crate) struct RabbitSideArgs {
    #[arg(long, value_enum)]
    side: RabbitSide,
    #[arg(long)]
    queue: String,
    #[arg(long)]
    messages: u64,
    #[arg(long)]
    prefetch: u16,
}

/// What one side measured, as it prints it.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(crate) struct RabbitSideReport {
    pub(crate) side: RabbitSide,
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

/// Runs `pythia bench-rabbit-side`.
pub(crate) fn run(args: RabbitSideArgs) -> anyhow::Result<()> {
    let url = crate::rabbit::url(None)?;
    let progress = Arc::new(Progress::new(args.messages));
    // As `#[tokio::main]` builds it in a user's binary, for both sides.
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    super::alloc::enable();
    let mut consumer = BTreeMap::from([
        ("prefetch".to_owned(), args.prefetch.to_string()),
        (
            "ack".to_owned(),
            "manual, one basic.ack per message".to_owned(),
        ),
    ]);
    match args.side {
        RabbitSide::Raw => runtime.block_on(rabbit_raw::consume(
            &url,
            &args.queue,
            args.prefetch,
            SIDE_TIMEOUT,
            &progress,
        ))?,
        RabbitSide::Pythia => {
            let config =
                pythia_rabbitmq::Config::from_loader(pythia_rabbitmq::Config::spec_defaults(
                    ConfigLoader::new()
                        .no_file()
                        .set("rabbitmq.url", url.expose())
                        .set("rabbitmq.queue", args.queue.as_str())
                        .set("rabbitmq.prefetch", u64::from(args.prefetch))
                        .set("rabbitmq.queues", "expect")
                        .set("worker.name", "pythia-bench"),
                    &WorkerSpec::UNNAMED,
                ))
                .context("the pythia side's configuration")?;
            consumer.insert(
                "worker.ordering".to_owned(),
                format!("{:?}", config.worker.ordering).to_lowercase(),
            );
            consumer.insert(
                "worker.max_in_flight".to_owned(),
                config.worker.max_in_flight.to_string(),
            );
            runtime.block_on(pythia(&config, progress.clone()))?;
        }
    }
    let usage = progress.usage().unwrap_or_else(Usage::now);
    let measured = progress
        .measured()
        .with_context(|| format!("the {} did not finish", args.side.label()))?;
    let report = RabbitSideReport {
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

/// Runs the pass-through worker on the queue until `progress` is finished,
/// the way `RabbitWorker` runs it (RabbitMQ source and sink, the core
/// runtime), with every acknowledgement counted.
async fn pythia(config: &pythia_rabbitmq::Config, progress: Arc<Progress>) -> anyhow::Result<()> {
    let name = config.name().to_owned();
    let sink = Arc::new(RabbitSink::new(config, &format!("{name}-publisher")));
    let source = Counted {
        inner: RabbitSource::new(config, &name, Health::new()),
        progress: progress.clone(),
    };
    let runtime = Runtime::with_shared(
        config.worker.clone(),
        &name,
        Arc::new(workers::PassThrough),
        source,
        sink.clone(),
    );
    let until = progress.clone();
    let result = runtime
        .run(async move {
            let _ = tokio::time::timeout(SIDE_TIMEOUT, until.finished()).await;
        })
        .await;
    sink.close().await;
    result.context("the pythia worker failed")?;
    if !progress.is_finished() {
        bail!("the pythia worker did not finish within {SIDE_TIMEOUT:?}");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_report_reads_back_as_written_with_the_kafka_side_names() {
        let report = RabbitSideReport {
            side: RabbitSide::Pythia,
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
        let back: RabbitSideReport = serde_json::from_str(&text).unwrap();
        assert_eq!(back.side, RabbitSide::Pythia);
        assert_eq!(RabbitSide::Raw.name(), "raw");
    }
}
