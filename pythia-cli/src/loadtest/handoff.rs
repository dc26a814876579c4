//! `pythia loadtest --handoff`: what a busy group goes through when an
//! instance joins, for each group protocol.
//!
//! One instance processes a steady load (`--rate`, default 20,000 msg/s, for
//! `--duration`, default 20 s); a third of the way in a second instance
//! starts. Measured from that start: when it holds partitions, when it
//! processes its first message, and when the group has caught up again —
//! its backlog (produced − processed) back within what it was in the second
//! before the join plus 20 ms of the load. Also the longest time the whole
//! group processed nothing while messages waited, and losses and duplicates.

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use serde::Serialize;

use super::fleet::{Fleet, Setup};
use super::load::{Load, Pace, Plan};
use super::report::round3;
use super::{JOIN_TIMEOUT, RunContext, STOP_TIMEOUT};

const DEFAULT_RATE: f64 = 20_000.0;
const DEFAULT_DURATION: Duration = Duration::from_secs(20);
const SAMPLE_EVERY: Duration = Duration::from_millis(10);
/// The session timeout of classic groups on the embedded broker, whose
/// rebalances wait `session.timeout.ms` − 1 s (see `pythia broker`).
const EMBEDDED_CLASSIC_SESSION: &str = "6s";

/// One protocol's hand-off, as `--json` prints it.
#[derive(Debug, Serialize)]
pub(crate) struct Handoff {
    pub(crate) protocol: &'static str,
    pub(crate) rate_msgs_per_s: f64,
    /// From the second instance's start to its first assigned partition.
    pub(crate) assigned_after_s: Option<f64>,
    /// From its start to its first processed message.
    pub(crate) first_message_after_s: Option<f64>,
    /// From its start until the group's backlog is back where it was.
    pub(crate) caught_up_after_s: Option<f64>,
    /// The longest stretch, after the start, in which the group processed
    /// nothing while messages waited.
    pub(crate) longest_pause_s: f64,
    /// The backlog before the join and its peak after.
    pub(crate) backlog_before: u64,
    pub(crate) backlog_peak: u64,
    pub(crate) lost: u64,
    pub(crate) duplicates: u64,
}

/// Runs the hand-off for both protocols.
pub(crate) fn run(ctx: &RunContext<'_>) -> anyhow::Result<Vec<Handoff>> {
    let mut results = Vec::new();
    for (index, protocol) in ["consumer", "classic"].into_iter().enumerate() {
        let handoff = once(ctx, index, protocol)?;
        ctx.say(format_args!("{}", human_one(&handoff)));
        results.push(handoff);
    }
    Ok(results)
}

fn once(ctx: &RunContext<'_>, index: usize, protocol: &'static str) -> anyhow::Result<Handoff> {
    let args = ctx.args;
    let rate = args.rate.unwrap_or(DEFAULT_RATE);
    let duration = args.duration.unwrap_or(DEFAULT_DURATION);
    let messages = ((rate * duration.as_secs_f64()).round() as u64).max(1);
    let name = format!("pythia-loadtest-{}-handoff-{index}", std::process::id());
    ctx.create_topic(&name)?;
    let brokers = ctx.brokers();
    if protocol == "classic" && ctx.broker.is_some() {
        ctx.say(format_args!(
            "classic on the embedded broker: session timeout {EMBEDDED_CLASSIC_SESSION} (its rebalances wait the session timeout less 1 s)"
        ));
    }
    let setup = Setup {
        brokers: &brokers,
        embedded: ctx.broker.is_some(),
        group: &name,
        topic: &name,
        work: args.work,
        concurrency: args.concurrency.map(|c| c as usize),
        raw: false,
        protocol: Some(protocol),
        session_timeout: (protocol == "classic" && ctx.broker.is_some())
            .then_some(EMBEDDED_CLASSIC_SESSION),
    };
    let load = Load::prepare(
        ctx.producer,
        Plan {
            topic: name.clone(),
            partitions: args.partitions,
            messages,
            message_size: args.message_size as usize,
            pace: Pace::Rate(rate),
            warm_up: true,
        },
    )?;
    let mut fleet = Fleet::start(&setup, 1, messages)?;
    fleet.wait_joined(args.partitions as usize, JOIN_TIMEOUT)?;
    load.wait_ready()?;
    let started = Instant::now();
    load.go();
    let join_at = duration / 3;
    let mut joined: Option<Instant> = None;
    let mut samples: Vec<(Instant, u64, u64)> = Vec::new();
    let mut last_move = Instant::now();
    let mut last_unique = 0;
    loop {
        std::thread::sleep(SAMPLE_EVERY);
        let unique = fleet.tally().unique;
        let produced = load.deliveries.delivered.load(Ordering::Relaxed);
        let now = Instant::now();
        samples.push((now, produced, unique));
        if joined.is_none() && started.elapsed() >= join_at {
            fleet.add(&setup)?;
            joined = Some(Instant::now());
        }
        if unique >= messages {
            break;
        }
        if unique != last_unique || !load.is_finished() {
            last_unique = unique;
            last_move = now;
        } else if last_move.elapsed() > args.timeout {
            eprintln!("nothing processed for {:?}: stopping", args.timeout);
            break;
        }
        fleet.check_alive()?;
    }
    let load_result = load.join();
    let (tally, failed) = fleet.finish(STOP_TIMEOUT);
    if let Err(error) = load_result {
        eprintln!("load: {error:#}");
    }
    if failed > 0 {
        eprintln!("{failed} instance(s) failed; their logs are above");
    }
    let joined = joined.unwrap_or(started);
    let after = |at: Option<Instant>| {
        at.map(|at| round3(at.saturating_duration_since(joined).as_secs_f64()))
    };
    let second = |v: &Vec<Option<Instant>>| v.get(1).copied().flatten();
    let measured = measure(&samples, joined, rate);
    Ok(Handoff {
        protocol,
        rate_msgs_per_s: rate,
        assigned_after_s: after(second(&tally.assigned_at)),
        first_message_after_s: after(second(&tally.first_at)),
        caught_up_after_s: measured.caught_up.map(|d| round3(d.as_secs_f64())),
        longest_pause_s: round3(measured.longest_pause.as_secs_f64()),
        backlog_before: measured.before,
        backlog_peak: measured.peak,
        lost: messages.saturating_sub(tally.unique),
        duplicates: tally.processed - tally.unique,
    })
}

