//! What one chaos run is: its broker, group protocol and mode, the `CHAOS_*`
//! knobs, and the worker settings the targets are computed from.

use std::fmt;
use std::time::Duration;

/// Partitions of `in` (and of `out`).
pub(crate) const PARTITIONS: i32 = 8;

/// The workers' `kafka.commit_interval`, set explicitly (it is the shipped
/// default) so the duplicate bound can be computed from it.
pub(crate) const COMMIT_INTERVAL: Duration = Duration::from_secs(1);

/// The workers' `kafka.session_timeout` on the classic protocol: the failure
/// detection time of a killed member, the same as the embedded broker's KIP-848
/// session timeout, so both protocols detect a crash equally fast.
pub(crate) const CLASSIC_SESSION_TIMEOUT: Duration = Duration::from_secs(6);

/// The session timeout of a KIP-848 group on a broker other than the embedded
/// one: Kafka's default `group.consumer.session.timeout.ms`.
const KIP848_DEFAULT_SESSION_TIMEOUT: Duration = Duration::from_secs(45);

/// The workers' `worker.shutdown_timeout`: a SIGTERMed instance must have
/// exited by then.
pub(crate) const SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(10);

/// The test worker's `TEST_DELAY_MS`: each message's simulated I/O.
pub(crate) const DELAY_MS: u64 = 1;

/// Which broker the run uses; both are separate processes reached by address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Broker {
    /// `pythia broker`: librdkafka's mock cluster in its own process.
    Embedded,
    /// Tansu, an independent Kafka-compatible broker.
    Tansu,
}

/// The consumer-group protocol of the workers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Protocol {
    /// KIP-848 (`group.protocol=consumer`).
    Consumer,
    /// The classic protocol with `cooperative-sticky`.
    Classic,
}

/// How instances are stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Mode {
    /// SIGKILL: a crash.
    Kill,
    /// SIGTERM, waiting for the exit: a rolling restart.
    Term,
}

impl Protocol {
    /// The value of `PYTHIA_KAFKA__GROUP_PROTOCOL`.
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Self::Consumer => "consumer",
            Self::Classic => "classic",
        }
    }

    /// How long a killed member keeps its partitions on `broker`.
    pub(crate) fn session_timeout(self, broker: Broker) -> Duration {
        match (self, broker) {
            (Self::Classic, _) => CLASSIC_SESSION_TIMEOUT,
            (Self::Consumer, Broker::Embedded) => {
                pythia_tests::pythia_kafka::EMBEDDED_SESSION_TIMEOUT
            }
            (Self::Consumer, Broker::Tansu) => KIP848_DEFAULT_SESSION_TIMEOUT,
        }
    }
}

impl fmt::Display for Broker {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Embedded => "embedded",
            Self::Tansu => "tansu",
        })
    }
}

impl fmt::Display for Protocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl fmt::Display for Mode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Kill => "kill",
            Self::Term => "term",
        })
    }
}

/// The `CHAOS_*` knobs.
#[derive(Debug, Clone)]
pub(crate) struct Knobs {
    /// `CHAOS_SEED`: the seed of the first run.
    pub(crate) seed: u64,
    /// `CHAOS_SECONDS`: how long the chaos lasts.
    pub(crate) seconds: u64,
    /// `CHAOS_MESSAGES`: messages produced, evenly over the chaos.
    pub(crate) messages: u64,
    /// `CHAOS_INSTANCES`: worker processes running at once.
    pub(crate) instances: usize,
    /// `CHAOS_RUNS`: runs of each cell, with seeds `seed`, `seed + 1`, ...
    pub(crate) runs: u64,
    /// `CHAOS_SCALE_MESSAGES`: the backlog of the scale-up cells.
    pub(crate) scale_messages: u64,
}

impl Knobs {
    /// Reads the knobs; an unparsable value fails the test.
    pub(crate) fn from_env() -> Self {
        let knobs = Self {
            seed: var("CHAOS_SEED", 42),
            seconds: var("CHAOS_SECONDS", 60),
            messages: var("CHAOS_MESSAGES", 20_000),
            instances: var("CHAOS_INSTANCES", 3),
            runs: var("CHAOS_RUNS", 1),
            scale_messages: var("CHAOS_SCALE_MESSAGES", 200_000),
        };
        assert!(knobs.instances >= 2, "CHAOS_INSTANCES must be at least 2");
        assert!(knobs.messages >= 1, "CHAOS_MESSAGES must be at least 1");
        assert!(knobs.seconds >= 1, "CHAOS_SECONDS must be at least 1");
        knobs
    }
}

fn var<T: std::str::FromStr>(name: &str, default: T) -> T {
    match std::env::var(name) {
        Ok(v) if !v.trim().is_empty() => v
            .trim()
            .replace('_', "")
            .parse()
            .unwrap_or_else(|_| panic!("{name}={v} is not a number")),
        _ => default,
    }
}
