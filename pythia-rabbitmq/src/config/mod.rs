//! RabbitMQ settings under `[rabbitmq]`, and the full worker configuration.
//!
//! This file holds [`Config`] and its loading (the worker's declared defaults
//! < `pythia.toml` < `PYTHIA_*` variables < code), and the `[rabbitmq]`
//! section ([`RabbitConfig`]) with its checks; the broker URL, whose password
//! is never shown, is in [`url`].

mod url;

pub use url::{AmqpUrl, DEFAULT_URL};

use std::collections::BTreeMap;
use std::time::Duration;

use pythia_core::{
    ConfigError, ConfigLoader, HealthConfig, MetricsConfig, Worker, WorkerConfig, WorkerSpec,
};
use serde::Deserialize;

/// Everything a RabbitMQ worker is configured with: `[worker]`, `[rabbitmq]`,
/// `[metrics]` and `[health]`.
///
/// Any other top-level key is an error naming it, except `[kafka]`: a worker
/// between the two brokers keeps both sections in one `pythia.toml` (and
/// both `PYTHIA_RABBITMQ__*` and `PYTHIA_KAFKA__*` variables), and the Kafka
/// connector reads and checks its own.
///
/// ```
/// use pythia_core::ConfigLoader;
/// use pythia_rabbitmq::Config;
///
/// let config = Config::from_loader(
///     ConfigLoader::new()
///         .no_file()
///         .env([("PYTHIA_RABBITMQ__QUEUE", "jobs"), ("PYTHIA_RABBITMQ__PREFETCH", "20")]),
/// )?;
/// assert_eq!(config.rabbitmq.queue.as_deref(), Some("jobs"));
/// assert_eq!(config.rabbitmq.prefetch, 20);
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
    /// Broker connection, queue and publishing settings.
    #[serde(default)]
    pub rabbitmq: RabbitConfig,
    /// The `/metrics` and `/health/*` server, and how often the queue depth is read.
    #[serde(default)]
    pub metrics: MetricsConfig,
    /// When the worker counts as stuck.
    #[serde(default)]
    pub health: HealthConfig,
    /// `[kafka]`, left to the Kafka connector.
    #[serde(default, rename = "kafka")]
    _kafka: serde::de::IgnoredAny,
    /// `[log]` and `[otel]`, the Kafka connector's log and trace export
    /// settings, in the `pythia.toml` of a worker that uses both.
    #[serde(default, rename = "log")]
    _log: serde::de::IgnoredAny,
    #[serde(default, rename = "otel")]
    _otel: serde::de::IgnoredAny,
}

impl Config {
    /// Loads from `pythia.toml` (or `PYTHIA_CONFIG`) and `PYTHIA_*` variables,
    /// with the queue defaults of [`Config::spec_defaults`] for no worker, and
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
    /// (the derive's `topic` is the queue, `output` the output routing key),
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
    /// A queue has no partitions, so unless the worker declares an ordering
    /// the default is `worker.ordering = "none"`: the queue's deliveries (up
    /// to the prefetch) are processed at the same time, which is what fair
    /// dispatch between instances needs.
    pub fn spec_defaults(loader: ConfigLoader, spec: &WorkerSpec) -> ConfigLoader {
        loader.queue_spec_defaults(spec, "rabbitmq", "queue")
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
        self.rabbitmq.validate()
    }

    /// The worker's name: `worker.name`, else the queue.
    pub fn name(&self) -> &str {
        self.worker
            .name
            .as_deref()
            .or(self.rabbitmq.queue.as_deref())
            .unwrap_or("pythia")
    }

    /// The queue dead letters go to: `worker.dead_letter.topic` with
    /// `{topic}` standing for the input queue (`jobs.dlq` by default).
    pub fn dead_letter_queue(&self) -> Option<String> {
        let queue = self.rabbitmq.queue.as_deref()?;
        self.worker
            .dead_letter
            .enabled
            .then(|| self.worker.dead_letter.topic_for(queue))
    }
}

/// Whether the worker declares its queues or expects them to exist.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
#[non_exhaustive]
pub enum QueueMode {
    /// Declare each queue it uses (durable, no arguments) unless it exists
    /// already, with whatever arguments it has.
    #[default]
    Declare,
    /// Check that each queue exists (a passive declare); start no queue.
    Expect,
}

