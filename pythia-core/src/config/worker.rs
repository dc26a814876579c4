//! [`WorkerConfig`]: the runtime's own settings, under `[worker]`, with their
//! defaults and the checks of their ranges.

use std::time::Duration;

use serde::Deserialize;

use crate::dead_letter::DeadLetterConfig;
use crate::error::ConfigError;
use crate::retry::RetryConfig;
use crate::spec::MessageOrder;

/// Settings of the runtime, under `[worker]`.
///
/// ```toml
/// [worker]
/// name = "billing"           # in logs and metrics; defaults to the group
/// # instance = "billing-0"   # this copy of the worker; defaults to "<host name>-<pid>"
/// max_in_flight = 1024       # messages processing at once (until their outputs are handed to the sink)
/// partition_buffer = 5000    # fetched messages held per partition before it pauses
/// partition_buffer_bytes = 4194304  # ... or bytes of payloads and keys waiting in it
/// shutdown_timeout = "30s"   # deadline of the whole shutdown: drain, commit, leave
/// revoke_timeout = "10s"     # drain deadline for partitions taken by a rebalance
/// max_message_bytes = 1048576  # larger payloads are dead-lettered unprocessed (default: no limit)
/// ordering = "partition"     # partition | key | none
/// batch_size = 1             # > 1: process_batch gets up to this many messages
/// batch_timeout = "20ms"     # ... or what arrived within this time
/// cpu_threads = 0            # Context::compute's pool; 0 = one per core
/// compute_inline_below = "10us"  # compute() runs work cheaper than this inline; "0s" = never
///
/// # Tables last: every key after a [table] line belongs to that table.
/// [worker.retry]             # see RetryConfig
/// max_attempts = 3
///
/// [worker.dead_letter]       # see DeadLetterConfig
/// topic = "{topic}.dlq"
/// on_failure = "stop"        # stop | skip: a dead letter refused even reduced
/// ```
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
#[non_exhaustive]
pub struct WorkerConfig {
    /// The worker's name in logs and metrics.
    pub name: Option<String>,
    /// The name of this copy of the worker (`PYTHIA_WORKER__INSTANCE`), told
    /// apart from the other copies in logs, in the `pythia_worker_info`
    /// metric, in the Kafka client id and by [`Context::instance`](crate::Context::instance).
    /// Unset, it is the host name and the process id, `<host>-<pid>` (the
    /// host name from `$HOSTNAME`, which Kubernetes sets to the pod's name):
    /// see [`WorkerConfig::instance_name`].
    pub instance: Option<String>,
    /// Messages that may be processing at once, across all partitions of this
    /// instance; a message holds its place until its outputs are handed to the
    /// sink (awaiting delivery, it counts against `partition_buffer`).
    pub max_in_flight: usize,
    /// Messages a partition may hold, fetched and waiting for their turn or
    /// processed and awaiting delivery; at this many its fetching pauses (the
    /// consumer keeps polling), and it resumes at half. A few hundred more
    /// may have been read by then: the source reads up to 256 messages of a
    /// partition per pass and runs at most two batches ahead of the runtime. A partition flowing at rate R with outputs that take L to
    /// be delivered holds about R × L awaiting delivery alone (100,000 msg/s
    /// at 10 ms: 1,000), so a buffer much smaller than that caps its rate.
    pub partition_buffer: usize,
    /// Bytes (payloads and keys) of a partition's messages waiting for the
    /// lane to start on them; at this many its fetching pauses too, and it
    /// resumes at half. With large messages this, not `partition_buffer`,
    /// bounds the memory a partition holds: 5,000 messages of 1 MiB would
    /// be 5 GiB.
    pub partition_buffer_bytes: usize,
    /// The whole shutdown's deadline: in-flight messages get all but the last
    /// fifth of it (at most 5 s, kept for the final commit and leaving the
    /// group); what has not finished by then is abandoned and redelivered after
    /// a restart. Keep Kubernetes' `terminationGracePeriodSeconds` above it.
    #[serde(with = "humantime_serde")]
    pub shutdown_timeout: Duration,
    /// How long a rebalance waits for a revoked partition's in-flight messages.
    #[serde(with = "humantime_serde")]
    pub revoke_timeout: Duration,
    /// The largest payload processed; larger ones go to the dead-letter topic
    /// unprocessed — reduced to a prefix if they exceed the producer's limit
    /// too (see [`dead_letter`](crate::dead_letter)), so a valid message over
    /// this limit never stops its partition. `None`: no limit beyond the
    /// client's.
    pub max_message_bytes: Option<usize>,
    /// Retries of transient failures.
    pub retry: RetryConfig,
    /// Where messages go when they cannot be processed.
    pub dead_letter: DeadLetterConfig,
    /// Which messages of a partition may be processed at the same time.
    pub ordering: MessageOrder,
    /// Messages handed to `process_batch` at once (1: no batches). Batches
    /// need `ordering = "partition"`.
    pub batch_size: usize,
    /// How long a batch waits to fill up before it is processed anyway.
    #[serde(with = "humantime_serde")]
    pub batch_timeout: Duration,
    /// Threads of the pool `Context::compute` runs CPU work on; 0 for one per core.
    pub cpu_threads: usize,
    /// `Context::compute` runs work inline, on the calling task, while its
    /// recent runs took less than this: handing work to the pool and waking
    /// the task again costs a few microseconds, more than such work saves.
    /// Zero sends all work to the pool.
    #[serde(with = "humantime_serde")]
    pub compute_inline_below: Duration,
}

