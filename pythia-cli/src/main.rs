//! The `pythia` command-line tool.

// Doc comments here are `--help` text, written for a terminal, not rustdoc.
#![allow(rustdoc::broken_intra_doc_links, rustdoc::invalid_html_tags)]
#![deny(clippy::undocumented_unsafe_blocks)]

use std::io::Write;

use anyhow::Context as _;
use clap::{Parser, Subcommand};

mod bench;
mod broker;
mod depth;
mod fleet;
mod loadtest;
mod probe;
mod queue_server;
mod rabbit;

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
        /// Require SASL/PLAIN from clients, as this user; the password is read
        /// from PYTHIA_BROKER_SASL_PASSWORD (never from the command line).
        /// Clients then set security.protocol = "SASL_PLAINTEXT".
        #[arg(long, value_name = "USER")]
        sasl_plain_user: Option<String>,
    },
    /// Show a consumer group's lag per partition: committed offset, watermarks, lag.
    ///
    /// Lag is read from the broker, so it is right whether or not any consumer
    /// of the group runs. With --serve it keeps running as an exporter: lag
    /// gauges on /metrics, and JSON on /lag for KEDA's metrics-api scaler
    /// (valueLocation: lag).
    Lag(lag::LagArgs),
    /// Dead-letter topics.
    #[command(subcommand)]
    Dlq(DlqCommand),
    /// Serve a web console: groups, instances, lag over time, dead letters
    /// (replay with --allow-replay). Prints `serving=http://<addr>`.
    Console(console::ConsoleArgs),
    /// Run worker processes in one group under a load and report throughput,
    /// latency, duplicates, losses and scaling efficiency.
    Loadtest(loadtest::Args),
    /// Compare Pythia workers with raw client loops (rdkafka; on RabbitMQ,
    /// Redis or NATS with --broker), each in a process of its own against a
    /// pre-loaded topic or queue: msg/s, CPU per message, peak memory.
    Bench(bench::Args),
    /// Run N instances of a worker binary on this host: restarts, status,
    /// scaling by hand or on the group's lag (`fleet run|status|scale`).
    #[command(subcommand)]
    Fleet(fleet::Args),
    /// Show a work queue's depth — what waits and what workers hold — on
    /// RabbitMQ, Redis (lists and streams) or NATS JetStream: the queue
    /// counterpart of `pythia lag`.
    ///
    /// RabbitMQ is read over AMQP (a passive queue.declare), as the workers'
    /// own pythia_queue_messages_ready gauge is: delivered but
    /// unacknowledged messages are not counted there; the workers export
    /// those as pythia_queue_unacked_messages. Redis and NATS tell both.
    Depth(depth::DepthArgs),
    /// One instance of `pythia loadtest` (started by it).
    #[command(hide = true)]
    LoadtestWorker(loadtest::instance::Args),
    /// One instance of `pythia loadtest` on a work queue (started by it).
    #[command(hide = true)]
    LoadtestQueueWorker(loadtest::queue_instance::Args),
    /// One side of a `pythia bench` round (started by it).
    #[command(hide = true)]
    BenchSide(bench::SideArgs),
    /// One side of a `pythia bench` round on a work queue (started by it).
    #[command(hide = true)]
    BenchQueueSide(bench::QueueSideArgs),
}

/// Where `pythia broker --sasl-plain-user` reads the password.
const BROKER_SASL_PASSWORD: &str = "PYTHIA_BROKER_SASL_PASSWORD";