/// The `[rabbitmq]` section.
///
/// ```toml
/// [rabbitmq]
/// url = "amqp://jobs@rabbit:5672/%2f"   # password: PYTHIA_RABBITMQ__URL, never logged
/// queue = "jobs"                        # the work queue the instances share
/// prefetch = 10                         # unacknowledged deliveries per instance
/// queues = "declare"                    # declare | expect (the input queue must exist)
/// output = "results"                    # routing key of outputs that name no sink
/// output_exchange = ""                  # "" is the default exchange: routing key = queue
/// sinks = { audit = "audit" }           # named sinks: Output::to("audit")
/// dead_letter_exchange = ""             # where dead letters are published
/// publish_timeout = "30s"               # a publish unconfirmed by then fails its input
/// broker_timeout = "10s"               # unanswered by then: the connection is opened again
/// reconnect_min = "100ms"               # first wait before reconnecting
/// reconnect_max = "5s"                  # longest wait between attempts
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
#[non_exhaustive]
pub struct RabbitConfig {
    /// The broker: `amqp://user:password@host:port/vhost` (vhost `/` is `%2f`).
    pub url: AmqpUrl,
    /// The queue to consume.
    pub queue: Option<String>,
    /// `basic.qos` prefetch: deliveries the broker sends this instance before
    /// it acknowledges any, and so how many messages it processes at once.
    pub prefetch: u16,
    /// Declare the input queue when missing, or expect it. The dead-letter
    /// queue and the output queues of the default exchange are declared
    /// when missing either way: a publish to a missing queue would be lost.
    pub queues: QueueMode,
    /// The routing key of outputs that name no sink.
    pub output: Option<String>,
    /// The exchange outputs are published to; `""` is the default exchange,
    /// where the routing key is the name of the queue.
    pub output_exchange: String,
    /// Named sinks: the routing key of each.
    pub sinks: BTreeMap<String, String>,
    /// The exchange dead letters are published to, with the dead-letter
    /// queue's name (`worker.dead_letter.topic`) as routing key.
    pub dead_letter_exchange: String,
    /// How long a publish may wait for its confirm, reconnects included.
    #[serde(with = "humantime_serde")]
    pub publish_timeout: Duration,
    /// How long the broker may take to answer — to open a connection (and
    /// the publisher's channel), to take a publish or a batch of acks —
    /// before the connection is taken as lost and opened again. A broker
    /// that starts or stops can accept a connection and never answer, and
    /// a connection that dies mid-request can leave the request waiting.
    #[serde(with = "humantime_serde")]
    pub broker_timeout: Duration,
    /// The first wait before reconnecting; it doubles at each failed attempt.
    #[serde(with = "humantime_serde")]
    pub reconnect_min: Duration,
    /// The longest wait between reconnect attempts.
    #[serde(with = "humantime_serde")]
    pub reconnect_max: Duration,
}

impl Default for RabbitConfig {
    fn default() -> Self {
        Self {
            url: AmqpUrl::default(),
            queue: None,
            prefetch: 10,
            queues: QueueMode::Declare,
            output: None,
            output_exchange: String::new(),
            sinks: BTreeMap::new(),
            dead_letter_exchange: String::new(),
            publish_timeout: Duration::from_secs(30),
            broker_timeout: Duration::from_secs(10),
            reconnect_min: Duration::from_millis(100),
            reconnect_max: Duration::from_secs(5),
        }
    }
}

