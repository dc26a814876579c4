//! The scale-up cell: one instance busy on a backlog, a second one joins. How
//! long the second waits for its first partition, beside the time the broker
//! itself takes to rebalance a pair of plain rdkafka consumers, and how many
//! commits the first instance saw fail meanwhile.

use std::fmt;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use rdkafka::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};

use crate::broker::{ChaosBroker, INPUT};
use crate::count;
use crate::schedule::{Ended, Fleet};
use crate::settings::{Broker, CLASSIC_SESSION_TIMEOUT, COMMIT_INTERVAL, Protocol};
use crate::workload;

/// How long the first instance works alone before the second starts.
const ALONE: Duration = Duration::from_secs(5);
/// How long the first instance's log is watched after the second got partitions.
const AFTER: Duration = Duration::from_secs(5);
/// The longest wait for a first partition.
const ASSIGN_WAIT: Duration = Duration::from_secs(60);
/// The target for KIP-848: 1 s, doubled for the loaded 2-core machine.
pub(crate) const KIP848_TARGET: Duration = Duration::from_secs(2);

/// What the cell measured.
#[derive(Debug)]
pub(crate) struct ScaleUp {
    /// The broker.
    pub(crate) broker: Broker,
    /// The group protocol.
    pub(crate) protocol: Protocol,
    /// The backlog produced.
    pub(crate) messages: u64,
    /// Inputs not yet committed when the second instance started.
    pub(crate) backlog_at_join: i64,
    /// From the second instance's start to its first partition.
    pub(crate) second_first_partition: Option<Duration>,
    /// The same for the second of two plain rdkafka consumers: the broker's share.
    pub(crate) plain_pair: Option<Duration>,
    /// "offset commit failed" and COMMITFAIL lines in the first instance's log
    /// from the second's start to the end of the watch.
    pub(crate) commit_failures: usize,
    /// From the second's start to the end of the watch.
    pub(crate) window: Duration,
    /// Both instances' exits after SIGTERM.
    pub(crate) exits: Vec<Ended>,
    /// The whole cell.
    pub(crate) took: Duration,
}

impl ScaleUp {
    /// At most one failed commit per commit interval of the window: a failed
    /// commit may be retried at the interval, not in a storm.
    pub(crate) fn commit_failure_bound(&self) -> usize {
        (self.window.as_secs_f64() / COMMIT_INTERVAL.as_secs_f64()).ceil() as usize + 1
    }

    /// The targets this cell missed.
    pub(crate) fn failures(&self) -> Vec<String> {
        let mut failures = Vec::new();
        match (self.protocol, self.second_first_partition) {
            (_, None) => failures.push(format!(
                "the second instance got no partition within {ASSIGN_WAIT:?}"
            )),
            (Protocol::Consumer, Some(d)) if d > KIP848_TARGET => failures.push(format!(
                "with KIP-848 the second instance waited {d:.2?} for its first partition; \
                 the target is {KIP848_TARGET:?} (1 s, doubled for the loaded machine)"
            )),
            _ => {}
        }
        if self.commit_failures > self.commit_failure_bound() {
            failures.push(format!(
                "{} failed commits in the first instance's log within {:.1?}: a commit storm \
                 (at most {} expected, one per commit interval)",
                self.commit_failures,
                self.window,
                self.commit_failure_bound()
            ));
        }
        for ended in self.exits.iter().filter(|e| !e.exit.is_clean()) {
            failures.push(format!("after SIGTERM: {ended}"));
        }
        failures
    }
}

impl fmt::Display for ScaleUp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let secs = |d: Option<Duration>| {
            d.map_or_else(
                || "never".to_owned(),
                |d| format!("{:.2}s", d.as_secs_f64()),
            )
        };
        let exits: Vec<String> = self.exits.iter().map(|e| e.exit.to_string()).collect();
        write!(
            f,
            "scale_up broker={} protocol={} messages={} backlog_at_join={} \
             second_first_partition_after={} plain_pair_rebalance={} commit_failures={} \
             commit_failure_bound={} window={:.1}s exits=[{}] took={}s",
            self.broker,
            self.protocol,
            self.messages,
            self.backlog_at_join,
            secs(self.second_first_partition),
            secs(self.plain_pair),
            self.commit_failures,
            self.commit_failure_bound(),
            self.window.as_secs_f64(),
            exits.join(","),
            self.took.as_secs()
        )
    }
}

