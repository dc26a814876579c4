//! `pythia bench --broker rabbitmq`: a pass-through worker on
//! `pythia-rabbitmq` against a raw lapin consumer, each in a process of its
//! own, with the same prefetch and the same ack mode (manual, one `basic.ack`
//! per message once it is processed).
//!
//! A queue is consumed as it is read, so every run gets a queue of its own,
//! pre-loaded (persistent messages, publisher confirms) before the run
//! starts and deleted after it. Each round runs both sides, the raw
//! consumer first in odd rounds and Pythia first in even ones. A side's rate
//! is timed from its first acknowledged message to its last; its CPU time
//! is the whole process's, every thread, from start to the last message.

use std::collections::BTreeMap;
use std::os::unix::process::CommandExt as _;
use std::process::{Command, Stdio};
use std::time::Instant;

use anyhow::{Context as _, bail};
use pythia_rabbitmq::AmqpUrl;
use serde::Serialize;

use super::address::{Run, Summary};
use super::rabbit_side::{RabbitSide, RabbitSideReport};
use super::{Args, median, round3};
use crate::rabbit;

/// What `--json` prints, in the shape of the Kafka bench's where it applies.
#[derive(Debug, Serialize)]
pub(crate) struct RabbitReport {
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
    pub(crate) ratios: RabbitRatios,
}

/// Pythia against the raw consumer, from the medians.
#[derive(Debug, Serialize)]
pub(crate) struct RabbitRatios {
    /// Throughput of the pass-through worker over the raw consumer.
    pub(crate) pythia_vs_raw: f64,
    /// CPU per message of the pass-through worker over the raw consumer's.
    pub(crate) pythia_cpu_vs_raw: f64,
    /// Peak RSS of the pass-through worker over the raw consumer's.
    pub(crate) pythia_rss_vs_raw: f64,
}

/// The order of the sides in `round`: the raw consumer first in odd
/// rounds, Pythia first in even ones.
pub(crate) fn order(round: u32) -> [RabbitSide; 2] {
    if round % 2 == 1 {
        [RabbitSide::Raw, RabbitSide::Pythia]
    } else {
        [RabbitSide::Pythia, RabbitSide::Raw]
    }
}

