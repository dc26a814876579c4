//! `pythia bench` on a work queue — RabbitMQ ([`super::rabbit`]), a Redis
//! list or stream ([`super::redis`]), NATS JetStream ([`super::nats`]): a
//! pass-through worker on the connector against the raw client loop a
//! careful user writes, each in a process of its own
//! ([`super::queue_side`]).
//!
//! A queue is consumed as it is read, so every run gets a queue of its own,
//! pre-loaded before the run starts and deleted after it. Each round runs
//! both sides, the raw loop first in odd rounds and Pythia first in even
//! ones. A side's rate is timed from its first acknowledged message to its
//! last; its CPU time is the whole process's, every thread, from start to
//! the last message.

use std::collections::BTreeMap;
use std::time::Instant;

use serde::Serialize;

use super::address::{Run, Summary};
use super::child;
use super::queue_side::{Side, SideReport};
use super::{Args, round3};
use crate::broker::BrokerKind;

/// What one broker does for the rounds: where it is, and making and
/// deleting the queue of each run.
pub(crate) trait Queues {
    /// The broker, as `--broker` names it.
    const KIND: BrokerKind;
    /// What a run's queue holds, for the first line ("persistent messages").
    const HOLDS: &'static str;
    /// How both sides acknowledge, for the first line.
    const ACKS: &'static str;

    /// The variable the side processes read the URL from.
    fn url_variable(&self) -> &'static str;
    /// The URL with its password, for the side processes' environment.
    fn exposed_url(&self) -> &str;
    /// The URL with the password hidden.
    fn redacted_url(&self) -> String;
    /// Makes the queue `name` and fills it with `messages` messages of
    /// `size` bytes, every one confirmed by the broker.
    async fn preload(&mut self, name: &str, messages: u64, size: u64) -> anyhow::Result<()>;
    /// Deletes what a run of `side` on `name` left, warning on stderr
    /// about what could not be deleted (the run's result stands).
    async fn delete(&mut self, name: &str, side: Side);
}

/// What `--json` prints, in the shape of the Kafka bench's where it applies.
#[derive(Debug, Serialize)]
pub(crate) struct QueueReport {
    /// The broker's URL, password hidden.
    pub(crate) brokers: String,
    pub(crate) broker: &'static str,
    pub(crate) messages: u64,
    pub(crate) message_size: u64,
    pub(crate) prefetch: u16,
    /// Every run of every round, in the order they ran.
    pub(crate) runs: Vec<Run>,
    /// Each side's medians and consumer settings.
    pub(crate) sides: BTreeMap<&'static str, Summary>,
    pub(crate) ratios: QueueRatios,
}

/// Pythia against the raw loop, from the medians.
#[derive(Debug, Serialize)]
pub(crate) struct QueueRatios {
    /// Throughput of the pass-through worker over the raw loop.
    pub(crate) pythia_vs_raw: f64,
    /// CPU per message of the pass-through worker over the raw loop's.
    pub(crate) pythia_cpu_vs_raw: f64,
    /// Peak RSS of the pass-through worker over the raw loop's.
    pub(crate) pythia_rss_vs_raw: f64,
}

/// The order of the sides in `round`: the raw loop first in odd rounds,
/// Pythia first in even ones.
pub(crate) fn order(round: u32) -> [Side; 2] {
    if round % 2 == 1 {
        [Side::Raw, Side::Pythia]
    } else {
        [Side::Pythia, Side::Raw]
    }
}

/// The name of the queue (list, stream) of `side`'s run in `round`.
pub(crate) fn queue_name(round: u32, side: Side) -> String {
    format!(
        "pythia-bench-{}-{round}-{}",
        std::process::id(),
        side.name()
    )
}

/// Runs the rounds on `queues` and reports them.
pub(crate) fn run<Q: Queues>(
    args: &Args,
    runtime: &tokio::runtime::Runtime,
    queues: &mut Q,
) -> anyhow::Result<QueueReport> {
    let started = Instant::now();
    let messages = args.messages();
    super::say(
        args,
        format_args!(
            "{} at {}: {} rounds, {messages} {} of {} B per run, prefetch {}, {}",
            Q::KIND.name(),
            queues.redacted_url(),
            args.rounds,
            Q::HOLDS,
            args.message_size,
            args.prefetch,
            Q::ACKS
        ),
    );
    let mut reports = Vec::new();
    let mut result = Ok(());
    'rounds: for round in 1..=args.rounds {
        for side in order(round) {
            let queue = queue_name(round, side);
            let loaded = Instant::now();
            let run = runtime
                .block_on(queues.preload(&queue, messages, args.message_size))
                .and_then(|()| {
                    let seconds = loaded.elapsed().as_secs_f64();
                    tracing::debug!(queue, seconds, "pre-loaded");
                    run_side(queues, side, &queue, messages, args.prefetch)
                });
            runtime.block_on(queues.delete(&queue, side));
            match run {
                Ok(report) => {
                    super::say(
                        args,
                        format_args!(
                            "round {round} {:<20} {:>10.0} msg/s  {:>6.3} µs CPU/msg  {:>6.1} MiB peak RSS  {:>7} context switches  {:>5.1} allocs/msg",
                            side.label(Q::KIND),
                            report.msgs_per_s,
                            report.cpu_us_per_msg,
                            report.peak_rss_mib,
                            report.context_switches,
                            report.allocs_per_msg
                        ),
                    );
                    reports.push((round, report));
                }
                Err(error) => {
                    result = Err(error);
                    break 'rounds;
                }
            }
        }
    }
    result?;
    tracing::debug!(
        seconds = started.elapsed().as_secs_f64(),
        broker = Q::KIND.name(),
        "queue bench"
    );
    Ok(summarize(args, Q::KIND, queues.redacted_url(), reports))
}

