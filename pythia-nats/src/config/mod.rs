//! NATS settings under `[nats]`, and the full worker configuration.
//!
//! This file holds [`Config`] and its loading (the worker's declared defaults
//! < `pythia.toml` < `PYTHIA_*` variables < code), and the `[nats]` section
//! ([`NatsConfig`]) with its checks; the server URL, whose password is never
//! shown, is in [`url`].

mod url;

pub use url::{DEFAULT_URL, NatsUrl};

use std::collections::BTreeMap;
use std::time::Duration;

use pythia_core::{
    ConfigError, ConfigLoader, HealthConfig, MetricsConfig, Worker, WorkerConfig, WorkerSpec,
};
use serde::Deserialize;

/// Everything a NATS worker is configured with: `[worker]`, `[nats]`,
/// `[metrics]` and `[health]`.
///
/// Any other top-level key is an error naming it, except the sections of
/// the other connectors (`[kafka]`, `[rabbitmq]`, `[redis]`) and the Kafka connector's
/// `[log]` and `[otel]`: a worker between brokers keeps them in one
/// `pythia.toml`, and each connector reads and checks its own.
///
/// ```
/// use pythia_core::ConfigLoader;
/// use pythia_nats::Config;
///
/// let config = Config::from_loader(
///     ConfigLoader::new()
///         .no_file()
///         .env([("PYTHIA_NATS__SUBJECT", "jobs"), ("PYTHIA_NATS__CONCURRENCY", "8")]),
/// )?;
/// assert_eq!(config.nats.subject.as_deref(), Some("jobs"));
/// assert_eq!(config.nats.concurrency, 8);
/// assert_eq!(config.nats.stream_name(), "jobs");
/// assert_eq!(config.name(), "jobs");
/// # Ok::<(), pythia_core::ConfigError>(())
/// ```
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct Config {
    /// Runtime settings.
    #[serde(default)]
    pub worker: WorkerConfig,
    /// Server connection, stream, consumer and publishing settings.
    #[serde(default)]
    pub nats: NatsConfig,
    /// The `/metrics` and `/health/*` server, and how often the consumer is read.
    #[serde(default)]
    pub metrics: MetricsConfig,
    /// When the worker counts as stuck.
    #[serde(default)]
    pub health: HealthConfig,
    /// `[kafka]`, left to the Kafka connector.
    #[serde(default, rename = "kafka")]
    _kafka: serde::de::IgnoredAny,
    /// `[rabbitmq]`, left to the RabbitMQ connector.
    #[serde(default, rename = "rabbitmq")]
    _rabbitmq: serde::de::IgnoredAny,
    /// `[redis]`, left to the Redis connector.
    #[serde(default, rename = "redis")]
    _redis: serde::de::IgnoredAny,
    /// `[log]` and `[otel]`, the Kafka connector's log and trace export
    /// settings, in the `pythia.toml` of a worker that uses both.
    #[serde(default, rename = "log")]
    _log: serde::de::IgnoredAny,
    #[serde(default, rename = "otel")]
    _otel: serde::de::IgnoredAny,
}

impl Config {
    /// Loads from `pythia.toml` (or `PYTHIA_CONFIG`) and `PYTHIA_*` variables,
    /// with the defaults of [`Config::spec_defaults`] for no worker, and
    /// validates.
    ///
    /// # Errors
    ///
    /// A [`ConfigError`] naming the first bad or missing key.
    pub fn load() -> Result<Self, ConfigError> {
        Self::from_loader(Self::spec_defaults(
            ConfigLoader::new(),
            &WorkerSpec::UNNAMED,
        ))
    }

    /// Loads the configuration of worker `W`: its declared [`WorkerSpec`]
    /// (the derive's `topic` is the subject, `output` the output subject),
    /// then `pythia.toml`, then `PYTHIA_*` variables; and validates.
    ///
    /// # Errors
    ///
    /// A [`ConfigError`] naming the first bad or missing key.
    pub fn for_worker<W: Worker>() -> Result<Self, ConfigError> {
        Self::from_loader(Self::loader_for::<W>())
    }