/// `<host>-<pid>`: the name of a copy of the worker when `worker.instance`
/// is unset.
pub(crate) fn default_instance_name() -> String {
    format!(
        "{}-{}",
        host_name(|name| std::env::var(name).ok()),
        std::process::id()
    )
}

/// The host name: `$HOSTNAME` (the pod's name in Kubernetes; shells set it
/// without exporting it, so it is often missing) or `%COMPUTERNAME%`, else
/// the kernel's, else `localhost`.
fn host_name(var: impl Fn(&str) -> Option<String>) -> String {
    let from_env = ["HOSTNAME", "COMPUTERNAME"].into_iter().filter_map(var);
    let from_files = ["/proc/sys/kernel/hostname", "/etc/hostname"]
        .into_iter()
        .filter_map(|path| std::fs::read_to_string(path).ok());
    from_env
        .chain(from_files)
        .map(|name| name.trim().to_owned())
        .find(|name| !name.is_empty())
        .unwrap_or_else(|| "localhost".to_owned())
}

impl Default for WorkerConfig {
    fn default() -> Self {
        Self {
            name: None,
            instance: None,
            max_in_flight: 1024,
            partition_buffer: 5000,
            partition_buffer_bytes: 4 << 20,
            shutdown_timeout: Duration::from_secs(30),
            revoke_timeout: Duration::from_secs(10),
            max_message_bytes: None,
            retry: RetryConfig::default(),
            dead_letter: DeadLetterConfig::default(),
            ordering: MessageOrder::Partition,
            batch_size: 1,
            batch_timeout: Duration::from_millis(20),
            cpu_threads: 0,
            compute_inline_below: crate::compute::DEFAULT_INLINE_BELOW,
        }
    }
}

impl WorkerConfig {
    /// The name of this copy of the worker: `worker.instance` if set, else
    /// the host name and the process id, `<host>-<pid>`.
    ///
    /// ```
    /// use pythia_core::WorkerConfig;
    /// let mut config = WorkerConfig::default();
    /// // e.g. "billing-7d9f8-x2k4q-1" in a Kubernetes pod, "laptop-4711" elsewhere
    /// assert!(config.instance_name().ends_with(&format!("-{}", std::process::id())));
    /// config.instance = Some("billing-eu-1".into()); // PYTHIA_WORKER__INSTANCE=billing-eu-1
    /// assert_eq!(config.instance_name(), "billing-eu-1");
    /// ```
    pub fn instance_name(&self) -> String {
        match self.instance.as_deref().map(str::trim) {
            Some(instance) if !instance.is_empty() => instance.to_owned(),
            _ => default_instance_name(),
        }
    }

    /// Checks ranges; each error names the key.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self
            .instance
            .as_deref()
            .is_some_and(|i| i.trim().is_empty())
        {
            return Err(ConfigError::invalid(
                "worker.instance",
                "must not be empty; leave it unset for \"<host name>-<pid>\"",
            ));
        }
        if self.max_in_flight == 0 {
            return Err(ConfigError::invalid(
                "worker.max_in_flight",
                "must be at least 1 (1 processes one message at a time)",
            ));
        }
        if self.partition_buffer == 0 {
            return Err(ConfigError::invalid(
                "worker.partition_buffer",
                "must be at least 1",
            ));
        }
        if self.partition_buffer_bytes == 0 {
            return Err(ConfigError::invalid(
                "worker.partition_buffer_bytes",
                "must be at least 1, e.g. 4194304 (4 MiB)",
            ));
        }
        if self.shutdown_timeout.is_zero() {
            return Err(ConfigError::invalid(
                "worker.shutdown_timeout",
                "must be longer than zero, e.g. \"30s\"",
            ));
        }
        if self.max_message_bytes == Some(0) {
            return Err(ConfigError::invalid(
                "worker.max_message_bytes",
                "must be at least 1; leave it unset for no limit",
            ));
        }
        if self.batch_size == 0 {
            return Err(ConfigError::invalid(
                "worker.batch_size",
                "must be at least 1 (1 turns batches off)",
            ));
        }
        if self.batch_size > 1 && self.ordering != MessageOrder::Partition {
            return Err(ConfigError::invalid(
                "worker.batch_size",
                "batches keep a partition's order: use them with worker.ordering = \"partition\", or set batch_size = 1",
            ));
        }
        if self.batch_size > self.max_in_flight {
            return Err(ConfigError::invalid(
                "worker.batch_size",
                format!(
                    "must not exceed worker.max_in_flight ({}): a batch holds that many messages in flight",
                    self.max_in_flight
                ),
            ));
        }
        if self.compute_inline_below > Duration::from_millis(1) {
            return Err(ConfigError::invalid(
                "worker.compute_inline_below",
                "must be at most \"1ms\": work run inline holds up the tokio thread that runs it (default \"10us\"; \"0s\" always uses the pool)",
            ));
        }
        self.retry.validate()?;
        self.dead_letter.validate()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::examples::{self, App, loader};