/// What the samples show about the join at `joined`.
#[derive(Debug, PartialEq)]
struct Measured {
    before: u64,
    peak: u64,
    caught_up: Option<Duration>,
    longest_pause: Duration,
}

/// From samples of (time, produced, processed): the backlog in the second
/// before `joined`, its peak after, when it is back within that plus 20 ms
/// of `rate` (after having risen above it), and the longest stretch after
/// `joined` with nothing processed while the backlog was not empty.
fn measure(samples: &[(Instant, u64, u64)], joined: Instant, rate: f64) -> Measured {
    let backlog =
        |&(_, produced, processed): &(Instant, u64, u64)| produced.saturating_sub(processed);
    let before = samples
        .iter()
        .filter(|s| s.0 < joined && joined.duration_since(s.0) <= Duration::from_secs(1))
        .map(backlog)
        .max()
        .unwrap_or(0);
    let after: Vec<&(Instant, u64, u64)> = samples.iter().filter(|s| s.0 >= joined).collect();
    let peak = after.iter().map(|s| backlog(s)).max().unwrap_or(0);
    let bound = before + (rate * 0.02).ceil() as u64;
    let risen = after.iter().position(|s| backlog(s) > bound);
    let caught_up = match risen {
        // It never fell behind.
        None => Some(Duration::ZERO),
        Some(i) => after[i..]
            .iter()
            .find(|s| backlog(s) <= bound)
            .map(|s| s.0.duration_since(joined)),
    };
    let mut longest_pause = Duration::ZERO;
    let mut still_since: Option<Instant> = None;
    for pair in after.windows(2) {
        let (a, b) = (pair[0], pair[1]);
        if b.2 == a.2 && backlog(a) > 0 {
            let since = *still_since.get_or_insert(a.0);
            longest_pause = longest_pause.max(b.0.duration_since(since));
        } else {
            still_since = None;
        }
    }
    Measured {
        before,
        peak,
        caught_up,
        longest_pause,
    }
}

fn human_one(h: &Handoff) -> String {
    let s = |v: Option<f64>| v.map_or_else(|| "never".to_owned(), |v| format!("{v:.2} s"));
    format!(
        "hand-off, group protocol {} at {:.0} msg/s: the joining instance held partitions after {}, processed its first message after {}; the group caught up after {} (backlog {} before, peak {}); longest pause {:.2} s; lost {}, duplicates {}",
        h.protocol,
        h.rate_msgs_per_s,
        s(h.assigned_after_s),
        s(h.first_message_after_s),
        s(h.caught_up_after_s),
        h.backlog_before,
        h.backlog_peak,
        h.longest_pause_s,
        h.lost,
        h.duplicates
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_join_that_stalls_the_group_is_measured_from_the_samples() {
        let t0 = Instant::now();
        let at = |ms: u64| t0 + Duration::from_millis(ms);
        // 1000 msg/s; the backlog holds at 10 until the join at 1000 ms,
        // nothing is processed from 1000 to 1400 ms, then it catches up.
        let samples = vec![
            (at(500), 500, 490),
            (at(900), 900, 890),
            (at(1000), 1000, 990),
            (at(1200), 1200, 990),
            (at(1400), 1400, 990),
            (at(1600), 1600, 1500),
            (at(1800), 1800, 1795),
        ];
        let m = measure(&samples, at(1000), 1000.0);
        assert_eq!(m.before, 10);
        assert_eq!(m.peak, 410);
        assert_eq!(m.caught_up, Some(Duration::from_millis(800)));
        assert_eq!(m.longest_pause, Duration::from_millis(400));
    }

    #[test]
    fn a_join_nobody_notices_catches_up_at_once() {
        let t0 = Instant::now();
        let samples = vec![(t0, 100, 95), (t0 + Duration::from_millis(10), 110, 105)];
        let m = measure(&samples, t0, 1000.0);
        assert_eq!(m.caught_up, Some(Duration::ZERO));
        assert_eq!(m.longest_pause, Duration::ZERO);
    }
}