    /// A loader whose defaults are `W`'s declared [`WorkerSpec`]; add code
    /// defaults or overrides to it, then pass it to [`Config::from_loader`].
    pub fn loader_for<W: Worker>() -> ConfigLoader {
        Self::spec_defaults(ConfigLoader::new(), &W::SPEC)
    }

    /// Adds the keys `spec` declares as defaults of `loader`.
    ///
    /// A stream consumed by a shared pull consumer has no partitions, so
    /// unless the worker declares an ordering the default is
    /// `worker.ordering = "none"`: the messages an instance holds (up to
    /// `nats.concurrency`) are processed at the same time.
    pub fn spec_defaults(loader: ConfigLoader, spec: &WorkerSpec) -> ConfigLoader {
        loader.queue_spec_defaults(spec, "nats", "subject")
    }

    /// Loads with a loader carrying code defaults or overrides, and validates.
    ///
    /// # Errors
    ///
    /// A [`ConfigError`] naming the first bad or missing key.
    pub fn from_loader(loader: ConfigLoader) -> Result<Self, ConfigError> {
        let config: Self = loader.load()?;
        config.validate()?;
        Ok(config)
    }

    /// Checks every setting; the error names the first bad key.
    ///
    /// # Errors
    ///
    /// A [`ConfigError`] naming the first bad or missing key.
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.worker.validate()?;
        self.metrics.validate()?;
        self.health.validate()?;
        self.nats.validate()?;
        if let Some(name) = &self.nats.consumer
            && let Some(reason) = name_error(name)
        {
            return Err(ConfigError::invalid("nats.consumer", reason));
        }
        Ok(())
    }

    /// The worker's name: `worker.name`, else the subject.
    pub fn name(&self) -> &str {
        self.worker
            .name
            .as_deref()
            .or(self.nats.subject.as_deref())
            .unwrap_or("pythia")
    }

    /// The durable consumer the instances share: `nats.consumer`, else the
    /// worker's name made a valid consumer name (`.` becomes `_`).
    pub fn consumer_name(&self) -> String {
        match &self.nats.consumer {
            Some(name) => name.trim().to_owned(),
            None => safe_name(self.name()),
        }
    }

    /// The subject dead letters go to: `worker.dead_letter.topic` with
    /// `{topic}` standing for the input subject (`jobs.dlq` by default).
    pub fn dead_letter_subject(&self) -> Option<String> {
        let subject = self.nats.subject.as_deref()?;
        self.worker
            .dead_letter
            .enabled
            .then(|| self.worker.dead_letter.topic_for(subject.trim()))
    }
}

/// What the worker does when the stream or the consumer is missing.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
#[non_exhaustive]
pub enum Create {
    /// Create the input stream (work-queue retention), the dead-letter
    /// stream and the durable consumer when missing; existing ones are used
    /// as they are.
    #[default]
    Missing,
    /// Expect the stream and the consumer to exist; create nothing.
    Never,
}

