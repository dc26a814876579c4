//! `pythia lag`: a group's lag read from the broker, printed once or exported.

mod exporter;

use std::io::Write;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use pythia_core::Metrics;
use pythia_core::connector::Endpoint;
use pythia_core::metrics::PartitionLag;
use pythia_kafka::{LagReader, lag_json};

use crate::cluster::ClusterArgs;
use exporter::Exporter;

#[derive(clap::Args)]
pub(crate) struct LagArgs {
    #[command(flatten)]
    cluster: ClusterArgs,
    /// The consumer group.
    #[arg(long)]
    group: String,
    /// A topic to report (repeatable); default: every topic the group has committed on.
    #[arg(long = "topic", value_name = "TOPIC")]
    topics: Vec<String>,
    /// Print JSON instead of a table.
    #[arg(long)]
    json: bool,
    /// Keep running as an exporter on ADDR (IP:PORT): /metrics and /lag.
    /// When a read fails, or none succeeds for two intervals, the lag series
    /// are dropped, pythia_lag_exporter_up is 0 and /lag answers 503.
    #[arg(long, value_name = "ADDR")]
    serve: Option<SocketAddr>,
    /// How often the exporter reads the lag.
    #[arg(long, default_value = "5s", value_parser = humantime_duration)]
    interval: Duration,
    /// Longest wait for one broker request.
    #[arg(long, default_value = "10s", value_parser = humantime_duration)]
    timeout: Duration,
}

pub(crate) fn humantime_duration(text: &str) -> Result<Duration, String> {
    humantime_serde::re::humantime::parse_duration(text)
        .map_err(|e| format!("`{text}` is not a duration like 5s or 500ms: {e}"))
}

pub(crate) async fn run(args: LagArgs) -> anyhow::Result<()> {
    let kafka = args.cluster.kafka()?;
    let brokers = ClusterArgs::brokers_of(&kafka).to_owned();
    let mut reader =
        LagReader::new(&kafka, &args.group, args.timeout).context("creating the broker clients")?;
    let Some(address) = args.serve else {
        let lags = reader
            .read(&args.topics, None)
            .with_context(|| format!("reading the lag of group `{}` from {brokers}", args.group))?;
        let mut stdout = std::io::stdout().lock();
        if args.json {
            writeln!(stdout, "{}", lag_json(&args.group, &lags))?;
        } else {
            print_table(&mut stdout, &args.group, &lags)?;
        }
        return Ok(());
    };

    let metrics = Metrics::new();
    let exporter = Arc::new(Exporter::new(metrics.clone(), &args.group, args.interval)?);
    // A first read before serving, so the first scrape has values; a broker
    // that does not answer yet is not fatal: the exporter reports it.
    let read = reader.read(&args.topics, None).map_err(|e| e.to_string());
    exporter.record(read, Instant::now());
    let bound = Endpoint::new(metrics)
        .merge(exporter.clone().router())
        .bind(address, "--serve")?;
    let mut stdout = std::io::stdout().lock();
    writeln!(stdout, "serving={}", bound.local_addr())?;
    stdout.flush()?;
    drop(stdout);
    let server = bound.spawn();
    let (topics, interval) = (args.topics.clone(), args.interval);
    let reads = exporter.clone();
    // Reads block (librdkafka calls): a thread of their own, not the
    // runtime's blocking pool, which would hold the exit up until the
    // endless loop returns.
    let (ended, reading) = tokio::sync::oneshot::channel::<()>();
    std::thread::Builder::new()
        .name("pythia-lag-reader".into())
        .spawn(move || {
            let _ended = ended;
            let mut last = Instant::now();
            loop {
                std::thread::sleep(interval.saturating_sub(last.elapsed()));
                last = Instant::now();
                let read = reader.read(&topics, None).map_err(|e| e.to_string());
                reads.record(read, Instant::now());
            }
        })
        .context("starting the lag reader")?;
    // Staleness moves on while a read hangs.
    let ticking = async {
        loop {
            tokio::time::sleep(Duration::from_millis(500)).await;
            exporter.refresh(Instant::now());
        }
    };
    tokio::select! {
        () = pythia_core::shutdown::signal() => {}
        _ = reading => {}
        () = ticking => {}
    }
    server.shutdown().await;
    Ok(())
}

fn print_table(out: &mut impl Write, group: &str, lags: &[PartitionLag]) -> std::io::Result<()> {
    writeln!(
        out,
        "{:<30} {:>9} {:>12} {:>12} {:>12} {:>10} {:>10}",
        "TOPIC", "PARTITION", "COMMITTED", "LOW", "HIGH", "LAG", "AGE"
    )?;
    for p in lags {
        writeln!(
            out,
            "{:<30} {:>9} {:>12} {:>12} {:>12} {:>10} {:>10}",
            p.topic,
            p.partition,
            p.committed.map_or("-".to_owned(), |c| c.to_string()),
            p.low_watermark,
            p.high_watermark,
            p.lag,
            p.lag_seconds.map_or("-".to_owned(), |s| format!("{s:.1}s")),
        )?;
    }
    writeln!(
        out,
        "group {group}: total lag {} over {} partitions",
        lags.iter().map(|p| p.lag).sum::<i64>(),
        lags.len()
    )
}
