//! Redis settings under `[redis]`, and the full worker configuration.
//!
//! This file holds [`Config`] and its loading (the worker's declared defaults
//! < `pythia.toml` < `PYTHIA_*` variables < code), and the `[redis]` section
//! ([`RedisConfig`]) with its checks; the server URL, whose password is never
//! shown, is in [`url`], the default consumer name in `consumer`.

mod consumer;
mod url;

pub use url::{DEFAULT_URL, RedisUrl};

use std::collections::BTreeMap;
use std::time::Duration;

use pythia_core::{
    ConfigError, ConfigLoader, HealthConfig, MetricsConfig, Worker, WorkerConfig, WorkerSpec,
};
use serde::Deserialize;

/// Everything a Redis worker is configured with: `[worker]`, `[redis]`,
/// `[metrics]` and `[health]`.
///
/// Any other top-level key is an error naming it, except the sections of
/// the other connectors (`[kafka]`, `[rabbitmq]`, `[nats]`) and the Kafka
/// connector's `[log]` and `[otel]`: a worker between two brokers keeps both
/// sections in one `pythia.toml`, and each connector reads and checks its own.
///
/// ```
/// use pythia_core::ConfigLoader;
/// use pythia_redis::{Config, Mode};
///
/// let config = Config::from_loader(
///     ConfigLoader::new()
///         .no_file()
///         .env([("PYTHIA_REDIS__INPUT", "jobs"), ("PYTHIA_REDIS__MODE", "list")]),
/// )?;
/// assert_eq!(config.redis.input.as_deref(), Some("jobs"));
/// assert_eq!(config.redis.mode, Mode::List);
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
    /// Server, input, recovery and output settings.
    #[serde(default)]
    pub redis: RedisConfig,
    /// The `/metrics` and `/health/*` server, and how often the series of
    /// the stream or list are read.
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
    /// `[nats]`, left to the NATS connector.
    #[serde(default, rename = "nats")]
    _nats: serde::de::IgnoredAny,
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
    /// (the derive's `topic` is the input stream or list, `output` the
    /// output's), then `pythia.toml`, then `PYTHIA_*` variables; and validates.
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
    /// A stream read by a consumer group, like a list, has no partitions,
    /// so unless the worker declares an ordering the default is
    /// `worker.ordering = "none"`: the entries an instance holds (up to
    /// `redis.prefetch`) are processed at the same time.
    pub fn spec_defaults(loader: ConfigLoader, spec: &WorkerSpec) -> ConfigLoader {
        loader.queue_spec_defaults(spec, "redis", "input")
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
        self.redis.validate()
    }

    /// The worker's name: `worker.name`, else the input.
    pub fn name(&self) -> &str {
        self.worker
            .name
            .as_deref()
            .or(self.redis.input.as_deref())
            .unwrap_or("pythia")
    }

    /// The consumer group of stream mode: `redis.group`, else the worker's name.
    pub fn group(&self) -> &str {
        self.redis
            .group
            .as_deref()
            .map(str::trim)
            .filter(|g| !g.is_empty())
            .unwrap_or_else(|| self.name())
    }

    /// This instance's consumer name (see `redis.consumer`).
    pub fn consumer(&self) -> String {
        consumer::consumer_name(
            self.redis.consumer.as_deref(),
            self.worker.instance.as_deref(),
            |name| std::env::var(name).ok(),
            || self.worker.instance_name(),
        )
    }

    /// The stream dead letters go to: `worker.dead_letter.topic` with
    /// `{topic}` standing for the input (`jobs.dlq` by default); `None`
    /// with dead letters off.
    pub fn dead_letter_stream(&self) -> Option<String> {
        let input = self.redis.input_name();
        (!input.is_empty() && self.worker.dead_letter.enabled)
            .then(|| self.worker.dead_letter.topic_for(input))
    }
}

/// What the input is.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
#[non_exhaustive]
pub enum Mode {
    /// A stream read in a consumer group (`XREADGROUP`, `XACK`, idle
    /// entries of dead consumers claimed with `XAUTOCLAIM`); outputs are
    /// added to streams (`XADD`).
    #[default]
    Stream,
    /// A list used as a reliable queue (`BLMOVE` into a processing list of
    /// the instance, `LREM` when done, a reaper for dead instances'
    /// processing lists); outputs are pushed to lists (`LPUSH`).
    List,
}

