//! `pythia bench`: Pythia against hand-written rdkafka loops.
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
mod in_process;
mod progress;
mod raw;
pub(crate) mod side;
mod usage;
mod workers;

use std::io::Write;
use std::time::Instant;

use serde::Serialize;

pub(crate) use side::{SideArgs, run as run_side};

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
  pythia bench --in-process                     # adds the in-process table")]
pub(crate) struct Args {
    /// Messages pre-loaded and read by every run. The embedded broker keeps
    /// about 5 MiB per partition (after lz4): raise --partitions with the
    /// count or the size.
    #[arg(long, default_value_t = 1_000_000, value_parser = clap::value_parser!(u64).range(1000..))]
    messages: u64,
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

/// Runs `pythia bench`.
pub(crate) fn run(args: Args) -> anyhow::Result<()> {
    let started = Instant::now();
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
    use super::median;

    #[test]
    fn median_of_odd_and_even_counts() {
        assert_eq!(median([3.0, 1.0, 2.0].into_iter()), 2.0);
        assert_eq!(median([4.0, 1.0, 3.0, 2.0].into_iter()), 2.5);
        assert_eq!(median(std::iter::empty()), 0.0);
    }
}