#[derive(Subcommand)]
enum DlqCommand {
    /// Send dead letters back to the topic they came from (or to --to), once
    /// the cause is fixed. Reads up to the topic's end at the start, commits
    /// after every send is confirmed, and prints `replayed=<n> skipped=<n>`.
    Replay {
        #[command(flatten)]
        cluster: cluster::ClusterArgs,
        /// The dead-letter topic, e.g. orders.dlq.
        #[arg(long)]
        topic: String,
        /// Send every message here instead of its original topic.
        #[arg(long)]
        to: Option<String>,
        /// The consumer group that remembers how far replays got.
        #[arg(long, default_value = "pythia-dlq-replay")]
        group: String,
        /// Replay at most this many messages.
        #[arg(long)]
        limit: Option<u64>,
        /// Count what would be replayed, per target topic, and change nothing.
        #[arg(long)]
        dry_run: bool,
        /// Longest wait for the broker in each step.
        #[arg(long, default_value = "30s", value_parser = lag::humantime_duration)]
        timeout: std::time::Duration,
    },
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

mod cluster;
mod console;
mod lag;

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    pythia_kafka::init_tracing();
    match cli.command {
        Command::Broker {
            topics,
            sasl_plain_user,
        } => {
            let mut broker = pythia_kafka::EmbeddedBroker::with_topics(
                topics
                    .iter()
                    .map(|(name, partitions)| (name.as_str(), *partitions)),
            )
            .context("starting the embedded broker")?;
            for (name, partitions) in &topics {
                tracing::info!(topic = %name, partitions, "topic created");
            }
            if let Some(user) = &sasl_plain_user {
                let password = std::env::var(BROKER_SASL_PASSWORD).map_err(|_| {
                    anyhow::anyhow!(
                        "--sasl-plain-user needs the password in {BROKER_SASL_PASSWORD}: \
                         export {BROKER_SASL_PASSWORD}=... before `pythia broker`"
                    )
                })?;
                broker
                    .require_sasl_plain(user, &password)
                    .context("requiring SASL/PLAIN")?;
            }
            let mut stdout = std::io::stdout().lock();
            writeln!(stdout, "bootstrap={}", broker.bootstrap_servers())?;
            stdout.flush()?;
            drop(stdout);
            if let Some(user) = &sasl_plain_user {
                tracing::info!(
                    %user,
                    "clients authenticate with PYTHIA_KAFKA__SECURITY__PROTOCOL=SASL_PLAINTEXT \
                     PYTHIA_KAFKA__SECURITY__SASL_MECHANISM=PLAIN and this user's password"
                );
            }
            // Its classic rebalances wait session.timeout.ms - 1 s per phase.
            tracing::info!(
                "workers reach this broker with PYTHIA_KAFKA__BROKERS={} PYTHIA_KAFKA__GROUP_PROTOCOL=consumer",
                broker.bootstrap_servers()
            );
            pythia_core::shutdown::signal().await;
            drop(broker);
            tracing::info!("embedded broker stopped");
        }
        Command::Lag(args) => lag::run(args).await?,
        Command::Depth(args) => depth::run(args).await?,
        Command::Console(args) => console::run(args).await?,
        Command::Dlq(DlqCommand::Replay {
            cluster,
            topic,
            to,
            group,
            limit,
            dry_run,
            timeout,
        }) => {
            let kafka = cluster.kafka()?;
            let mut options = pythia_kafka::ReplayOptions::new(topic);
            options.to = to;
            options.group = group;
            options.limit = limit;
            options.dry_run = dry_run;
            options.timeout = timeout;
            let summary = tokio::task::spawn_blocking(move || {
                pythia_kafka::replay_dead_letters(&kafka, &options)
            })
            .await??;
            for (target, n) in &summary.replayed {
                tracing::info!(topic = %target, messages = n, dry_run, "replayed");
            }
            println!("replayed={} skipped={}", summary.total(), summary.skipped);
        }
        Command::Fleet(args) => fleet::run(args).await?,
        Command::Loadtest(args) => on_own_runtime(move || loadtest::run(args)).await?,
        Command::Bench(args) => on_own_runtime(move || bench::run(args)).await?,
        Command::LoadtestWorker(args) => {
            on_own_runtime(move || loadtest::instance::run(args)).await?
        }
        Command::BenchSide(args) => on_own_runtime(move || bench::run_side(args)).await?,
        Command::LoadtestQueueWorker(args) => {
            on_own_runtime(move || loadtest::queue_instance::run(args)).await?
        }
        Command::BenchQueueSide(args) => {
            on_own_runtime(move || bench::run_queue_side(args)).await?
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