/// Where a new consumer group starts reading its stream: `"0"` (or
/// `"start"`) or `"$"` (or `"end"`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum GroupStart {
    /// From the first entry (`0`): what was added before the first worker
    /// started is processed too.
    #[default]
    Start,
    /// From the entries added after the group is created (`$`).
    End,
}

impl<'de> Deserialize<'de> for GroupStart {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl serde::de::Visitor<'_> for Visitor {
            type Value = GroupStart;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("one of: \"0\" (start), \"$\" (end)")
            }
            fn visit_str<E: serde::de::Error>(self, value: &str) -> Result<GroupStart, E> {
                match value.trim() {
                    "0" | "start" => Ok(GroupStart::Start),
                    "$" | "end" => Ok(GroupStart::End),
                    other => Err(E::invalid_value(serde::de::Unexpected::Str(other), &self)),
                }
            }
            fn visit_u64<E: serde::de::Error>(self, value: u64) -> Result<GroupStart, E> {
                match value {
                    0 => Ok(GroupStart::Start),
                    other => Err(E::invalid_value(
                        serde::de::Unexpected::Unsigned(other),
                        &self,
                    )),
                }
            }
            fn visit_i64<E: serde::de::Error>(self, value: i64) -> Result<GroupStart, E> {
                match u64::try_from(value) {
                    Ok(value) => self.visit_u64(value),
                    Err(_) => Err(E::invalid_value(
                        serde::de::Unexpected::Signed(value),
                        &self,
                    )),
                }
            }
        }
        deserializer.deserialize_any(Visitor)
    }
}

impl GroupStart {
    /// The id `XGROUP CREATE` takes.
    pub(crate) fn id(self) -> &'static str {
        match self {
            Self::Start => "0",
            Self::End => "$",
        }
    }
}

/// The `[redis]` section.
///
/// ```toml
/// [redis]
/// url = "redis://:secret@redis:6379/0"  # password: PYTHIA_REDIS__URL, never logged
/// mode = "stream"                       # stream | list
/// input = "jobs"                        # the stream (or list) the instances share
/// group = "jobs-worker"                 # stream mode: the consumer group (default: worker name)
/// group_start = "0"                     # a new group reads from "0" (the start) or "$" (new entries)
/// prefetch = 10                         # entries an instance holds unacknowledged
/// claim_idle = "30s"                    # silence after which an instance's entries go to others
/// max_deliveries = 5                    # deliveries after which an entry is dead-lettered (0: never)
/// output = "results"                    # the stream (or list) of outputs that name no sink
/// output_maxlen = 1000000               # stream mode: XADD … MAXLEN ~ N
/// sinks = { audit = "audit" }           # named sinks: Output::to("audit")
/// block = "1s"                          # how long one read waits for new entries
/// command_timeout = "5s"                # a command unanswered by then counts as a lost connection
/// publish_timeout = "30s"               # an output not added by then fails its input
/// reconnect_min = "100ms"               # first wait before reconnecting
/// reconnect_max = "5s"                  # longest wait between attempts
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
#[non_exhaustive]
pub struct RedisConfig {
    /// The server: `redis://[user:password@]host:port[/db]`.
    pub url: RedisUrl,
    /// Stream or list.
    pub mode: Mode,
    /// The stream (stream mode) or list (list mode) to consume.
    pub input: Option<String>,
    /// The consumer group (stream mode); the worker's name when unset.
    pub group: Option<String>,
    /// Where a consumer group created by the worker starts.
    pub group_start: GroupStart,
    /// This instance's consumer name; see [`Config::consumer`] for the default.
    pub consumer: Option<String>,
    /// Entries (or list elements) an instance holds and has not
    /// acknowledged: the most it processes at once.
    pub prefetch: u32,
    /// How long an instance may leave its entries untouched before another
    /// takes them: the idle time after which pending entries are claimed
    /// (stream mode), the heartbeat's time to live (list mode). A live
    /// instance renews its own every third of it, however long a job runs.
    #[serde(with = "humantime_serde")]
    pub claim_idle: Duration,
    /// An entry delivered more times than this (its instances died each
    /// time) goes to the dead-letter stream instead; 0 never does.
    pub max_deliveries: u32,
    /// The stream or list of outputs that name no sink.
    pub output: Option<String>,
    /// Stream mode: cap each output stream near this many entries (`MAXLEN ~`).
    pub output_maxlen: Option<u64>,
    /// Named sinks: the stream or list of each.
    pub sinks: BTreeMap<String, String>,
    /// How long one read waits for new entries before it is sent again.
    #[serde(with = "humantime_serde")]
    pub block: Duration,
    /// A command unanswered after this (beyond a read's `block`) counts as a
    /// lost connection.
    #[serde(with = "humantime_serde")]
    pub command_timeout: Duration,
    /// How long adding an output may take, reconnects included.
    #[serde(with = "humantime_serde")]
    pub publish_timeout: Duration,
    /// The first wait before reconnecting; it doubles at each failed attempt.
    #[serde(with = "humantime_serde")]
    pub reconnect_min: Duration,
    /// The longest wait between reconnect attempts.
    #[serde(with = "humantime_serde")]
    pub reconnect_max: Duration,
}

