//! `pythia bench --in-process`: the older comparison, every side in this
//! process on one embedded broker, the raw loops with Pythia's client
//! settings and the workers with the embedded broker's tuning. It shows the
//! cost of the message path with the network and the defaults set aside;
//! the runs by address ([`super::address`]) are the comparison a user sees.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use pythia_kafka::{Config, ConfigLoader, EmbeddedBroker};
use rdkafka::consumer::{BaseConsumer, Consumer};
use serde::Serialize;

use super::progress::{Measured, Progress};
use super::side::Side;
use super::{Args, alloc, median, raw, round3, say, workers};
use crate::loadtest::load::{Load, Pace, Plan};

const INPUT: &str = "bench.in";
const OUTPUT: &str = "bench.out";
/// The longest a single run may take.
const RUN_TIMEOUT: Duration = Duration::from_secs(60);

/// What `--json` prints under `in_process`.
#[derive(Debug, Serialize)]
pub(crate) struct Report {
    raw_msgs_per_s: f64,
    pythia_msgs_per_s: f64,
    ratio: f64,
    pipeline_raw_msgs_per_s: f64,
    pipeline_pythia_msgs_per_s: f64,
    pipeline_ratio: f64,
    allocs_per_msg: f64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Variant {
    Raw,
    Pythia,
    PipelineRaw,
    PipelinePythia,
}

impl Variant {
    fn label(self) -> &'static str {
        match self {
            Self::Raw => "raw consumer",
            Self::Pythia => "pythia pass-through",
            Self::PipelineRaw => "raw consume→produce",
            Self::PipelinePythia => "pythia pipeline",
        }
    }

    fn side(self) -> Side {
        match self {
            Self::Raw => Side::Raw,
            Self::Pythia => Side::Pythia,
            Self::PipelineRaw => Side::PipelineRaw,
            Self::PipelinePythia => Side::PipelinePythia,
        }
    }
}

/// Runs the in-process rounds.
pub(crate) fn run(args: &Args) -> anyhow::Result<Report> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    let started = Instant::now();
    alloc::enable();
    let broker = EmbeddedBroker::start().context("starting the embedded broker")?;
    let mut config = Config::from_loader(
        ConfigLoader::new()
            .no_file()
            .env::<&str, &str>([])
            .set("kafka.brokers", "embedded")
            .set("kafka.group", "bench")
            .set("kafka.topics", INPUT)
            .set("kafka.output_topic", OUTPUT)
            .set("kafka.embedded_partitions", i64::from(args.partitions)),
    )?;
    config.use_embedded(&broker)?;
    if let Some(n) = args.max_in_flight {
        config.worker.max_in_flight = n as usize;
    }
    if let Some(n) = args.partition_buffer {
        config.worker.partition_buffer = n as usize;
    }
    preload(&config, args)?;
    say(
        args,
        format_args!(
            "in process: pre-loaded {} messages of {} B on {} partitions in {:.1} s",
            args.messages(),
            args.message_size,
            args.partitions,
            started.elapsed().as_secs_f64()
        ),
    );

    let mut results: Vec<(Variant, Measured)> = Vec::new();
    for round in 0..args.rounds {
        // Alternate which side goes first, so warm-up and drift favour neither.
        let pairs = if round % 2 == 0 {
            [
                [Variant::Raw, Variant::Pythia],
                [Variant::PipelineRaw, Variant::PipelinePythia],
            ]
        } else {
            [
                [Variant::Pythia, Variant::Raw],
                [Variant::PipelinePythia, Variant::PipelineRaw],
            ]
        };
        for variant in pairs.into_iter().flatten() {
            if !args.only.is_empty() && !args.only.contains(&variant.side()) {
                continue;
            }
            let group = format!("bench-{round}-{variant:?}");
            let measured = runtime.block_on(measure(variant, &config, &group, args.messages()))?;
            say(
                args,
                format_args!(
                    "in process: round {} {:<22} {:>10.0} msg/s",
                    round + 1,
                    variant.label(),
                    measured.msgs_per_s
                ),
            );
            results.push((variant, measured));
        }
    }
    let rate = |v: Variant| median(results.iter().filter(|r| r.0 == v).map(|r| r.1.msgs_per_s));
    let raw = rate(Variant::Raw);
    let pythia = rate(Variant::Pythia);
    let pipeline_raw = rate(Variant::PipelineRaw);
    let pipeline_pythia = rate(Variant::PipelinePythia);
    let allocs = median(
        results
            .iter()
            .filter(|r| r.0 == Variant::Pythia)
            .map(|r| r.1.allocs_per_msg),
    );
    let report = Report {
        raw_msgs_per_s: raw.round(),
        pythia_msgs_per_s: pythia.round(),
        ratio: round3(pythia / raw),
        pipeline_raw_msgs_per_s: pipeline_raw.round(),
        pipeline_pythia_msgs_per_s: pipeline_pythia.round(),
        pipeline_ratio: round3(pipeline_pythia / pipeline_raw),
        allocs_per_msg: round3(allocs),
    };
    drop(runtime);
    drop(broker);
    Ok(report)
}

