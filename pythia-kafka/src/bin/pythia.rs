//! The `pythia` command-line tool.

use std::io::Write;

use anyhow::Context as _;
use clap::{Parser, Subcommand};

// The subcommands' modules live in `pythia/`, beside this file.
#[path = "pythia/bench/mod.rs"]
mod bench;
#[path = "pythia/loadtest/mod.rs"]
mod loadtest;

#[derive(Parser)]
#[command(
    name = "pythia",
    version,
    about = "Pythia: Kafka stream-processing workers"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Host an embedded Kafka broker for other processes until SIGINT/SIGTERM.
    ///
    /// Prints `bootstrap=<host:port>` on stdout once it is ready; point workers at
    /// it with PYTHIA_KAFKA__BROKERS=<host:port>.
    Broker {
        /// A topic to create, as NAME:PARTITIONS (repeatable).
        #[arg(long = "topic", value_name = "NAME:PARTITIONS", value_parser = parse_topic)]
        topics: Vec<(String, i32)>,
    },
    /// Run worker processes in one group under a load and report throughput,
    /// latency, duplicates, losses and scaling efficiency.
    Loadtest(loadtest::Args),
    /// Compare raw rdkafka loops with Pythia workers on one pre-loaded topic.
    Bench(bench::Args),
    /// One instance of `pythia loadtest` (started by it).
    #[command(hide = true)]
    LoadtestWorker(loadtest::instance::Args),
}

fn parse_topic(spec: &str) -> Result<(String, i32), String> {
    let (name, partitions) = spec
        .rsplit_once(':')
        .ok_or_else(|| format!("`{spec}` is not NAME:PARTITIONS, e.g. orders:8"))?;
    if name.is_empty() {
        return Err(format!(
            "`{spec}` has an empty topic name; write NAME:PARTITIONS, e.g. orders:8"
        ));
    }
    let partitions: i32 = partitions.parse().ok().filter(|p| *p >= 1).ok_or_else(|| {
        format!("`{partitions}` in `{spec}` is not a partition count of 1 or more")
    })?;
    Ok((name.to_owned(), partitions))
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    pythia_kafka::init_tracing();
    match cli.command {
        Command::Broker { topics } => {
            let broker = pythia_kafka::EmbeddedBroker::with_topics(
                topics
                    .iter()
                    .map(|(name, partitions)| (name.as_str(), *partitions)),
            )
            .context("starting the embedded broker")?;
            for (name, partitions) in &topics {
                tracing::info!(topic = %name, partitions, "topic created");
            }
            let mut stdout = std::io::stdout().lock();
            writeln!(stdout, "bootstrap={}", broker.bootstrap_servers())?;
            stdout.flush()?;
            drop(stdout);
            pythia_core::shutdown::signal().await;
            drop(broker);
            tracing::info!("embedded broker stopped");
        }
        Command::Loadtest(args) => on_own_runtime(move || loadtest::run(args)).await?,
        Command::Bench(args) => on_own_runtime(move || bench::run(args)).await?,
        Command::LoadtestWorker(args) => {
            on_own_runtime(move || loadtest::instance::run(args)).await?
        }
    }
    Ok(())
}

/// Runs `f` on a thread of its own, where it may build a multi-threaded
/// runtime (workers and benchmarks run as they would in a user's binary).
async fn on_own_runtime(
    f: impl FnOnce() -> anyhow::Result<()> + Send + 'static,
) -> anyhow::Result<()> {
    tokio::task::spawn_blocking(f)
        .await
        .context("the command's thread panicked")?
}

#[cfg(test)]
mod tests {
    use super::parse_topic;

    #[test]
    fn topic_specs_parse_and_bad_ones_say_why() {
        assert_eq!(parse_topic("orders:8"), Ok(("orders".to_owned(), 8)));
        assert!(
            parse_topic("orders")
                .unwrap_err()
                .contains("NAME:PARTITIONS")
        );
        assert!(parse_topic("orders:0").unwrap_err().contains("1 or more"));
        assert!(parse_topic(":3").unwrap_err().contains("empty topic name"));
    }
}