    #[test]
    fn zero_limits_are_rejected_by_name() {
        let config = WorkerConfig {
            max_in_flight: 0,
            ..WorkerConfig::default()
        };
        assert_eq!(config.validate().unwrap_err().key(), "worker.max_in_flight");
        let config = WorkerConfig {
            partition_buffer_bytes: 0,
            ..WorkerConfig::default()
        };
        let err = config.validate().unwrap_err();
        assert_eq!(err.key(), "worker.partition_buffer_bytes");
        assert!(err.to_string().contains("4 MiB"), "{err}");
    }

    #[test]
    fn compute_inline_below_reads_durations_and_caps_inline_work() {
        let app: App = loader()
            .env([("PYTHIA_WORKER__COMPUTE_INLINE_BELOW", "25us")])
            .load()
            .unwrap();
        assert_eq!(app.worker.compute_inline_below, Duration::from_micros(25));
        app.worker.validate().unwrap();
        assert_eq!(
            WorkerConfig::default().compute_inline_below,
            Duration::from_micros(10)
        );
        let config = WorkerConfig {
            compute_inline_below: Duration::from_millis(5),
            ..WorkerConfig::default()
        };
        let err = config.validate().unwrap_err();
        assert_eq!(err.key(), "worker.compute_inline_below");
        assert!(err.to_string().contains("\"0s\""), "{err}");
    }

    #[test]
    fn the_worker_config_example_loads_as_written() {
        let toml = examples::toml_example(include_str!("worker.rs"), "WorkerConfig");
        assert!(toml.starts_with("[worker]\n"), "{toml}");
        let worker = examples::load_worker(&toml, "worker")
            .unwrap_or_else(|e| panic!("{e}\nin the example:\n{toml}"));
        // Each key landed in the table it is shown in.
        assert_eq!(worker.name.as_deref(), Some("billing"));
        assert_eq!(worker.max_message_bytes, Some(1_048_576));
        assert_eq!(worker.ordering, MessageOrder::Partition);
        assert_eq!(worker.batch_size, 1);
        assert_eq!(worker.batch_timeout, Duration::from_millis(20));
        assert_eq!(worker.compute_inline_below, Duration::from_micros(10));
        assert_eq!(worker.retry.max_attempts, 3);
        assert_eq!(worker.dead_letter.topic, "{topic}.dlq");
    }

    #[test]
    fn the_instance_is_configured_or_the_host_and_pid() {
        let app: App = loader()
            .env([("PYTHIA_WORKER__INSTANCE", "billing-eu-1")])
            .load()
            .unwrap();
        assert_eq!(app.worker.instance_name(), "billing-eu-1");

        let pid = format!("-{}", std::process::id());
        let default = WorkerConfig::default().instance_name();
        assert!(
            default.ends_with(&pid) && default.len() > pid.len(),
            "{default}"
        );

        let err = loader()
            .env([("PYTHIA_WORKER__INSTANCE", " ")])
            .load::<App>()
            .unwrap()
            .worker
            .validate()
            .unwrap_err();
        assert_eq!(err.key(), "worker.instance");
    }

    #[test]
    fn the_host_name_comes_from_the_environment_first() {
        let env = |vars: &'static [(&'static str, &'static str)]| {
            move |name: &str| {
                vars.iter()
                    .find(|(k, _)| *k == name)
                    .map(|(_, v)| v.to_string())
            }
        };
        assert_eq!(host_name(env(&[("HOSTNAME", "pod-7f9c")])), "pod-7f9c");
        assert_eq!(
            host_name(env(&[("HOSTNAME", " "), ("COMPUTERNAME", "DESK-1")])),
            "DESK-1"
        );
        // Neither set: the kernel's name, or `localhost`; never empty.
        assert!(!host_name(env(&[])).is_empty());
    }
}
