//! One report line per chaos run, and the targets the run is held to.

use std::fmt;

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::count::Outputs;
use crate::schedule::Ended;
use crate::settings::{Broker, COMMIT_INTERVAL, Mode, PARTITIONS, Protocol};

/// Slack on top of the commit interval for an output to be committed: its
/// delivery (linger 5 ms), the commit's round trip, and a commit tick that
/// runs late on the loaded machine.
pub(crate) const COMMIT_SLACK: Duration = Duration::from_millis(500);

/// How long after a kill a partition of `in` with no new output counts as the
/// killed instance's: its partitions move only after the session timeout (6 s).
pub(crate) const QUIET: Duration = Duration::from_secs(3);

/// Slack on top of "session timeout + 10 s" for every offset to be committed
/// after the chaos: the loaded 2-core machine, and a classic rebalance on the
/// mock broker waiting `session.timeout.ms - 1 s` for members to rejoin.
pub(crate) const SETTLE_SLACK: Duration = Duration::from_secs(20);

/// The most duplicates a kill at `at` may cause when every commit is accepted
/// within a commit interval, and how many partitions of `in` it stopped.
///
/// What may have been finished without being committed is every output sent
/// within the commit interval (plus `COMMIT_SLACK`) before the kill; what was
/// in flight, one message per partition (partition ordering). Counted over
/// every partition, not only the killed instance's: which partitions it held
/// cannot be told reliably from outside (with KIP-848 the mock hands them on
/// within 2 s, while the next owner catches up), so the bound is the group's.
/// The stopped partitions — those with no output sent in the `QUIET` seconds
/// after the kill — are reported beside it.
pub(crate) fn duplicate_bound(outputs: &Outputs, at: SystemTime) -> (u64, usize) {
    let at_ms = at
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_millis() as i64;
    let window = (COMMIT_INTERVAL + COMMIT_SLACK).as_millis() as i64;
    // The killed process may still send in the first milliseconds after `at`.
    let after = (at_ms + 100, at_ms + QUIET.as_millis() as i64);
    let stopped: Vec<i32> = (0..PARTITIONS)
        .filter(|&p| outputs.sent_between(p, after.0, after.1) == 0)
        .collect();
    let uncommitted: u64 = (0..PARTITIONS)
        .map(|p| outputs.sent_between(p, at_ms - window, at_ms))
        .sum();
    (uncommitted + PARTITIONS as u64, stopped.len())
}

/// The most duplicates a kill at `at` may cause as measured from outside:
/// every output sent by then of an input at or past the group's committed
/// offset of its partition, read just before the kill (`committed`), plus one
/// in flight per partition — the whole group's finished and uncommitted work,
/// of which the killed instance's is a part. No guess at which partitions
/// were the killed instance's: a kill can only repeat uncommitted work.
/// Unlike [`duplicate_bound`] it holds whatever the broker does with the
/// commits: one that refuses them for a while (librdkafka's mock refuses
/// every commit while a classic group is joining, which Kafka accepts from
/// members of the current generation) leaves more uncommitted.
pub(crate) fn measured_bound(
    outputs: &Outputs,
    at: SystemTime,
    committed: &[Option<i64>],
    offsets: &[i64],
) -> u64 {
    let at_ms = at
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_millis() as i64;
    (0..PARTITIONS)
        .map(|p| {
            let from = committed.get(p as usize).copied().flatten().unwrap_or(0);
            // The killed process may still send in the first milliseconds.
            outputs.sent_from_offset(p, from, offsets, at_ms + 100) + 1
        })
        .sum()
}

/// What one run measured.
#[derive(Debug)]
pub(crate) struct Report {
    /// The broker.
    pub(crate) broker: Broker,
    /// The workers' group protocol.
    pub(crate) protocol: Protocol,
    /// How instances were stopped.
    pub(crate) mode: Mode,
    /// The schedule's seed.
    pub(crate) seed: u64,
    /// How long the chaos lasted.
    pub(crate) seconds: u64,
    /// Inputs produced.
    pub(crate) messages: u64,
    /// Instances running at once.
    pub(crate) instances: usize,
    /// Instances started in all.
    pub(crate) spawned: usize,
    /// Instances stopped by the chaos.
    pub(crate) stops: usize,
    /// Input ids never seen in `out`.
    pub(crate) lost: Vec<u64>,
    /// Extra copies in `out`.
    pub(crate) duplicates: u64,
    /// The duplicate bound, summed over the stops (kill mode).
    pub(crate) duplicate_bound: u64,
    /// The same bound with the uncommitted work measured at each kill (see
    /// [`measured_bound`]).
    pub(crate) measured_bound: u64,
    /// Whether the broker accepts commits while a group rebalances, so that
    /// `duplicate_bound` applies; otherwise only `measured_bound` does.
    pub(crate) commits_during_rebalance: bool,
    /// Partitions of `in` the kills stopped, summed over the kills.
    pub(crate) stopped_partitions: usize,
    /// Outputs that are no input id.
    pub(crate) foreign: u64,
    /// Outputs in `out`.
    pub(crate) outputs: usize,
    /// How long after the chaos (and the last input) every offset was committed.
    pub(crate) committed_after: Option<Duration>,
    /// The bound on that.
    pub(crate) committed_bound: Duration,
    /// The committed offsets last read, and the high watermarks.
    pub(crate) committed_last: (Vec<Option<i64>>, Vec<i64>),
    /// The exit of every SIGTERMed instance, rolling restarts then survivors.
    pub(crate) exits: Vec<Ended>,
    /// Instances that exited without being asked.
    pub(crate) died: Vec<Ended>,
    /// The instance the chaos never stopped, if any.
    pub(crate) spared: Option<&'static str>,
    /// The whole run.
    pub(crate) took: Duration,
}

