//! One side of a benchmark round in a process of its own (`pythia
//! bench-side`, started by `pythia bench`): it reads the whole input topic in
//! a fresh group and prints one JSON line — its rate, its process's CPU time
//! per message, peak memory, and every client property it set.

use std::collections::BTreeMap;
use std::io::Write;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use pythia_kafka::{Config, ConfigLoader};
use rdkafka::ClientConfig;
use serde::{Deserialize, Serialize};

use super::progress::Progress;
use super::usage::Usage;
use super::{baseline, workers};

/// The longest one side may take.
const SIDE_TIMEOUT: Duration = Duration::from_secs(120);

/// What a side runs.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub(crate) enum Side {
    /// `BaseConsumer::poll` per message, librdkafka's defaults.
    Raw,
    /// Per-partition queues read in batches, librdkafka's defaults.
    Fastest,
    /// A pass-through worker with Pythia's defaults.
    Pythia,
    /// The classic loop producing one record per message.
    PipelineRaw,
    /// A one-stage Pythia pipeline with its defaults.
    PipelinePythia,
}

impl Side {
    pub(crate) const ALL: [Side; 5] = [
        Side::Raw,
        Side::Fastest,
        Side::Pythia,
        Side::PipelineRaw,
        Side::PipelinePythia,
    ];

    pub(crate) fn name(self) -> &'static str {
        match self {
            Self::Raw => "raw",
            Self::Fastest => "fastest",
            Self::Pythia => "pythia",
            Self::PipelineRaw => "pipeline-raw",
            Self::PipelinePythia => "pipeline-pythia",
        }
    }

    pub(crate) fn label(self) -> &'static str {
        match self {
            Self::Raw => "raw poll loop",
            Self::Fastest => "raw batch queues",
            Self::Pythia => "pythia pass-through",
            Self::PipelineRaw => "raw consume→produce",
            Self::PipelinePythia => "pythia pipeline",
        }
    }
}

/// Options of `pythia bench-side`.
#[derive(clap::Args, Debug)]
pub(crate) struct SideArgs {
    #[arg(long, value_enum)]
    side: Side,
    #[arg(long)]
    brokers: String,
    #[arg(long)]
    topic: String,
    #[arg(long)]
    output: String,
    #[arg(long)]
    group: String,
    #[arg(long)]
    messages: u64,
    #[arg(long)]
    partitions: i32,
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
    /// The consumer's client properties as set (librdkafka's defaults
    /// otherwise); secrets shown as `***`.
    pub(crate) consumer: BTreeMap<String, String>,
    /// The producer's, for the pipelines.
    #[serde(skip_serializing_if = "BTreeMap::is_empty", default)]
    pub(crate) producer: BTreeMap<String, String>,
}

/// Runs `pythia bench-side`.
pub(crate) fn run(args: SideArgs) -> anyhow::Result<()> {
    // The configuration a user's worker loads (pythia.toml, PYTHIA_*), so a
    // cluster's security settings reach every side.
    let config = Config::from_loader(
        ConfigLoader::new()
            .set("kafka.brokers", args.brokers.as_str())
            .set("kafka.group", args.group.as_str())
            .set("kafka.topics", args.topic.as_str())
            .set("kafka.output_topic", args.output.as_str())
            .set("worker.name", args.group.as_str()),
    )
    .context("loading the configuration")?;
    let progress = Arc::new(Progress::new(args.messages));
    let connection = crate::cluster::connection(&config.kafka)?;
    let (consumer, producer) = match args.side {
        Side::Raw | Side::Fastest | Side::PipelineRaw => {
            let consumer = baseline::consumer_config(&connection, &args.group);
            let producer = (args.side == Side::PipelineRaw).then(|| connection.clone());
            match args.side {
                Side::Raw => baseline::classic(&consumer, &args.topic, SIDE_TIMEOUT, &progress)?,
                Side::Fastest => baseline::fastest(
                    &consumer,
                    &args.topic,
                    args.partitions,
                    SIDE_TIMEOUT,
                    &progress,
                )?,
                _ => baseline::pipeline(
                    &consumer,
                    producer.as_ref().unwrap_or(&connection),
                    &args.topic,
                    &args.output,
                    SIDE_TIMEOUT,
                    progress.clone(),
                )?,
            }
            (consumer, producer)
        }
        Side::Pythia | Side::PipelinePythia => {
            let consumer = config.kafka.consumer_client_config(config.name())?;
            let producer = (args.side == Side::PipelinePythia)
                .then(|| config.kafka.producer_client_config())
                .transpose()?;
            // As `#[tokio::main]` builds it in a user's binary.
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()
                .context("starting the async runtime")?;
            runtime.block_on(async {
                if args.side == Side::Pythia {
                    workers::run(
                        workers::PassThrough,
                        &config,
                        SIDE_TIMEOUT,
                        progress.clone(),
                    )
                    .await
                } else {
                    workers::run(workers::Forward, &config, SIDE_TIMEOUT, progress.clone()).await
                }
            })?;
            (consumer, producer)
        }
    };
    let usage = progress.usage().unwrap_or_else(Usage::now);
    let measured = progress
        .measured()
        .with_context(|| format!("{} did not finish", args.side.label()))?;
    let report = SideReport {
        side: args.side,
        msgs_per_s: measured.msgs_per_s.round(),
        cpu_us_per_msg: round3(usage.cpu().as_secs_f64() * 1e6 / args.messages as f64),
        // Microseconds, as the kernel counts them.
        user_s: (usage.user_s * 1e6).round() / 1e6,
        system_s: (usage.system_s * 1e6).round() / 1e6,
        peak_rss_mib: round3(usage.peak_rss_mib),
        context_switches: usage.context_switches,
        consumer: shown(&consumer),
        producer: producer.as_ref().map(shown).unwrap_or_default(),
    };
    let mut stdout = std::io::stdout().lock();
    writeln!(stdout, "{}", serde_json::to_string(&report)?)?;
    stdout.flush()?;
    Ok(())
}

/// The properties as set, with secrets hidden.
fn shown(config: &ClientConfig) -> BTreeMap<String, String> {
    config
        .config_map()
        .into_iter()
        .map(|(name, value)| {
            let secret = name.ends_with("password") || name.ends_with("secret");
            (
                name.to_owned(),
                if secret {
                    "***".to_owned()
                } else {
                    value.to_owned()
                },
            )
        })
        .collect()
}

fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_are_not_shown() {
        let mut config = ClientConfig::new();
        config.set("sasl.password", "hunter2").set("group.id", "g");
        let shown = shown(&config);
        assert_eq!(shown["sasl.password"], "***");
        assert_eq!(shown["group.id"], "g");
    }

    #[test]
    fn a_report_reads_back_as_written() {
        let report = SideReport {
            side: Side::PipelineRaw,
            msgs_per_s: 1.0,
            cpu_us_per_msg: 0.5,
            user_s: 0.1,
            system_s: 0.2,
            peak_rss_mib: 60.0,
            context_switches: 7,
            consumer: BTreeMap::new(),
            producer: BTreeMap::new(),
        };
        let text = serde_json::to_string(&report).unwrap();
        assert!(text.contains("\"side\":\"pipeline-raw\""), "{text}");
        let back: SideReport = serde_json::from_str(&text).unwrap();
        assert_eq!(back.side, Side::PipelineRaw);
    }
}
