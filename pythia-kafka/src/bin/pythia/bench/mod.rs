//! `pythia bench`: Pythia against hand-written rdkafka loops, side by side on
//! one pre-loaded topic of an embedded broker.
//!
//! Each round runs (a) a raw consumer loop and a Pythia pass-through worker, and
//! (b) a raw consume → produce loop and a Pythia one-stage pipeline, alternating
//! which goes first; every run is a fresh group reading the whole topic. A run
//! is timed from its first finished message to its last, so joining the group
//! is not counted. Medians over the rounds are reported.

mod alloc;
mod progress;
mod raw;
mod workers;

use std::io::Write;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use pythia_kafka::{Config, ConfigLoader, EmbeddedBroker};
use rdkafka::consumer::{BaseConsumer, Consumer};
use serde::Serialize;

use crate::loadtest::load::{Load, Pace, Plan};
use progress::{Measured, Progress};

#[global_allocator]
static ALLOCATOR: alloc::Counting = alloc::Counting;

/// Options of `pythia bench`.
#[derive(clap::Args, Debug)]
pub(crate) struct Args {
    /// Messages pre-loaded and read by every run. The embedded broker keeps
    /// about 5 MiB per partition: raise --partitions with the count or the size.
    #[arg(long, default_value_t = 300_000, value_parser = clap::value_parser!(u64).range(1000..))]
    messages: u64,
    /// Bytes per message.
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u64).range(8..=100_000))]
    message_size: u64,
    /// Partitions of the input and output topics.
    #[arg(long, default_value_t = 8, value_parser = clap::value_parser!(i32).range(1..))]
    partitions: i32,
    /// Rounds; each runs all four variants once.
    #[arg(long, default_value_t = 9, value_parser = clap::value_parser!(u32).range(1..))]
    rounds: u32,
    /// The Pythia workers' worker.max_in_flight (default: the worker default).
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
    max_in_flight: Option<u64>,
    /// The Pythia workers' worker.partition_buffer (default: the worker default).
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
    partition_buffer: Option<u64>,
    /// Print one JSON object on stdout and nothing else.
    #[arg(long)]
    json: bool,
    /// Run only these variants (for profiling one of them).
    #[arg(long, hide = true, value_delimiter = ',')]
    only: Vec<VariantArg>,
}

#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
enum VariantArg {
    Raw,
    Pythia,
    PipelineRaw,
    PipelinePythia,
}

const INPUT: &str = "bench.in";
const OUTPUT: &str = "bench.out";
/// The longest a single run may take.
const RUN_TIMEOUT: Duration = Duration::from_secs(60);

/// What `--json` prints.
#[derive(Debug, Serialize)]
struct Report {
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
}

impl VariantArg {
    fn matches(self, variant: Variant) -> bool {
        matches!(
            (self, variant),
            (Self::Raw, Variant::Raw)
                | (Self::Pythia, Variant::Pythia)
                | (Self::PipelineRaw, Variant::PipelineRaw)
                | (Self::PipelinePythia, Variant::PipelinePythia)
        )
    }
}

/// Runs `pythia bench`.
pub(crate) fn run(args: Args) -> anyhow::Result<()> {
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
    preload(&config, &args)?;
    say(
        &args,
        format_args!(
            "pre-loaded {} messages of {} B on {} partitions in {:.1} s",
            args.messages,
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
            if !args.only.is_empty() && !args.only.iter().any(|v| v.matches(variant)) {
                continue;
            }
            let group = format!("bench-{round}-{variant:?}");
            let measured = runtime.block_on(measure(variant, &config, &group, args.messages))?;
            say(
                &args,
                format_args!(
                    "round {} {:<22} {:>10.0} msg/s",
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
    let mut stdout = std::io::stdout().lock();
    if args.json {
        writeln!(stdout, "{}", serde_json::to_string(&report)?)?;
    } else {
        writeln!(stdout, "medians of {} rounds:", args.rounds)?;
        writeln!(
            stdout,
            "  pass-through  raw {:.0} msg/s, pythia {:.0} msg/s, ratio {:.3}",
            report.raw_msgs_per_s, report.pythia_msgs_per_s, report.ratio
        )?;
        writeln!(
            stdout,
            "  pipeline      raw {:.0} msg/s, pythia {:.0} msg/s, ratio {:.3}",
            report.pipeline_raw_msgs_per_s,
            report.pipeline_pythia_msgs_per_s,
            report.pipeline_ratio
        )?;
        writeln!(
            stdout,
            "  allocations   {:.3} per message in pythia's pass-through (Rust heap; librdkafka's C allocations are not counted)",
            report.allocs_per_msg
        )?;
        writeln!(
            stdout,
            "  total time    {:.1} s",
            started.elapsed().as_secs_f64()
        )?;
    }
    Ok(())
}

/// Human lines go to stdout, or to stderr with `--json`.
fn say(args: &Args, line: std::fmt::Arguments<'_>) {
    if args.json {
        eprintln!("{line}");
    } else {
        println!("{line}");
    }
}

/// Fills the input topic and checks the broker kept every message.
fn preload(config: &Config, args: &Args) -> anyhow::Result<()> {
    let mut producer = config.kafka.producer_client_config()?;
    // Uncompressed: the runs then measure the clients, not lz4.
    producer.set("compression.type", "none");
    let load = Load::start(
        &producer,
        Plan {
            topic: INPUT.to_owned(),
            partitions: args.partitions,
            messages: args.messages,
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
    if total as u64 != args.messages {
        bail!(
            "the input topic holds {total} messages, not {}",
            args.messages
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

fn median(values: impl Iterator<Item = f64>) -> f64 {
    let mut values: Vec<f64> = values.collect();
    if values.is_empty() {
        return 0.0;
    }
    values.sort_by(f64::total_cmp);
    let mid = values.len() / 2;
    if values.len() % 2 == 1 {
        values[mid]
    } else {
        (values[mid - 1] + values[mid]) / 2.0
    }
}

fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

#[cfg(test)]
mod tests {
    use super::median;

    #[test]
    fn median_of_odd_and_even_counts() {
        assert_eq!(median([3.0, 1.0, 2.0].into_iter()), 2.0);
        assert_eq!(median([4.0, 1.0, 3.0, 2.0].into_iter()), 2.5);
        assert_eq!(median(std::iter::empty()), 0.0);
    }
}