/// The `[nats]` section.
///
/// ```toml
/// [nats]
/// url = "nats://127.0.0.1:4222"   # password or token: PYTHIA_NATS__URL, never logged
/// subject = "jobs"                # the subject consumed
/// stream = "JOBS"                 # the stream holding it (default: the subject, `.` as `_`)
/// consumer = "jobs-workers"       # the durable pull consumer the instances share
/// create = "missing"              # missing | never (stream and consumer must exist)
/// concurrency = 4                 # messages one instance holds at once
/// ack_wait = "30s"                # unacknowledged for this long: redelivered
/// max_deliver = 10                # deliveries before a message is dead-lettered unprocessed
/// max_ack_pending = 1000          # unacknowledged messages of all instances together
/// fetch_wait = "1s"               # how long one pull request waits for messages
/// output = "results"              # subject of outputs that name no sink
/// sinks = { audit = "audit" }     # named sinks: Output::to("audit")
/// dead_letter_stream = "JOBS_DLQ" # stream created for the dead-letter subject
/// publish_timeout = "30s"         # a publish without PubAck by then fails its input
/// reconnect_min = "100ms"         # first wait before reconnecting
/// reconnect_max = "5s"            # longest wait between attempts
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
#[non_exhaustive]
pub struct NatsConfig {
    /// The server: `nats://user:password@host:4222`.
    pub url: NatsUrl,
    /// The subject to consume (the consumer's filter subject).
    pub subject: Option<String>,
    /// The stream that holds the subject; by default the subject with `.`
    /// as `_`.
    pub stream: Option<String>,
    /// The durable pull consumer the instances share; by default the
    /// worker's name.
    pub consumer: Option<String>,
    /// Whether to create what is missing.
    pub create: Create,
    /// Messages this instance holds at once (fetched and not yet
    /// acknowledged): 4 for general jobs, 2 for CPU-bound, 8 or more for
    /// I/O-bound ones.
    pub concurrency: usize,
    /// How long the server waits for an acknowledgement before it delivers
    /// the message again; work in progress is extended with progress acks
    /// every `progress_interval`.
    #[serde(with = "humantime_serde")]
    pub ack_wait: Duration,
    /// How often a held message is reported in progress (`+WPI`); by
    /// default a third of `ack_wait`.
    #[serde(with = "humantime_serde")]
    pub progress_interval: Option<Duration>,
    /// Deliveries of one message (the consumer's `max_deliver`); the last
    /// one is dead-lettered without being processed, since the earlier ones
    /// ended without an acknowledgement (a crash, a stall). `-1`: unlimited.
    pub max_deliver: i64,
    /// Unacknowledged messages of all instances together (the consumer's
    /// `max_ack_pending`): the server stops handing out messages beyond it.
    pub max_ack_pending: i64,
    /// How long one pull request waits for messages.
    #[serde(with = "humantime_serde")]
    pub fetch_wait: Duration,
    /// The subject of outputs that name no sink.
    pub output: Option<String>,
    /// Named sinks: the subject of each.
    pub sinks: BTreeMap<String, String>,
    /// The stream created for the dead-letter subject when missing; by
    /// default the input stream's name with `_DLQ`.
    pub dead_letter_stream: Option<String>,
    /// How long a publish may wait for its PubAck, reconnects included.
    #[serde(with = "humantime_serde")]
    pub publish_timeout: Duration,
    /// The first wait before reconnecting; it doubles at each failed attempt.
    #[serde(with = "humantime_serde")]
    pub reconnect_min: Duration,
    /// The longest wait between reconnect attempts.
    #[serde(with = "humantime_serde")]
    pub reconnect_max: Duration,
}

impl Default for NatsConfig {
    fn default() -> Self {
        Self {
            url: NatsUrl::default(),
            subject: None,
            stream: None,
            consumer: None,
            create: Create::Missing,
            concurrency: 4,
            ack_wait: Duration::from_secs(30),
            progress_interval: None,
            max_deliver: 10,
            max_ack_pending: 1000,
            fetch_wait: Duration::from_secs(1),
            output: None,
            sinks: BTreeMap::new(),
            dead_letter_stream: None,
            publish_timeout: Duration::from_secs(30),
            reconnect_min: Duration::from_millis(100),
            reconnect_max: Duration::from_secs(5),
        }
    }
}

