//! `pythia bench`: Pythia against hand-written client loops — rdkafka's on
//! Kafka, and on the work queues ([`queue`]: RabbitMQ, Redis lists and
//! streams, NATS JetStream) each client's own.
//!
//! By default every side runs in a process of its own against a broker in
//! another process ([`address`]): the classic poll loop and the fastest
//! batch loop with librdkafka's defaults, a pass-through worker and a
//! one-stage pipeline with Pythia's, and a raw consume→produce loop. Each
//! reports msg/s, CPU time per message, peak RSS and the client properties it
//! set. `--in-process` adds the older comparison on one embedded broker
//! inside this process ([`in_process`]) as a second table.

mod address;
mod alloc;
mod baseline;
mod child;
mod in_process;
mod nats;
mod nats_raw;
mod progress;
mod queue;
pub(crate) mod queue_side;
mod rabbit;
mod rabbit_raw;
mod raw;
mod redis;
mod redis_raw;
pub(crate) mod side;
mod usage;
mod workers;

use std::io::Write;
use std::time::Instant;

use serde::Serialize;

pub(crate) use queue_side::{QueueSideArgs, run as run_queue_side};
pub(crate) use side::{SideArgs, run as run_side};

use crate::broker::BrokerKind;

#[global_allocator]
static ALLOCATOR: alloc::Counting = alloc::Counting;

/// Options of `pythia bench`.
#[derive(clap::Args, Debug)]
#[command(after_help = "\
Examples:
  pythia bench                                  # pythia broker in a process of its own
  pythia bench --partitions 32 --rounds 5 --json
  pythia bench --brokers kafka-1:9092           # a real cluster (creates and deletes its topics)
  pythia bench --brokers 127.0.0.1:9092 --topic bench   # existing topics bench and bench.out
  pythia bench --in-process                     # adds the in-process table
  pythia bench --broker rabbitmq --messages 200000 --rounds 3 --prefetch 100
  PYTHIA_RABBITMQ__URL=amqp://user:password@rabbit:5672/%2f pythia bench --broker rabbitmq
  pythia bench --broker redis-list --messages 100000 --rounds 3
  pythia bench --broker redis-streams --prefetch 50 --json
  PYTHIA_NATS__URL=nats://user:password@nats:4222 pythia bench --broker nats")]
pub(crate) struct Args {
    /// The broker: kafka, or a work queue — rabbitmq, redis-list,
    /// redis-streams, nats — where a pass-through worker runs against the
    /// raw client loop on pre-loaded queues.
    #[arg(long, value_enum, default_value_t)]
    broker: BrokerKind,
    /// Messages pre-loaded and read by every run (default 1000000 on Kafka,
    /// 200000 on the work queues, where each run pre-loads a queue of its
    /// own). The
    /// embedded broker keeps about 5 MiB per partition (after lz4): raise
    /// --partitions with the count or the size.
    #[arg(long, value_parser = clap::value_parser!(u64).range(1000..))]
    messages: Option<u64>,
    /// Bytes per message.
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u64).range(8..=100_000))]
    message_size: u64,
    /// Partitions of the input and output topics.
    #[arg(long, default_value_t = 8, value_parser = clap::value_parser!(i32).range(1..))]
    partitions: i32,
    /// Rounds; each runs every side once.
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u32).range(1..))]
    rounds: u32,
    /// Bootstrap servers of a cluster to run against, instead of starting
    /// `pythia broker` in a process of its own. Security settings come from
    /// pythia.toml and PYTHIA_* variables, as for a worker.
    #[arg(long)]
    brokers: Option<String>,
    /// With --brokers: use the existing topic NAME as the input and NAME.out
    /// as the output (for brokers without CreateTopics, such as `pythia
    /// broker --topic NAME:8 --topic NAME.out:8`). The load is added to what
    /// NAME holds; every side starts after what was there.
    #[arg(long, value_name = "NAME", requires = "brokers")]
    topic: Option<String>,
    /// Also run the in-process comparison (one embedded broker in this
    /// process; the raw loops with Pythia's client settings).
    #[arg(long)]
    in_process: bool,
    /// The in-process workers' worker.max_in_flight (default: the worker default).
    #[arg(long, requires = "in_process", value_parser = clap::value_parser!(u64).range(1..))]
    max_in_flight: Option<u64>,
    /// The in-process workers' worker.partition_buffer (default: the worker default).
    #[arg(long, requires = "in_process", value_parser = clap::value_parser!(u64).range(1..))]
    partition_buffer: Option<u64>,
    /// With a work queue: the server, e.g. amqp://user:password@host:5672/%2f,
    /// redis://:password@host:6379/0, nats://user:password@host:4222
    /// (default: PYTHIA_RABBITMQ__URL, PYTHIA_REDIS__URL or PYTHIA_NATS__URL,
    /// else the server on this machine, RabbitMQ as guest). Prefer the
    /// variable for a password: `ps` shows arguments.
    #[arg(long)]
    url: Option<String>,
    /// With a work queue: messages each side holds unacknowledged — basic.qos
    /// on RabbitMQ, the XREADGROUP COUNT and redis.prefetch on Redis, the
    /// pull batch and nats.concurrency on NATS (the raw list loop takes one
    /// at a time).
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u16).range(1..))]
    prefetch: u16,
    /// Print one JSON object on stdout and nothing else.
    #[arg(long)]
    json: bool,
    /// Run only these sides (for profiling one of them).
    #[arg(long, hide = true, value_delimiter = ',', value_enum)]
    only: Vec<side::Side>,
}