impl Report {
    fn per_stop(&self, n: u64) -> f64 {
        if self.stops == 0 {
            0.0
        } else {
            n as f64 / self.stops as f64
        }
    }

    /// The targets this run missed, each said in a sentence.
    pub(crate) fn failures(&self) -> Vec<String> {
        let mut failures = Vec::new();
        if !self.lost.is_empty() {
            failures.push(format!(
                "{} inputs never reached out (first: {:?})",
                self.lost.len(),
                &self.lost[..self.lost.len().min(10)]
            ));
        }
        if self.foreign > 0 {
            failures.push(format!("{} outputs are no input id", self.foreign));
        }
        if self.committed_after.is_none() {
            failures.push(format!(
                "the group's committed offsets did not reach the high watermarks of in within \
                 {:?} after the chaos: committed {:?}, highs {:?}",
                self.committed_bound, self.committed_last.0, self.committed_last.1
            ));
        }
        for ended in &self.died {
            failures.push(format!("unasked: {ended}"));
        }
        // A final commit the broker refuses until the shutdown deadline ends
        // the worker with exit 1, naming what was not committed: expected
        // only where the broker refuses commits during a rebalance.
        let excused = |e: &&Ended| !self.commits_during_rebalance && e.exit.is_code(1);
        for ended in (self.exits.iter()).filter(|e| !e.exit.is_clean() && !excused(e)) {
            failures.push(format!("after SIGTERM: {ended}"));
        }
        match self.mode {
            // A broker that refuses commits while a group rebalances can make
            // a revoke's commit fail; then the next owner repeats that work.
            Mode::Term if self.duplicates > 0 && self.commits_during_rebalance => {
                failures.push(format!(
                    "{} duplicates in a rolling restart, where 0 are expected",
                    self.duplicates
                ))
            }
            Mode::Kill if self.duplicates > self.measured_bound => failures.push(format!(
                "{} duplicates ({:.1} per kill) exceed what was uncommitted at the kills: {} \
                 ({:.1} per kill: outputs of inputs past the group's committed offsets read \
                 just before each kill, plus one in flight per partition)",
                self.duplicates,
                self.per_stop(self.duplicates),
                self.measured_bound,
                self.per_stop(self.measured_bound),
            )),
            Mode::Kill
                if self.commits_during_rebalance && self.duplicates > self.duplicate_bound =>
            {
                failures.push(format!(
                "{} duplicates ({:.1} per kill) exceed the bound of {} ({:.1} per kill: outputs \
                 of the killed instance's partitions sent within commit_interval {:?} + {:?} \
                 before each kill, plus one in flight per partition)",
                self.duplicates,
                self.per_stop(self.duplicates),
                self.duplicate_bound,
                self.per_stop(self.duplicate_bound),
                COMMIT_INTERVAL,
                COMMIT_SLACK
            ))
            }
            _ => {}
        }
        failures
    }

    /// Publishes the line (see [`publish`]).
    pub(crate) fn publish(&self) {
        publish(&self.to_string());
    }
}