impl RabbitConfig {
    /// Checks the section; the error names the key and the fix.
    ///
    /// # Errors
    ///
    /// A [`ConfigError`] naming the first bad or missing key.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if let Some(reason) = self.url.scheme_error() {
            return Err(ConfigError::invalid("rabbitmq.url", reason));
        }
        match self.queue.as_deref().map(str::trim) {
            None | Some("") => {
                return Err(ConfigError::missing(
                    "rabbitmq.queue",
                    "set the queue to consume: PYTHIA_RABBITMQ__QUEUE=jobs or `queue = \"jobs\"` under [rabbitmq]",
                ));
            }
            Some(queue) if queue.contains(',') => {
                return Err(ConfigError::invalid(
                    "rabbitmq.queue",
                    "a worker consumes one queue: run one worker per queue",
                ));
            }
            Some(_) => {}
        }
        if self.prefetch == 0 {
            return Err(ConfigError::invalid(
                "rabbitmq.prefetch",
                "must be at least 1 (0 would let the broker send the whole queue to one instance), e.g. 10",
            ));
        }
        for (name, key) in &self.sinks {
            if key.trim().is_empty() {
                return Err(ConfigError::invalid(
                    format!("rabbitmq.sinks.{name}"),
                    "names no routing key: set it, e.g. `audit = \"audit\"` under [rabbitmq.sinks]",
                ));
            }
        }
        for (key, value) in [
            ("rabbitmq.publish_timeout", self.publish_timeout),
            ("rabbitmq.broker_timeout", self.broker_timeout),
            ("rabbitmq.reconnect_min", self.reconnect_min),
            ("rabbitmq.reconnect_max", self.reconnect_max),
        ] {
            if value.is_zero() {
                return Err(ConfigError::invalid(key, "must be longer than zero"));
            }
        }
        if self.reconnect_max < self.reconnect_min {
            return Err(ConfigError::invalid(
                "rabbitmq.reconnect_max",
                "must be at least rabbitmq.reconnect_min",
            ));
        }
        Ok(())
    }

    /// The queue to consume; `""` before validation.
    pub(crate) fn queue_name(&self) -> &str {
        self.queue.as_deref().map(str::trim).unwrap_or_default()
    }

    /// The queues the outputs go to when published to the default exchange
    /// (the output and the sinks' routing keys); none for another exchange.
    pub(crate) fn output_queues(&self) -> Vec<String> {
        if !self.output_exchange.is_empty() {
            return Vec::new();
        }
        (self.output.iter().chain(self.sinks.values()))
            .cloned()
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(vars: &[(&str, &str)]) -> Result<Config, ConfigError> {
        Config::from_loader(Config::spec_defaults(
            ConfigLoader::new().no_file().env(vars.iter().copied()),
            &WorkerSpec::UNNAMED,
        ))
    }

    #[test]
    fn defaults_are_a_local_broker_prefetch_ten_and_no_ordering() {
        let config = load(&[("PYTHIA_RABBITMQ__QUEUE", "jobs")]).unwrap();
        assert_eq!(config.rabbitmq.url.expose(), DEFAULT_URL);
        assert_eq!(config.rabbitmq.prefetch, 10);
        assert_eq!(config.rabbitmq.queues, QueueMode::Declare);
        assert_eq!(config.worker.ordering, pythia_core::MessageOrder::None);
        assert_eq!(config.dead_letter_queue().as_deref(), Some("jobs.dlq"));
    }

    #[test]
    fn each_bad_setting_is_named_with_its_fix() {
        type Case<'a> = (&'a [(&'a str, &'a str)], &'a str, &'a str);
        let cases: &[Case<'_>] = &[
            (&[], "rabbitmq.queue", "PYTHIA_RABBITMQ__QUEUE"),
            (
                &[("PYTHIA_RABBITMQ__QUEUE", "a,b")],
                "rabbitmq.queue",
                "one queue",
            ),
            (
                &[
                    ("PYTHIA_RABBITMQ__QUEUE", "q"),
                    ("PYTHIA_RABBITMQ__PREFETCH", "0"),
                ],
                "rabbitmq.prefetch",
                "at least 1",
            ),
            (
                &[
                    ("PYTHIA_RABBITMQ__QUEUE", "q"),
                    ("PYTHIA_RABBITMQ__URL", "amqps://h"),
                ],
                "rabbitmq.url",
                "TLS",
            ),
            (
                &[
                    ("PYTHIA_RABBITMQ__QUEUE", "q"),
                    ("PYTHIA_RABBITMQ__PUBLISH_TIMEOUT", "0s"),
                ],
                "rabbitmq.publish_timeout",
                "zero",
            ),
            (
                &[
                    ("PYTHIA_RABBITMQ__QUEUE", "q"),
                    ("PYTHIA_RABBITMQ__BROKER_TIMEOUT", "0s"),
                ],
                "rabbitmq.broker_timeout",
                "zero",
            ),
            (
                &[
                    ("PYTHIA_RABBITMQ__QUEUE", "q"),
                    ("PYTHIA_RABBITMQ__RECONNECT_MIN", "10s"),
                    ("PYTHIA_RABBITMQ__RECONNECT_MAX", "1s"),
                ],
                "rabbitmq.reconnect_max",
                "reconnect_min",
            ),
            (
                &[
                    ("PYTHIA_RABBITMQ__QUEUE", "q"),
                    ("PYTHIA_RABBITMQ__QUEUES", "maybe"),
                ],
                "rabbitmq.queues",
                "declare",
            ),
        ];
        for (vars, key, hint) in cases {
            let err = load(vars).unwrap_err();
            assert_eq!(err.key(), *key, "{vars:?}: {err}");
            assert!(err.to_string().contains(hint), "{vars:?}: {err}");
        }
    }

    #[test]
    fn an_unknown_key_is_named_with_the_allowed_ones() {
        let err = load(&[
            ("PYTHIA_RABBITMQ__QUEUE", "q"),
            ("PYTHIA_RABBITMQ__PREFECH", "5"),
        ])
        .unwrap_err();
        assert_eq!(err.key(), "rabbitmq.prefech");
        assert!(err.to_string().contains("prefetch"), "{err}");
    }

    #[test]
    fn the_kafka_section_is_left_to_its_connector_and_typos_are_named() {
        let config = load(&[
            ("PYTHIA_RABBITMQ__QUEUE", "jobs"),
            ("PYTHIA_KAFKA__BROKERS", "embedded"),
            ("PYTHIA_KAFKA__OUTPUT_TOPIC", "jobs.done"),
            // Not checked here: the Kafka connector's to refuse.
            ("PYTHIA_KAFKA__EMBEDDED_PARTITIONS", "0"),
        ])
        .unwrap();
        assert_eq!(config.rabbitmq.queue.as_deref(), Some("jobs"));
        let dir =
            std::env::temp_dir().join(format!("pythia-rabbitmq-mixed-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = |toml: &str| {
            let path = dir.join("pythia.toml");
            std::fs::write(&path, toml).unwrap();
            Config::from_loader(ConfigLoader::new().file(&path).env::<&str, &str>([]))
        };
        let config = file(
            "[rabbitmq]\nqueue = \"jobs\"\n[kafka]\nbrokers = \"k:9092\"\noutput_topic = \"jobs.done\"\n[kafka.producer]\n\"linger.ms\" = 10\n[log]\nformat = \"json\"\n[otel]\nendpoint = \"http://collector:4318\"\n",
        )
        .unwrap();
        assert_eq!(config.rabbitmq.queue.as_deref(), Some("jobs"));
        let err =
            file("[rabbitmq]\nqueue = \"jobs\"\n[kafak]\nbrokers = \"k:9092\"\n").unwrap_err();
        std::fs::remove_dir_all(&dir).ok();
        assert_eq!(err.key(), "kafak", "{err}");
        let text = err.to_string();
        assert!(
            text.contains("rabbitmq") && text.contains("kafka"),
            "{text}"
        );
        let err = load(&[
            ("PYTHIA_RABBITMQ__QUEUE", "jobs"),
            ("PYTHIA_KAFAK__BROKERS", "k:9092"),
        ])
        .unwrap_err();
        assert_eq!(err.key(), "kafak", "{err}");
    }

    #[test]
    fn the_password_never_shows_in_debug() {
        let config = load(&[
            ("PYTHIA_RABBITMQ__QUEUE", "q"),
            (
                "PYTHIA_RABBITMQ__URL",
                "amqp://jobs:hunter2@rabbit:5672/%2f",
            ),
        ])
        .unwrap();
        let shown = format!("{config:?}");
        assert!(!shown.contains("hunter2"), "{shown}");
        assert!(shown.contains("amqp://jobs:***@rabbit:5672/%2f"), "{shown}");
        assert_eq!(
            config.rabbitmq.url.expose(),
            "amqp://jobs:hunter2@rabbit:5672/%2f"
        );
    }

    #[test]
    fn code_overrides_the_environment_which_overrides_the_file() {
        let dir =
            std::env::temp_dir().join(format!("pythia-rabbitmq-config-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("pythia.toml");
        std::fs::write(
            &path,
            "[rabbitmq]\nqueue = \"from-file\"\nprefetch = 3\noutput = \"out\"\n",
        )
        .unwrap();
        let config = Config::from_loader(
            ConfigLoader::new()
                .file(&path)
                .env([
                    ("PYTHIA_RABBITMQ__PREFETCH", "7"),
                    ("PYTHIA_RABBITMQ__QUEUE", "from-env"),
                ])
                .set("rabbitmq.queue", "from-code"),
        )
        .unwrap();
        assert_eq!(config.rabbitmq.queue.as_deref(), Some("from-code"));
        assert_eq!(config.rabbitmq.prefetch, 7);
        assert_eq!(config.rabbitmq.output_queues(), ["out"]);
        std::fs::remove_dir_all(&dir).ok();
    }

    #[test]
    fn the_section_example_loads_as_written() {
        let source = include_str!("mod.rs");
        let end = source.find("\npub struct RabbitConfig ").unwrap();
        let start = source[..end].rfind("/// ```toml\n").unwrap();
        let toml: String = (source[start..end].lines().skip(1))
            .take_while(|line| *line != "/// ```")
            .map(|line| line.trim_start_matches("///").trim_start())
            .map(|line| format!("{line}\n"))
            .collect();
        let dir =
            std::env::temp_dir().join(format!("pythia-rabbitmq-example-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("pythia.toml");
        std::fs::write(&path, &toml).unwrap();
        let config = Config::from_loader(ConfigLoader::new().file(&path).env::<&str, &str>([]))
            .unwrap_or_else(|e| panic!("{e}\n{toml}"));
        assert_eq!(config.rabbitmq.queue.as_deref(), Some("jobs"));
        assert_eq!(config.rabbitmq.sinks["audit"], "audit");
        assert_eq!(config.rabbitmq.output_queues(), ["results", "audit"]);
        std::fs::remove_dir_all(&dir).ok();
    }
}