impl Default for RedisConfig {
    fn default() -> Self {
        Self {
            url: RedisUrl::default(),
            mode: Mode::Stream,
            input: None,
            group: None,
            group_start: GroupStart::Start,
            consumer: None,
            prefetch: 10,
            claim_idle: Duration::from_secs(30),
            max_deliveries: 5,
            output: None,
            output_maxlen: None,
            sinks: BTreeMap::new(),
            block: Duration::from_secs(1),
            command_timeout: Duration::from_secs(5),
            publish_timeout: Duration::from_secs(30),
            reconnect_min: Duration::from_millis(100),
            reconnect_max: Duration::from_secs(5),
        }
    }
}

impl RedisConfig {
    /// Checks the section; the error names the key and the fix.
    ///
    /// # Errors
    ///
    /// A [`ConfigError`] naming the first bad or missing key.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if let Some(reason) = self.url.scheme_error() {
            return Err(ConfigError::invalid("redis.url", reason));
        }
        match self.input.as_deref().map(str::trim) {
            None | Some("") => {
                return Err(ConfigError::missing(
                    "redis.input",
                    "set the stream or list to consume: PYTHIA_REDIS__INPUT=jobs or `input = \"jobs\"` under [redis]",
                ));
            }
            Some(input) if input.contains(',') => {
                return Err(ConfigError::invalid(
                    "redis.input",
                    "a worker consumes one stream or list: run one worker per input",
                ));
            }
            Some(_) => {}
        }
        if self
            .consumer
            .as_deref()
            .is_some_and(|c| c.trim().is_empty())
        {
            return Err(ConfigError::invalid(
                "redis.consumer",
                "is empty: remove it for the default (the pod name or <host>-<pid>), or name this instance",
            ));
        }
        if self.prefetch == 0 {
            return Err(ConfigError::invalid(
                "redis.prefetch",
                "must be at least 1 (entries an instance holds at once), e.g. 10",
            ));
        }
        if self.output_maxlen == Some(0) {
            return Err(ConfigError::invalid(
                "redis.output_maxlen",
                "0 would empty the output stream: remove it for no cap, or set e.g. 1000000",
            ));
        }
        for (name, key) in &self.sinks {
            if key.trim().is_empty() {
                return Err(ConfigError::invalid(
                    format!("redis.sinks.{name}"),
                    "names no stream or list: set it, e.g. `audit = \"audit\"` under [redis.sinks]",
                ));
            }
        }
        if self.claim_idle < Duration::from_millis(300) {
            return Err(ConfigError::invalid(
                "redis.claim_idle",
                "must be at least 300ms (live instances renew their entries every third of it), e.g. \"30s\"",
            ));
        }
        for (key, value) in [
            ("redis.block", self.block),
            ("redis.command_timeout", self.command_timeout),
            ("redis.publish_timeout", self.publish_timeout),
            ("redis.reconnect_min", self.reconnect_min),
            ("redis.reconnect_max", self.reconnect_max),
        ] {
            if value.is_zero() {
                return Err(ConfigError::invalid(key, "must be longer than zero"));
            }
        }
        if self.block >= self.claim_idle / 3 {
            return Err(ConfigError::invalid(
                "redis.block",
                "must be shorter than a third of redis.claim_idle, so that renewals are not late",
            ));
        }
        if self.reconnect_max < self.reconnect_min {
            return Err(ConfigError::invalid(
                "redis.reconnect_max",
                "must be at least redis.reconnect_min",
            ));
        }
        Ok(())
    }

    /// The stream or list to consume; `""` before validation.
    pub(crate) fn input_name(&self) -> &str {
        self.input.as_deref().map(str::trim).unwrap_or_default()
    }

    /// How often an instance renews its own entries or heartbeat, and looks
    /// for those of dead instances: a third of `claim_idle`.
    pub(crate) fn renew_every(&self) -> Duration {
        self.claim_idle / 3
    }
}

#[cfg(test)]
mod tests;
