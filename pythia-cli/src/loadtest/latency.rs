//! `pythia loadtest --latency`: end-to-end latency at half the measured
//! maximum rate, for Pythia workers and for the classic rdkafka poll loop
//! under the same load.
//!
//! A first run produces `--messages` as fast as it can and measures the
//! throughput; two runs then produce at half of it (or at `--rate`) for
//! `--duration`, one with Pythia instances and one with raw ones
//! (`loadtest-worker --raw`). Latency is from each message's create time to
//! its processing, as every load-test instance reports it.

use std::time::Duration;

use serde::Serialize;

use super::load::Pace;
use super::report::{Latency, RunReport, round3};
use super::{RunContext, Spec};

/// How long the measured runs produce when `--duration` is not given.
const DEFAULT_DURATION: Duration = Duration::from_secs(10);

/// What `--latency --json` prints.
#[derive(Debug, Serialize)]
pub(crate) struct LatencyReport {
    /// The throughput of the flat-out run (0 when `--rate` was given).
    pub(crate) max_msgs_per_s: f64,
    /// The rate both measured runs produced at.
    pub(crate) rate_msgs_per_s: f64,
    pub(crate) seconds: f64,
    pub(crate) pythia: Side,
    pub(crate) raw: Side,
    /// Pythia's p99 minus the raw loop's, in milliseconds.
    pub(crate) p99_over_raw_ms: f64,
}

/// One side's measured run.
#[derive(Debug, Serialize)]
pub(crate) struct Side {
    pub(crate) latency_ms: Latency,
    pub(crate) throughput_msgs_per_s: f64,
    pub(crate) lost: u64,
    pub(crate) duplicates: u64,
}

impl From<&RunReport> for Side {
    fn from(r: &RunReport) -> Self {
        Self {
            latency_ms: r.latency_ms,
            throughput_msgs_per_s: r.throughput_msgs_per_s,
            lost: r.lost,
            duplicates: r.duplicates,
        }
    }
}

/// Runs the three runs and reports.
pub(crate) fn run(ctx: &RunContext<'_>) -> anyhow::Result<LatencyReport> {
    let args = ctx.args;
    let count = args.instances as usize;
    let (max, rate) = match args.rate {
        Some(rate) => (0.0, rate),
        None => {
            let (flat, _) = ctx.run_spec(
                0,
                Spec {
                    count,
                    messages: args.messages,
                    pace: Pace::Flat,
                    raw: false,
                },
            )?;
            ctx.say(format_args!(
                "maximum: {:.0} msg/s with {count} instance(s), {} messages",
                flat.throughput_msgs_per_s, args.messages
            ));
            (
                flat.throughput_msgs_per_s,
                (flat.throughput_msgs_per_s / 2.0).max(1.0),
            )
        }
    };
    let duration = args.duration.unwrap_or(DEFAULT_DURATION);
    let messages = ((rate * duration.as_secs_f64()).round() as u64).max(1);
    let mut sides = Vec::new();
    for (index, raw) in [(1, false), (2, true)] {
        let (report, _) = ctx.run_spec(
            index,
            Spec {
                count,
                messages,
                pace: Pace::Rate(rate),
                raw,
            },
        )?;
        ctx.say(format_args!(
            "{:<18} at {rate:.0} msg/s: p50 {:.2} ms, p99 {:.2} ms, p999 {:.2} ms (lost {}, duplicates {})",
            if raw { "raw poll loop" } else { "pythia" },
            report.latency_ms.p50,
            report.latency_ms.p99,
            report.latency_ms.p999,
            report.lost,
            report.duplicates
        ));
        sides.push(Side::from(&report));
    }
    let raw = sides.pop().unwrap_or_else(|| unreachable!("two runs"));
    let pythia = sides.pop().unwrap_or_else(|| unreachable!("two runs"));
    Ok(LatencyReport {
        max_msgs_per_s: max.round(),
        rate_msgs_per_s: rate.round(),
        seconds: duration.as_secs_f64(),
        p99_over_raw_ms: round3(pythia.latency_ms.p99 - raw.latency_ms.p99),
        pythia,
        raw,
    })
}

/// The lines a person reads.
pub(crate) fn human(r: &LatencyReport) -> String {
    format!(
        "latency at {:.0} msg/s{} for {:.0} s, from the create time:\n  pythia         p50 {:.2} ms  p99 {:.2} ms  p999 {:.2} ms\n  raw poll loop  p50 {:.2} ms  p99 {:.2} ms  p999 {:.2} ms\n  pythia's p99 is {:+.2} ms the raw loop's\n",
        r.rate_msgs_per_s,
        if r.max_msgs_per_s > 0.0 {
            format!(" (half of the measured {:.0})", r.max_msgs_per_s)
        } else {
            String::new()
        },
        r.seconds,
        r.pythia.latency_ms.p50,
        r.pythia.latency_ms.p99,
        r.pythia.latency_ms.p999,
        r.raw.latency_ms.p50,
        r.raw.latency_ms.p99,
        r.raw.latency_ms.p999,
        r.p99_over_raw_ms
    )
}
