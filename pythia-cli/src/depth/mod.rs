//! `pythia depth`: what waits in a work queue and what its workers hold, the
//! queue counterpart of `pythia lag`, on RabbitMQ ([`rabbit`]), Redis lists
//! and streams ([`redis`]) and NATS JetStream ([`nats`]).

mod nats;
mod rabbit;
mod redis;

use std::io::Write;
use std::time::Duration;

use anyhow::{Context as _, bail};
use serde::Serialize;

/// The brokers `pythia depth` reads.
#[derive(clap::ValueEnum, Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) enum DepthBroker {
    /// RabbitMQ queues (--queue), over AMQP.
    #[default]
    Rabbitmq,
    /// Redis lists used as reliable queues (--queue).
    RedisList,
    /// A Redis stream read in a consumer group (--stream, --group).
    RedisStreams,
    /// A NATS JetStream durable consumer (--stream, --consumer).
    Nats,
}

/// Options of `pythia depth`.
#[derive(clap::Args, Debug)]
#[command(after_help = "\
Examples:
  pythia depth --queue jobs
  pythia depth --queue jobs --queue jobs.dlq --json
  PYTHIA_RABBITMQ__URL=amqp://user:password@rabbit:5672/%2f pythia depth --queue jobs
  pythia depth --broker redis-list --queue python_execution_queue
  pythia depth --broker redis-streams --stream jobs --group jobs-worker
  pythia depth --broker nats --stream JOBS --consumer jobs-workers --json
  PYTHIA_REDIS__URL=redis://:password@redis:6379/0 pythia depth --broker redis-list --queue jobs")]
pub(crate) struct DepthArgs {
    /// The broker.
    #[arg(long, value_enum, default_value_t)]
    broker: DepthBroker,
    /// A queue to report (repeatable): a RabbitMQ queue, or a Redis list.
    #[arg(long = "queue", value_name = "QUEUE")]
    queues: Vec<String>,
    /// The Redis stream, or the NATS JetStream stream.
    #[arg(long)]
    stream: Option<String>,
    /// The consumer group on the Redis stream.
    #[arg(long)]
    group: Option<String>,
    /// The durable consumer on the NATS stream.
    #[arg(long)]
    consumer: Option<String>,
    /// The server (default: PYTHIA_RABBITMQ__URL, PYTHIA_REDIS__URL or
    /// PYTHIA_NATS__URL, else the broker on this machine). Prefer the
    /// variable for a password: `ps` shows arguments.
    #[arg(long)]
    url: Option<String>,
    /// Print JSON instead of a table.
    #[arg(long)]
    json: bool,
    /// Longest wait for the broker.
    #[arg(long, default_value = "10s", value_parser = crate::lag::humantime_duration)]
    timeout: Duration,
}

/// A queue's backlog on Redis or NATS, as `--json` prints it.
#[derive(Debug, Serialize, PartialEq, Eq)]
pub(crate) struct Backlog {
    /// The queue: a list, `stream/group` or `stream/consumer`.
    pub(crate) name: String,
    /// Waiting for a worker: the list's length, the group's lag, the
    /// consumer's pending messages.
    pub(crate) waiting: u64,
    /// Taken by workers and not acknowledged yet.
    pub(crate) in_progress: u64,
    /// Workers known to the broker (`null` where it does not tell).
    pub(crate) consumers: Option<u64>,
    /// The stream's length, processed or not (streams only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) length: Option<u64>,
    /// Messages delivered more than once, not acknowledged yet (NATS only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) redelivered: Option<u64>,
    /// How the figures were read.
    pub(crate) source: &'static str,
}