impl NatsConfig {
    /// Checks the section; the error names the key and the fix.
    ///
    /// # Errors
    ///
    /// A [`ConfigError`] naming the first bad or missing key.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if let Some(reason) = self.url.scheme_error() {
            return Err(ConfigError::invalid("nats.url", reason));
        }
        match self.subject.as_deref().map(str::trim) {
            None | Some("") => {
                return Err(ConfigError::missing(
                    "nats.subject",
                    "set the subject to consume: PYTHIA_NATS__SUBJECT=jobs or `subject = \"jobs\"` under [nats]",
                ));
            }
            Some(subject) => {
                if let Some(reason) = subject_error(subject) {
                    return Err(ConfigError::invalid("nats.subject", reason));
                }
            }
        }
        for (key, name) in [
            ("nats.stream", &self.stream),
            ("nats.dead_letter_stream", &self.dead_letter_stream),
        ] {
            if let Some(reason) = name.as_deref().and_then(name_error) {
                return Err(ConfigError::invalid(key, reason));
            }
        }
        if self.concurrency == 0 {
            return Err(ConfigError::invalid(
                "nats.concurrency",
                "must be at least 1: the messages one instance holds at once, e.g. 4",
            ));
        }
        if self.ack_wait < Duration::from_secs(1) {
            return Err(ConfigError::invalid(
                "nats.ack_wait",
                "must be at least 1s, e.g. \"30s\"",
            ));
        }
        if self.progress_interval().is_zero() || self.progress_interval() >= self.ack_wait {
            return Err(ConfigError::invalid(
                "nats.progress_interval",
                "must be longer than zero and shorter than nats.ack_wait (a third of it by default)",
            ));
        }
        if self.max_deliver != -1 && self.max_deliver < 2 {
            return Err(ConfigError::invalid(
                "nats.max_deliver",
                "must be at least 2 (the last delivery is dead-lettered unprocessed), or -1 for unlimited",
            ));
        }
        if self.max_ack_pending != -1 && self.max_ack_pending < 1 {
            return Err(ConfigError::invalid(
                "nats.max_ack_pending",
                "must be at least 1, or -1 for unlimited, e.g. 1000",
            ));
        }
        for (name, subject) in &self.sinks {
            if subject.trim().is_empty() {
                return Err(ConfigError::invalid(
                    format!("nats.sinks.{name}"),
                    "names no subject: set it, e.g. `audit = \"audit\"` under [nats.sinks]",
                ));
            }
        }
        for (key, value) in [
            ("nats.fetch_wait", self.fetch_wait),
            ("nats.publish_timeout", self.publish_timeout),
            ("nats.reconnect_min", self.reconnect_min),
            ("nats.reconnect_max", self.reconnect_max),
        ] {
            if value.is_zero() {
                return Err(ConfigError::invalid(key, "must be longer than zero"));
            }
        }
        if self.reconnect_max < self.reconnect_min {
            return Err(ConfigError::invalid(
                "nats.reconnect_max",
                "must be at least nats.reconnect_min",
            ));
        }
        Ok(())
    }

    /// The subject to consume; `""` before validation.
    pub fn subject_name(&self) -> &str {
        self.subject.as_deref().map(str::trim).unwrap_or_default()
    }

    /// The stream holding the subject: `nats.stream`, else the subject with
    /// `.` as `_`.
    pub fn stream_name(&self) -> String {
        match &self.stream {
            Some(stream) => stream.trim().to_owned(),
            None => safe_name(self.subject_name()),
        }
    }

    /// The stream of the dead-letter subject: `nats.dead_letter_stream`,
    /// else the input stream's name with `_DLQ`.
    pub fn dead_letter_stream_name(&self) -> String {
        match &self.dead_letter_stream {
            Some(stream) => stream.trim().to_owned(),
            None => format!("{}_DLQ", self.stream_name()),
        }
    }

    /// How often held messages are reported in progress.
    pub fn progress_interval(&self) -> Duration {
        self.progress_interval.unwrap_or(self.ack_wait / 3)
    }
}

/// Why `subject` cannot be consumed, if it cannot.
fn subject_error(subject: &str) -> Option<&'static str> {
    if subject.contains(',') {
        return Some("a worker consumes one subject: run one worker per subject");
    }
    if subject.split('.').any(|token| token.is_empty()) || subject.contains(char::is_whitespace) {
        return Some(
            "must be dot-separated tokens without spaces, e.g. \"jobs\" or \"jobs.general\"",
        );
    }
    if subject.split('.').any(|token| token == "*" || token == ">") {
        return Some(
            "must be one literal subject (its dead letters go to `<subject>.dlq`): give each subject its worker",
        );
    }
    None
}

/// Why `name` cannot name a stream or a consumer, if it cannot.
fn name_error(name: &str) -> Option<&'static str> {
    let name = name.trim();
    (name.is_empty() || name.contains(['.', '*', '>', ' ', '/', '\\']))
        .then_some("must be a non-empty name without `.`, `*`, `>`, `/` or spaces, e.g. \"JOBS\"")
}

/// `name` as a stream or consumer name: `.`, `*`, `>`, `/` and spaces as `_`.
fn safe_name(name: &str) -> String {
    name.trim()
        .chars()
        .map(|c| match c {
            '.' | '*' | '>' | '/' | '\\' | ' ' => '_',
            c => c,
        })
        .collect()
}

#[cfg(test)]
mod tests;