/// Runs one side in a process of its own and reads its report.
fn run_side<Q: Queues>(
    queues: &Q,
    side: Side,
    queue: &str,
    messages: u64,
    prefetch: u16,
) -> anyhow::Result<SideReport> {
    child::run_side(side.label(Q::KIND), |command| {
        command
            .args(["bench-queue-side", "--broker", Q::KIND.name()])
            .args(["--side", side.name(), "--queue", queue])
            .args(["--messages", &messages.to_string()])
            .args(["--prefetch", &prefetch.to_string()])
            // In the environment, not the arguments: `ps` shows arguments.
            .env(queues.url_variable(), queues.exposed_url());
    })
}

fn summarize(
    args: &Args,
    kind: BrokerKind,
    brokers: String,
    reports: Vec<(u32, SideReport)>,
) -> QueueReport {
    let runs: Vec<Run> = reports
        .iter()
        .map(|(round, r)| Run {
            round: *round,
            side: r.side.name(),
            msgs_per_s: r.msgs_per_s,
            cpu_us_per_msg: r.cpu_us_per_msg,
            user_s: r.user_s,
            system_s: r.system_s,
            peak_rss_mib: r.peak_rss_mib,
            context_switches: r.context_switches,
        })
        .collect();
    let mut sides = BTreeMap::new();
    for side in Side::ALL {
        if let Some((_, first)) = reports.iter().find(|(_, r)| r.side == side) {
            let summary = Summary::of(&runs, side.name(), &first.consumer, &BTreeMap::new());
            sides.insert(side.name(), summary);
        }
    }
    let ratios = ratios(&sides);
    QueueReport {
        brokers,
        broker: kind.name(),
        messages: args.messages(),
        message_size: args.message_size,
        prefetch: args.prefetch,
        runs,
        sides,
        ratios,
    }
}

/// Pythia's medians over the raw loop's; 0 where a side is missing.
fn ratios(sides: &BTreeMap<&'static str, Summary>) -> QueueRatios {
    let ratio = |f: fn(&Summary) -> f64| match (sides.get("pythia"), sides.get("raw")) {
        (Some(a), Some(b)) if f(b) > 0.0 => round3(f(a) / f(b)),
        _ => 0.0,
    };
    QueueRatios {
        pythia_vs_raw: ratio(|s| s.msgs_per_s),
        pythia_cpu_vs_raw: ratio(|s| s.cpu_us_per_msg),
        pythia_rss_vs_raw: ratio(|s| s.peak_rss_mib),
    }
}

/// The medians and the ratios, for a person.
pub(crate) fn human(report: &QueueReport, kind: BrokerKind) -> String {
    use std::fmt::Write as _;
    let mut text = format!(
        "medians over the rounds ({} at {}, {} messages of {} B, prefetch {}):\n",
        report.broker, report.brokers, report.messages, report.message_size, report.prefetch
    );
    for side in Side::ALL {
        if let Some(s) = report.sides.get(side.name()) {
            let _ = writeln!(
                text,
                "  {:<20} {:>10.0} msg/s  {:>6.3} µs CPU/msg  {:>6.1} MiB peak RSS",
                side.label(kind),
                s.msgs_per_s,
                s.cpu_us_per_msg,
                s.peak_rss_mib
            );
        }
    }
    let r = &report.ratios;
    let _ = writeln!(
        text,
        "  pass-through: {:.3}× the {}; CPU {:.3}×, peak RSS {:.3}× its",
        r.pythia_vs_raw,
        Side::Raw.label(kind),
        r.pythia_cpu_vs_raw,
        r.pythia_rss_vs_raw
    );
    for side in Side::ALL {
        if let Some(s) = report.sides.get(side.name()) {
            let settings: Vec<String> =
                s.consumer.iter().map(|(k, v)| format!("{k}={v}")).collect();
            let _ = writeln!(text, "  {}: {}", side.label(kind), settings.join(" "));
        }
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    fn summary(msgs_per_s: f64, cpu_us_per_msg: f64, peak_rss_mib: f64) -> Summary {
        Summary {
            msgs_per_s,
            cpu_us_per_msg,
            peak_rss_mib,
            consumer: BTreeMap::new(),
            producer: BTreeMap::new(),
        }
    }

    #[test]
    fn rounds_alternate_which_side_goes_first() {
        assert_eq!(order(1), [Side::Raw, Side::Pythia]);
        assert_eq!(order(2), [Side::Pythia, Side::Raw]);
        assert_eq!(order(3), order(1));
    }

    #[test]
    fn ratios_are_pythia_over_raw_and_zero_without_a_side() {
        let mut sides = BTreeMap::from([
            ("raw", summary(1000.0, 4.0, 10.0)),
            ("pythia", summary(500.0, 6.0, 25.0)),
        ]);
        let r = ratios(&sides);
        assert_eq!(
            (r.pythia_vs_raw, r.pythia_cpu_vs_raw, r.pythia_rss_vs_raw),
            (0.5, 1.5, 2.5)
        );
        sides.remove("raw");
        assert_eq!(ratios(&sides).pythia_vs_raw, 0.0);
    }

    #[test]
    fn every_run_has_a_queue_of_its_own() {
        let names = [
            queue_name(1, Side::Raw),
            queue_name(1, Side::Pythia),
            queue_name(2, Side::Raw),
        ];
        assert_ne!(names[0], names[1]);
        assert_ne!(names[0], names[2]);
        assert!(names[0].starts_with("pythia-bench-"), "{}", names[0]);
    }
}
