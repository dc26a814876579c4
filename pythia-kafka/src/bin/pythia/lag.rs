//! `pythia lag`: a group's lag read from the broker, printed once or exported.

use std::io::Write;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context as _;
use pythia_core::Metrics;
use pythia_core::connector::Endpoint;
use pythia_core::metrics::PartitionLag;
use pythia_kafka::{KafkaConfig, LagReader, lag_json};

#[derive(clap::Args)]
pub(crate) struct LagArgs {
    /// Bootstrap servers, host:port[,host:port].
    #[arg(long)]
    brokers: String,
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
    #[arg(long, value_name = "ADDR")]
    serve: Option<SocketAddr>,
    /// How often the exporter reads the lag.
    #[arg(long, default_value = "5s", value_parser = humantime_duration)]
    interval: Duration,
    /// Longest wait for one broker request.
    #[arg(long, default_value = "10s", value_parser = humantime_duration)]
    timeout: Duration,
}

fn humantime_duration(text: &str) -> Result<Duration, String> {
    humantime_serde::re::humantime::parse_duration(text)
        .map_err(|e| format!("`{text}` is not a duration like 5s or 500ms: {e}"))
}

pub(crate) async fn run(args: LagArgs) -> anyhow::Result<()> {
    let mut kafka = KafkaConfig::default();
    kafka.brokers = Some(args.brokers.clone());
    let mut reader =
        LagReader::new(&kafka, &args.group, args.timeout).context("creating the broker clients")?;
    let lags = reader.read(&args.topics, None).with_context(|| {
        format!(
            "reading the lag of group `{}` from {}",
            args.group, args.brokers
        )
    })?;
    let Some(address) = args.serve else {
        let mut stdout = std::io::stdout().lock();
        if args.json {
            writeln!(stdout, "{}", lag_json(&args.group, &lags))?;
        } else {
            print_table(&mut stdout, &args.group, &lags)?;
        }
        return Ok(());
    };

    let metrics = Metrics::new();
    let latest = Arc::new(Mutex::new(lags));
    publish(
        &metrics,
        &args.group,
        &[],
        &latest.lock().unwrap_or_else(|p| p.into_inner()),
    );
    let json = {
        let (latest, group) = (latest.clone(), args.group.clone());
        move || lag_json(&group, &latest.lock().unwrap_or_else(|p| p.into_inner())).to_string()
    };
    let bound = Endpoint::new(metrics.clone())
        .json("/lag", json)
        .bind(address, "--serve")?;
    let mut stdout = std::io::stdout().lock();
    writeln!(stdout, "serving={}", bound.local_addr())?;
    stdout.flush()?;
    drop(stdout);
    let _server = bound.spawn();
    let (group, topics, interval) = (args.group.clone(), args.topics.clone(), args.interval);
    let reading = tokio::task::spawn_blocking(move || {
        loop {
            std::thread::sleep(interval);
            match reader.read(&topics, None) {
                Ok(lags) => {
                    let mut latest = latest.lock().unwrap_or_else(|p| p.into_inner());
                    publish(&metrics, &group, &latest, &lags);
                    *latest = lags;
                }
                Err(error) => {
                    tracing::warn!(%error, "cannot read the lag; keeping the last values")
                }
            }
        }
    });
    tokio::select! {
        () = pythia_core::shutdown::signal() => {}
        _ = reading => {}
    }
    Ok(())
}

/// Sets the gauges of `now` and removes those of partitions that went away.
fn publish(metrics: &Metrics, group: &str, before: &[PartitionLag], now: &[PartitionLag]) {
    for old in before {
        if !now
            .iter()
            .any(|p| p.topic == old.topic && p.partition == old.partition)
        {
            metrics.remove_partition(group, &old.topic, old.partition);
        }
    }
    for lag in now {
        metrics.set_partition_lag(group, lag);
    }
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