/// Runs the rounds on RabbitMQ and reports them.
pub(crate) fn run(args: &Args) -> anyhow::Result<RabbitReport> {
    let url = rabbit::url(args.url.as_deref())?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let connection = runtime.block_on(rabbit::connect(&url, "pythia-bench"))?;
    let started = Instant::now();
    let messages = args.messages();
    super::say(
        args,
        format_args!(
            "rabbitmq at {url}: {} rounds, {messages} persistent messages of {} B per run, prefetch {}, manual acks",
            args.rounds, args.message_size, args.prefetch
        ),
    );
    let mut reports = Vec::new();
    let mut result = Ok(());
    'rounds: for round in 1..=args.rounds {
        for side in order(round) {
            let queue = format!(
                "pythia-bench-{}-{round}-{}",
                std::process::id(),
                side.name()
            );
            // The worker declares its dead-letter queue; deleting a queue
            // that does not exist would close the channel.
            let mut owned = vec![queue.clone()];
            if side == RabbitSide::Pythia {
                owned.push(format!("{queue}.dlq"));
            }
            let run = runtime
                .block_on(preload(&connection, &queue, messages, args.message_size))
                .and_then(|seconds| {
                    tracing::debug!(queue, seconds, "pre-loaded");
                    run_side(&url, side, &queue, messages, args.prefetch)
                });
            runtime.block_on(rabbit::delete(&connection, &owned));
            match run {
                Ok(report) => {
                    super::say(
                        args,
                        format_args!(
                            "round {round} {:<20} {:>10.0} msg/s  {:>6.3} µs CPU/msg  {:>6.1} MiB peak RSS  {:>7} context switches  {:>5.1} allocs/msg",
                            side.label(),
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
    let _ = runtime.block_on(connection.close(200, "bench done".into()));
    result?;
    tracing::debug!(seconds = started.elapsed().as_secs_f64(), "rabbit bench");
    Ok(summarize(args, &url, reports))
}

/// Declares `queue` and fills it; returns the seconds it took.
async fn preload(
    connection: &lapin::Connection,
    queue: &str,
    messages: u64,
    size: u64,
) -> anyhow::Result<f64> {
    let started = Instant::now();
    let channel = rabbit::confirm_channel(connection).await?;
    rabbit::declare(&channel, queue).await?;
    rabbit::publish(&channel, queue, messages, None, |i, buffer| {
        buffer.extend_from_slice(&i.to_le_bytes());
        buffer.resize(size as usize, b'x');
    })
    .await?;
    let depth = rabbit::depth(connection, queue).await?;
    if u64::from(depth.ready) != messages {
        bail!(
            "queue `{queue}` holds {} messages after the pre-load, not {messages}: does something else consume it?",
            depth.ready
        );
    }
    let _ = channel.close(200, "pre-loaded".into()).await;
    Ok(started.elapsed().as_secs_f64())
}

/// Runs one side in a process of its own and reads its report.
fn run_side(
    url: &AmqpUrl,
    side: RabbitSide,
    queue: &str,
    messages: u64,
    prefetch: u16,
) -> anyhow::Result<RabbitSideReport> {
    let mut command = Command::new(std::env::current_exe().context("finding this program")?);
    // SAFETY: only async-signal-safe calls between fork and exec; a side
    // outlives no dead bench.
    unsafe {
        command.pre_exec(|| {
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM);
            Ok(())
        });
    }
    let out = command
        .args(["bench-rabbit-side", "--side", side.name(), "--queue", queue])
        .args(["--messages", &messages.to_string()])
        .args(["--prefetch", &prefetch.to_string()])
        // In the environment, not the arguments: `ps` shows arguments.
        .env(rabbit::URL_VARIABLE, url.expose())
        .env(
            "RUST_LOG",
            std::env::var("RUST_LOG").unwrap_or_else(|_| "warn".into()),
        )
        .stdin(Stdio::null())
        .stderr(Stdio::inherit())
        .output()
        .with_context(|| format!("starting the {} process", side.label()))?;
    if !out.status.success() {
        bail!("the {} process failed ({})", side.label(), out.status);
    }
    let stdout = String::from_utf8_lossy(&out.stdout);
    let line = stdout.lines().last().unwrap_or_default();
    serde_json::from_str(line)
        .with_context(|| format!("reading the {} report: {line:?}", side.label()))
}

fn summarize(args: &Args, url: &AmqpUrl, reports: Vec<(u32, RabbitSideReport)>) -> RabbitReport {
    let mut sides = BTreeMap::new();
    for side in RabbitSide::ALL {
        let of: Vec<&RabbitSideReport> = reports
            .iter()
            .filter(|(_, r)| r.side == side)
            .map(|(_, r)| r)
            .collect();
        let Some(first) = of.first() else { continue };
        sides.insert(
            side.name(),
            Summary {
                msgs_per_s: median(of.iter().map(|r| r.msgs_per_s)).round(),
                cpu_us_per_msg: round3(median(of.iter().map(|r| r.cpu_us_per_msg))),
                peak_rss_mib: round3(median(of.iter().map(|r| r.peak_rss_mib))),
                consumer: first.consumer.clone(),
                producer: BTreeMap::new(),
            },
        );
    }
    let ratio = |f: fn(&Summary) -> f64| match (sides.get("pythia"), sides.get("raw")) {
        (Some(a), Some(b)) if f(b) > 0.0 => round3(f(a) / f(b)),
        _ => 0.0,
    };
    let ratios = RabbitRatios {
        pythia_vs_raw: ratio(|s| s.msgs_per_s),
        pythia_cpu_vs_raw: ratio(|s| s.cpu_us_per_msg),
        pythia_rss_vs_raw: ratio(|s| s.peak_rss_mib),
    };
    RabbitReport {
        brokers: url.redacted(),
        broker: "rabbitmq",
        messages: args.messages(),
        message_size: args.message_size,
        prefetch: args.prefetch,
        runs: reports
            .into_iter()
            .map(|(round, r)| Run {
                round,
                side: r.side.name(),
                msgs_per_s: r.msgs_per_s,
                cpu_us_per_msg: r.cpu_us_per_msg,
                user_s: r.user_s,
                system_s: r.system_s,
                peak_rss_mib: r.peak_rss_mib,
                context_switches: r.context_switches,
            })
            .collect(),
        sides,
        ratios,
    }
}

/// The medians and the ratios, for a person.
pub(crate) fn human(report: &RabbitReport) -> String {
    use std::fmt::Write as _;
    let mut text = format!(
        "medians over the rounds (rabbitmq at {}, {} messages of {} B, prefetch {}):\n",
        report.brokers, report.messages, report.message_size, report.prefetch
    );
    for side in RabbitSide::ALL {
        if let Some(s) = report.sides.get(side.name()) {
            let _ = writeln!(
                text,
                "  {:<20} {:>10.0} msg/s  {:>6.3} µs CPU/msg  {:>6.1} MiB peak RSS",
                side.label(),
                s.msgs_per_s,
                s.cpu_us_per_msg,
                s.peak_rss_mib
            );
        }
    }
    let r = &report.ratios;
    let _ = writeln!(
        text,
        "  pass-through: {:.3}× the raw lapin consumer; CPU {:.3}×, peak RSS {:.3}× its",
        r.pythia_vs_raw, r.pythia_cpu_vs_raw, r.pythia_rss_vs_raw
    );
    for side in RabbitSide::ALL {
        if let Some(s) = report.sides.get(side.name()) {
            let settings: Vec<String> =
                s.consumer.iter().map(|(k, v)| format!("{k}={v}")).collect();
            let _ = writeln!(text, "  {}: {}", side.label(), settings.join(" "));
        }
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rounds_alternate_which_side_goes_first() {
        assert_eq!(order(1), [RabbitSide::Raw, RabbitSide::Pythia]);
        assert_eq!(order(2), [RabbitSide::Pythia, RabbitSide::Raw]);
    }
}