/// Fills the input topic and checks the broker kept every message.
fn preload(config: &Config, args: &Args) -> anyhow::Result<()> {
    // lz4, as the runs by address: the embedded broker keeps about 5 MiB
    // per partition, which a million uncompressed messages overflow.
    let producer = config.kafka.producer_client_config()?;
    let load = Load::start(
        &producer,
        Plan {
            topic: INPUT.to_owned(),
            partitions: args.partitions,
            messages: args.messages(),
            message_size: args.message_size as usize,
            pace: Pace::Flat,
            warm_up: false,
        },
    )?;
    load.join()?;
    let consumer: BaseConsumer = config
        .kafka
        .consumer_client_config("bench-check")?
        .create()?;
    let mut total = 0;
    for partition in 0..args.partitions {
        let (low, high) = consumer.fetch_watermarks(INPUT, partition, Duration::from_secs(10))?;
        if low > 0 {
            bail!(
                "the embedded broker dropped the oldest messages of partition {partition} (it keeps about 5 MiB per partition): use fewer --messages, a smaller --message-size or more --partitions"
            );
        }
        total += high;
    }
    if total as u64 != args.messages() {
        bail!(
            "the input topic holds {total} messages, not {}",
            args.messages()
        );
    }
    Ok(())
}

/// One run of one variant in a fresh group.
async fn measure(
    variant: Variant,
    config: &Config,
    group: &str,
    messages: u64,
) -> anyhow::Result<Measured> {
    let mut config = config.clone();
    config.kafka.group = Some(group.to_owned());
    config.worker.name = Some(group.to_owned());
    let progress = Arc::new(Progress::new(messages));
    let interval = config.kafka.commit_interval;
    match variant {
        Variant::Pythia => {
            workers::run(workers::PassThrough, &config, RUN_TIMEOUT, progress.clone()).await?;
        }
        Variant::PipelinePythia => {
            workers::run(workers::Forward, &config, RUN_TIMEOUT, progress.clone()).await?;
        }
        Variant::Raw | Variant::PipelineRaw => {
            let consumer = config.kafka.consumer_client_config(group)?;
            let producer = config.kafka.producer_client_config()?;
            let progress = progress.clone();
            tokio::task::spawn_blocking(move || {
                if variant == Variant::Raw {
                    raw::consume(&consumer, INPUT, interval, RUN_TIMEOUT, &progress)
                } else {
                    raw::pipeline(
                        &consumer,
                        &producer,
                        INPUT,
                        OUTPUT,
                        interval,
                        RUN_TIMEOUT,
                        progress,
                    )
                }
            })
            .await
            .context("the raw loop panicked")??;
        }
    }
    progress
        .measured()
        .with_context(|| format!("{} did not finish", variant.label()))
}

/// The lines a person reads after the in-process rounds.
pub(crate) fn human(report: &Report) -> String {
    format!(
        "in process, medians of the rounds (one embedded broker, Pythia's client settings on both sides):\n  pass-through  raw {:.0} msg/s, pythia {:.0} msg/s, ratio {:.3}\n  pipeline      raw {:.0} msg/s, pythia {:.0} msg/s, ratio {:.3}\n  allocations   {:.3} per message in pythia's pass-through (Rust heap; librdkafka's C allocations are not counted)\n",
        report.raw_msgs_per_s,
        report.pythia_msgs_per_s,
        report.ratio,
        report.pipeline_raw_msgs_per_s,
        report.pipeline_pythia_msgs_per_s,
        report.pipeline_ratio,
        report.allocs_per_msg
    )
}