/// Runs the cell on a fresh broker.
pub(crate) fn run(kind: Broker, protocol: Protocol, messages: u64, dir: &Path) -> ScaleUp {
    let started = Instant::now();
    let broker = ChaosBroker::start(kind, dir);
    let bootstrap = broker.bootstrap().to_owned();
    // Before the backlog: the broker's own rebalance time, on an idle machine.
    let plain_pair = plain_pair(&bootstrap, protocol);
    let produced = workload::produce(&bootstrap, messages, Duration::ZERO);
    let total: i64 = produced.highs.iter().sum();

    let group = format!("scale-up-{protocol}");
    let mut fleet = Fleet::start(
        workload::workers(&bootstrap, &group, protocol),
        dir.to_owned(),
        1,
    );
    let first_log = dir.join("w0.log");
    let first_assigned = fleet.first_partition("w0", Instant::now(), ASSIGN_WAIT);
    assert!(
        first_assigned.is_some(),
        "the first instance got no partition within {ASSIGN_WAIT:?}; log:\n{}",
        std::fs::read_to_string(&first_log).unwrap_or_default()
    );
    std::thread::sleep(ALONE);

    let committed: i64 = count::committed(&bootstrap, &group)
        .map(|c| c.iter().flatten().sum())
        .unwrap_or(0);
    let log_mark = std::fs::metadata(&first_log).map(|m| m.len()).unwrap_or(0);
    let joined = Instant::now();
    fleet.add();
    let second_first_partition = fleet.first_partition("w1", joined, ASSIGN_WAIT);
    std::thread::sleep(AFTER);
    let window = joined.elapsed();
    let log = std::fs::read(&first_log).unwrap_or_default();
    let since = String::from_utf8_lossy(&log[(log_mark as usize).min(log.len())..]).into_owned();
    let commit_failures = since
        .lines()
        .filter(|l| l.contains("commit failed") || l.contains("COMMITFAIL"))
        .count();
    let exits = fleet.stop_all();
    ScaleUp {
        broker: kind,
        protocol,
        messages,
        backlog_at_join: total - committed,
        second_first_partition,
        plain_pair,
        commit_failures,
        window,
        exits,
        took: started.elapsed(),
    }
}

/// The broker's share of a scale-up: two plain rdkafka consumers with the
/// workers' group settings; the first holds every partition, the second
/// joins. How long the second waited for its first partition; `None` after
/// `ASSIGN_WAIT`.
fn plain_pair(bootstrap: &str, protocol: Protocol) -> Option<Duration> {
    let group = format!("plain-pair-{protocol}");
    let consumer = || -> BaseConsumer {
        let mut config = ClientConfig::new();
        config
            .set("bootstrap.servers", bootstrap)
            .set("group.id", &group)
            .set("enable.auto.commit", "false")
            .set("auto.offset.reset", "latest")
            .set("group.protocol", protocol.as_str());
        if protocol == Protocol::Classic {
            config
                .set("partition.assignment.strategy", "cooperative-sticky")
                .set(
                    "session.timeout.ms",
                    CLASSIC_SESSION_TIMEOUT.as_millis().to_string(),
                );
        }
        let consumer: BaseConsumer = config.create().expect("plain consumer");
        consumer.subscribe(&[INPUT]).expect("subscribe");
        consumer
    };
    let has_partitions = |c: &BaseConsumer| c.assignment().is_ok_and(|a| a.count() > 0);
    // The first consumer polls on its own thread for the whole measure: a
    // member that does not poll cannot take part in a rebalance.
    let running = Arc::new(AtomicBool::new(true));
    let (first_ready, first_ready_rx) = std::sync::mpsc::channel();
    let first = {
        let (running, consumer) = (running.clone(), consumer());
        std::thread::spawn(move || {
            let mut told = false;
            while running.load(Ordering::Relaxed) {
                let _ = consumer.poll(Duration::from_millis(50));
                if !told && has_partitions(&consumer) {
                    let _ = first_ready.send(());
                    told = true;
                }
            }
        })
    };
    let measured = first_ready_rx
        .recv_timeout(ASSIGN_WAIT)
        .ok()
        .and_then(|()| {
            let since = Instant::now();
            let second = consumer();
            while since.elapsed() < ASSIGN_WAIT {
                let _ = second.poll(Duration::from_millis(10));
                if has_partitions(&second) {
                    return Some(since.elapsed());
                }
            }
            None
        });
    running.store(false, Ordering::Relaxed);
    first.join().expect("first plain consumer");
    measured
}