/// Flags, each with whether it was given.
type Flags<'a> = &'a [(bool, &'static str)];

impl DepthArgs {
    /// The flags this broker needs, or the one that is missing or misplaced.
    fn check(&self) -> anyhow::Result<()> {
        let (needs, refuses): (Flags<'_>, Flags<'_>) = match self.broker {
            DepthBroker::Rabbitmq | DepthBroker::RedisList => (
                &[(!self.queues.is_empty(), "--queue")],
                &[
                    (self.stream.is_some(), "--stream"),
                    (self.group.is_some(), "--group"),
                    (self.consumer.is_some(), "--consumer"),
                ],
            ),
            DepthBroker::RedisStreams => (
                &[
                    (self.stream.is_some(), "--stream"),
                    (self.group.is_some(), "--group"),
                ],
                &[
                    (!self.queues.is_empty(), "--queue"),
                    (self.consumer.is_some(), "--consumer"),
                ],
            ),
            DepthBroker::Nats => (
                &[
                    (self.stream.is_some(), "--stream"),
                    (self.consumer.is_some(), "--consumer"),
                ],
                &[
                    (!self.queues.is_empty(), "--queue"),
                    (self.group.is_some(), "--group"),
                ],
            ),
        };
        let broker = self.broker_name();
        if let Some((_, flag)) = needs.iter().find(|(given, _)| !given) {
            bail!("--broker {broker} needs {flag}: see `pythia depth --help` for examples");
        }
        if let Some((_, flag)) = refuses.iter().find(|(given, _)| *given) {
            bail!("{flag} does not apply to --broker {broker}: leave it out");
        }
        Ok(())
    }

    fn broker_name(&self) -> &'static str {
        match self.broker {
            DepthBroker::Rabbitmq => "rabbitmq",
            DepthBroker::RedisList => "redis-list",
            DepthBroker::RedisStreams => "redis-streams",
            DepthBroker::Nats => "nats",
        }
    }
}

/// Runs `pythia depth`.
pub(crate) async fn run(args: DepthArgs) -> anyhow::Result<()> {
    args.check()?;
    let url = args.url.as_deref();
    let timeout = args.timeout;
    let waited = |what: &str| format!("{what} did not answer within {timeout:?} (--timeout)",);
    let text = match args.broker {
        DepthBroker::Rabbitmq => {
            let depths = tokio::time::timeout(timeout, rabbit::depths(url, &args.queues))
                .await
                .with_context(|| waited("RabbitMQ"))??;
            if args.json {
                serde_json::to_string(&depths)? + "\n"
            } else {
                rabbit::table(&depths)
            }
        }
        broker => {
            let read = async {
                match broker {
                    DepthBroker::RedisList => redis::lists(url, &args.queues).await,
                    DepthBroker::RedisStreams => {
                        let stream = args.stream.as_deref().unwrap_or_default();
                        let group = args.group.as_deref().unwrap_or_default();
                        redis::stream(url, stream, group).await.map(|b| vec![b])
                    }
                    _ => {
                        let stream = args.stream.as_deref().unwrap_or_default();
                        let consumer = args.consumer.as_deref().unwrap_or_default();
                        nats::consumer(url, stream, consumer).await.map(|b| vec![b])
                    }
                }
            };
            let server = if broker == DepthBroker::Nats {
                "NATS"
            } else {
                "Redis"
            };
            let backlogs = tokio::time::timeout(timeout, read)
                .await
                .with_context(|| waited(server))??;
            if args.json {
                serde_json::to_string(&backlogs)? + "\n"
            } else {
                table(&backlogs)
            }
        }
    };
    let mut stdout = std::io::stdout().lock();
    stdout.write_all(text.as_bytes())?;
    stdout.flush()?;
    Ok(())
}

/// Redis and NATS backlogs as a table, with how they were read.
fn table(backlogs: &[Backlog]) -> String {
    use std::fmt::Write as _;
    let width = backlogs
        .iter()
        .map(|b| b.name.len())
        .max()
        .unwrap_or(0)
        .max("QUEUE".len());
    let mut text = format!(
        "{:<width$}  {:>10}  {:>11}  {:>9}\n",
        "QUEUE", "WAITING", "IN-PROGRESS", "CONSUMERS"
    );
    for b in backlogs {
        let consumers = b.consumers.map_or("-".to_owned(), |n| n.to_string());
        let _ = writeln!(
            text,
            "{:<width$}  {:>10}  {:>11}  {:>9}",
            b.name, b.waiting, b.in_progress, consumers
        );
    }
    let mut sources: Vec<&str> = backlogs.iter().map(|b| b.source).collect();
    sources.dedup();
    for source in sources {
        let _ = writeln!(text, "read with {source}");
    }
    text
}

#[cfg(test)]
mod tests {
    use clap::Parser as _;

    use super::*;

    #[derive(clap::Parser)]
    struct Cli {
        #[command(flatten)]
        args: DepthArgs,
    }

    fn parse(flags: &[&str]) -> DepthArgs {
        Cli::parse_from(std::iter::once("depth").chain(flags.iter().copied())).args
    }

    #[test]
    fn each_broker_names_the_flag_it_needs_and_refuses_the_others() {
        let cases: [(&[&str], Option<&str>); 6] = [
            (&["--queue", "jobs"], None),
            (&["--broker", "redis-list"], Some("needs --queue")),
            (
                &["--broker", "redis-streams", "--stream", "s"],
                Some("needs --group"),
            ),
            (
                &["--broker", "nats", "--stream", "S", "--consumer", "c"],
                None,
            ),
            (
                &[
                    "--broker",
                    "nats",
                    "--stream",
                    "S",
                    "--consumer",
                    "c",
                    "--group",
                    "g",
                ],
                Some("--group does not apply to --broker nats"),
            ),
            (
                &["--queue", "jobs", "--stream", "s"],
                Some("--stream does not apply to --broker rabbitmq"),
            ),
        ];
        for (flags, error) in cases {
            let result = parse(flags).check();
            match error {
                None => assert!(result.is_ok(), "{flags:?}: {result:?}"),
                Some(text) => {
                    let message = result.expect_err("refused").to_string();
                    assert!(message.contains(text), "{flags:?}: {message}");
                }
            }
        }
    }

    #[test]
    fn the_table_shows_unknown_consumers_as_a_dash_and_names_its_source() {
        let text = table(&[Backlog {
            name: "JOBS/jobs-workers".into(),
            waiting: 120,
            in_progress: 8,
            consumers: None,
            length: None,
            redelivered: Some(1),
            source: "JetStream consumer info",
        }]);
        let row = text.lines().nth(1).unwrap();
        assert_eq!(
            row.split_whitespace().collect::<Vec<_>>(),
            ["JOBS/jobs-workers", "120", "8", "-"]
        );
        assert!(
            text.ends_with("read with JetStream consumer info\n"),
            "{text}"
        );
    }
}