/// What `--json` prints: the runs by address, and the in-process table
/// when asked for.
#[derive(Debug, Serialize)]
struct Report {
    #[serde(flatten)]
    address: address::AddressReport,
    in_process: Option<in_process::Report>,
}

impl Args {
    /// Messages per run: as given, else the broker's default.
    fn messages(&self) -> u64 {
        self.messages.unwrap_or(match self.broker {
            BrokerKind::Kafka => 1_000_000,
            _ => 200_000,
        })
    }

    /// A Kafka-only flag given with a work queue, or a work-queue-only one
    /// given with Kafka.
    fn misplaced_flag(&self) -> Option<&'static str> {
        let kafka_only = [
            (self.brokers.is_some(), "--brokers"),
            (self.topic.is_some(), "--topic"),
            (self.in_process, "--in-process"),
            (self.partitions != 8, "--partitions"),
            (!self.only.is_empty(), "--only"),
        ];
        let queue_only = [
            (self.url.is_some(), "--url"),
            (self.prefetch != 10, "--prefetch"),
        ];
        let wrong = match self.broker {
            BrokerKind::Kafka => &queue_only[..],
            _ => &kafka_only[..],
        };
        wrong
            .iter()
            .find(|(given, _)| *given)
            .map(|(_, flag)| *flag)
    }
}

/// Runs `pythia bench`.
pub(crate) fn run(args: Args) -> anyhow::Result<()> {
    if let Some(flag) = args.misplaced_flag() {
        if args.broker == BrokerKind::Kafka {
            anyhow::bail!(
                "{flag} applies to the work queues only: leave it out, or add --broker rabbitmq (or redis-list, redis-streams, nats)"
            );
        }
        anyhow::bail!("{flag} applies to --broker kafka only: leave it out, or add --broker kafka");
    }
    let started = Instant::now();
    let queue = match args.broker {
        BrokerKind::Kafka => None,
        BrokerKind::Rabbitmq => Some(rabbit::run(&args)?),
        BrokerKind::RedisList => Some(redis::run(&args, false)?),
        BrokerKind::RedisStreams => Some(redis::run(&args, true)?),
        BrokerKind::Nats => Some(nats::run(&args)?),
    };
    if let Some(report) = queue {
        let mut stdout = std::io::stdout().lock();
        if args.json {
            writeln!(stdout, "{}", serde_json::to_string(&report)?)?;
        } else {
            write!(stdout, "{}", queue::human(&report, args.broker))?;
            writeln!(
                stdout,
                "total time {:.1} s",
                started.elapsed().as_secs_f64()
            )?;
        }
        return Ok(());
    }
    let address = address::run(&args)?;
    let in_process = args
        .in_process
        .then(|| in_process::run(&args))
        .transpose()?;
    let mut stdout = std::io::stdout().lock();
    if args.json {
        let report = Report {
            address,
            in_process,
        };
        writeln!(stdout, "{}", serde_json::to_string(&report)?)?;
    } else {
        write!(stdout, "{}", address::human(&address))?;
        if let Some(report) = &in_process {
            write!(stdout, "{}", in_process::human(report))?;
        }
        writeln!(
            stdout,
            "total time {:.1} s",
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
    use clap::Parser as _;

    use super::*;

    #[derive(clap::Parser)]
    struct Cli {
        #[command(flatten)]
        args: Args,
    }

    fn parse(flags: &[&str]) -> Args {
        Cli::try_parse_from(std::iter::once("bench").chain(flags.iter().copied()))
            .expect("flags parse")
            .args
    }

    #[test]
    fn a_flag_of_the_other_kind_of_broker_is_named() {
        for broker in ["rabbitmq", "redis-list", "redis-streams", "nats"] {
            let args = parse(&["--broker", broker, "--partitions", "4"]);
            assert_eq!(args.misplaced_flag(), Some("--partitions"), "{broker}");
            let args = parse(&["--broker", broker, "--prefetch", "50", "--url", "x://h"]);
            assert_eq!(args.misplaced_flag(), None, "{broker}");
            assert_eq!(args.messages(), 200_000, "{broker}");
        }
        assert_eq!(
            parse(&["--prefetch", "50"]).misplaced_flag(),
            Some("--prefetch")
        );
        assert_eq!(parse(&[]).messages(), 1_000_000);
    }

    #[test]
    fn median_of_odd_and_even_counts() {
        assert_eq!(median([3.0, 1.0, 2.0].into_iter()), 2.0);
        assert_eq!(median([4.0, 1.0, 3.0, 2.0].into_iter()), 2.5);
        assert_eq!(median(std::iter::empty()), 0.0);
    }
}