/// Writes a report line straight to the process's stderr, where the test
/// harness does not capture it (passing cells show their figures too), and
/// appends it to the file `CHAOS_REPORT` names, if any.
pub(crate) fn publish(line: &str) {
    pythia_tests::publish_report(line);
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let stopped = match self.mode {
            Mode::Kill => "kills",
            Mode::Term => "terms",
        };
        write!(
            f,
            "chaos broker={} protocol={} mode={} seed={} seconds={} messages={} instances={} \
             started={} {stopped}={} lost={} duplicates={} dup_per_kill={:.1} \
             dup_bound_per_kill={:.1} uncommitted_at_kill={:.1} stopped_partitions_per_kill={:.1} \
             outputs={} foreign={} commits_during_rebalance={} ",
            self.broker,
            self.protocol,
            self.mode,
            self.seed,
            self.seconds,
            self.messages,
            self.instances,
            self.spawned,
            self.stops,
            self.lost.len(),
            self.duplicates,
            self.per_stop(self.duplicates),
            self.per_stop(self.duplicate_bound),
            self.per_stop(self.measured_bound),
            self.per_stop(self.stopped_partitions as u64),
            self.outputs,
            self.foreign,
            self.commits_during_rebalance,
        )?;
        match self.committed_after {
            Some(d) => write!(f, "all_committed_after={:.1}s", d.as_secs_f64())?,
            None => write!(f, "all_committed_after=never")?,
        }
        let exits: Vec<String> = self.exits.iter().map(|e| e.exit.to_string()).collect();
        write!(
            f,
            " bound={}s exits=[{}] died={}",
            self.committed_bound.as_secs(),
            exits.join(","),
            self.died.len(),
        )?;
        if let Some(name) = self.spared {
            write!(f, " spared={name}")?;
        }
        write!(f, " took={}s", self.took.as_secs())
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, UNIX_EPOCH};

    use super::*;
    use crate::schedule::Exit;

    fn ended(name: &str, exit: Exit) -> Ended {
        Ended {
            name: name.to_owned(),
            exit,
            age: Duration::ZERO,
            log: String::new(),
        }
    }

    fn report(mode: Mode, duplicates: u64, duplicate_bound: u64) -> Report {
        Report {
            broker: Broker::Embedded,
            protocol: Protocol::Classic,
            mode,
            seed: 1,
            seconds: 60,
            messages: 100,
            instances: 3,
            spawned: 5,
            stops: 2,
            lost: Vec::new(),
            duplicates,
            duplicate_bound,
            measured_bound: duplicate_bound,
            commits_during_rebalance: true,
            stopped_partitions: 4,
            foreign: 0,
            outputs: 100 + duplicates as usize,
            committed_after: Some(Duration::from_secs(1)),
            committed_bound: Duration::from_secs(36),
            committed_last: (Vec::new(), Vec::new()),
            exits: vec![ended("w0", Exit::Code(0))],
            died: Vec::new(),
            spared: None,
            took: Duration::from_secs(80),
        }
    }

    #[test]
    fn a_rolling_restart_allows_no_duplicate() {
        assert!(report(Mode::Term, 0, 0).failures().is_empty());
        assert_eq!(report(Mode::Term, 1, 0).failures().len(), 1);
    }

    #[test]
    fn kills_allow_duplicates_up_to_the_bound() {
        assert!(report(Mode::Kill, 50, 50).failures().is_empty());
        assert_eq!(report(Mode::Kill, 51, 50).failures().len(), 1);
    }

    #[test]
    fn the_measured_bound_counts_outputs_past_the_committed_offsets_sent_by_the_kill() {
        let at = UNIX_EPOCH + Duration::from_secs(100);
        let ms = 100_000;
        // Ids 0..24: id `i` on partition `i % 8` at offset `i / 8`.
        let offsets: Vec<i64> = (0..24).map(|i| i / 8).collect();
        // Offsets 0 and 1 of every partition sent before the kill, offset 2
        // after it (by the next owner: not the kill's to repeat).
        let sent: Vec<(u64, i64)> = (0..24)
            .map(|i| (i, if i < 16 { ms - 500 } else { ms + 5_000 }))
            .collect();
        let outputs = Outputs::from_parts(24, &sent);
        // Partition 0 committed up to 1, partition 1 to 2, the rest never.
        let mut committed = vec![None; PARTITIONS as usize];
        committed[0] = Some(1);
        committed[1] = Some(2);
        // Uncommitted and sent by the kill: 1 on partition 0, none on 1, 2 on
        // each of the other 6; plus one in flight per partition.
        assert_eq!(
            measured_bound(&outputs, at, &committed, &offsets),
            1 + 6 * 2 + 8
        );
    }

    #[test]
    fn loss_a_stall_and_an_unclean_exit_each_fail() {
        let mut r = report(Mode::Kill, 0, 10);
        r.lost = vec![7];
        r.committed_after = None;
        r.exits.push(ended("w1", Exit::Signal(15)));
        assert_eq!(r.failures().len(), 3);
    }

    #[test]
    fn the_bound_counts_the_commit_window_of_every_partition_and_reports_the_stopped() {
        let at = UNIX_EPOCH + Duration::from_secs(100);
        let ms = 100_000;
        // Every partition had outputs in the window before the kill (1.5 s);
        // partitions 1 and 2 have none in the 3 s after it: the killed ones.
        let mut sent = Vec::new();
        for p in 0..PARTITIONS as u64 {
            sent.extend([(p, ms - 2_000), (p + 8, ms - 1_000), (p + 16, ms)]);
            if p != 1 && p != 2 {
                sent.push((p + 24, ms + 1_000));
            }
        }
        // Partition 1 again after the session timeout: not in the quiet window.
        sent.push((1, ms + 7_000));
        let outputs = Outputs::from_parts(32, &sent);
        // Two outputs in the window on each of the 8 partitions, plus one in
        // flight on each; partitions 1 and 2 stopped.
        assert_eq!(duplicate_bound(&outputs, at), (2 * 8 + 8, 2));
    }
}
