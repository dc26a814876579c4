//! Kafka settings under `[kafka]`, and the full worker configuration.
//!
//! This file holds [`Config`], its loading, and the `[kafka]` section
//! ([`KafkaConfig`]) with its checks. The parts of the section have files of
//! their own: [`group`] (the group protocol and assignor), [`security`]
//! (`[kafka.security]` and secrets), [`properties`] (raw librdkafka
//! properties) and [`client`] (the librdkafka configuration Pythia builds for
//! its consumers and producers).

mod client;
mod group;
mod properties;
mod security;

pub use group::{AssignmentStrategy, GroupProtocol};
pub use properties::Properties;
pub use security::{Secret, Security};

use std::collections::BTreeMap;
use std::time::Duration;

use pythia_core::HealthConfig;
use pythia_core::MetricsConfig;
use pythia_core::{ConfigError, ConfigLoader, Worker, WorkerConfig, WorkerSpec};
use serde::{Deserialize, Deserializer};

use crate::log::LogConfig;
use crate::otel::OtelConfig;
use properties::refuse_reserved;
use security::builtin_features;

/// The value of `kafka.brokers` that starts an in-process broker.
pub const EMBEDDED: &str = "embedded";

const BROKERS_HINT: &str = "set PYTHIA_KAFKA__BROKERS=host:9092[,host2:9092] or `brokers = \"host:9092\"` under [kafka] in pythia.toml; `brokers = \"embedded\"` runs an in-process broker for development";

/// Everything a Kafka worker is configured with: `[worker]` and `[kafka]`.
///
/// Any other top-level key is an error naming it, except `[rabbitmq]`: a
/// worker between the two brokers keeps both sections in one `pythia.toml`
/// (and both `PYTHIA_KAFKA__*` and `PYTHIA_RABBITMQ__*` variables), and the
/// RabbitMQ connector reads and checks its own.
///
/// ```
/// use pythia_kafka::Config;
/// use pythia_core::ConfigLoader;
///
/// let config = Config::from_loader(
///     ConfigLoader::new()
///         .no_file()
///         .env([("PYTHIA_KAFKA__BROKERS", "localhost:9092")])
///         .set("kafka.group", "billing")
///         .set("kafka.topics", "orders,refunds"),
/// )?;
/// assert_eq!(config.kafka.topics, ["orders", "refunds"]);
/// assert_eq!(config.name(), "billing");
/// # Ok::<(), pythia_core::ConfigError>(())
/// ```
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct Config {
    /// Runtime settings.
    #[serde(default)]
    pub worker: WorkerConfig,
    /// Broker connection, group and client settings.
    #[serde(default)]
    pub kafka: KafkaConfig,
    /// The `/metrics` and `/health/*` server and lag reading.
    #[serde(default)]
    pub metrics: MetricsConfig,
    /// When the worker counts as stuck.
    #[serde(default)]
    pub health: HealthConfig,
    /// Log format.
    #[serde(default)]
    pub log: LogConfig,
    /// Where message spans are exported (feature `otel`).
    #[serde(default)]
    pub otel: OtelConfig,
    /// `[rabbitmq]`, left to the RabbitMQ connector.
    #[serde(default, rename = "rabbitmq")]
    _rabbitmq: serde::de::IgnoredAny,
}

impl Config {
    /// Loads from `pythia.toml` (or `PYTHIA_CONFIG`) and `PYTHIA_*` variables,
    /// and validates.
    pub fn load() -> Result<Self, ConfigError> {
        Self::from_loader(ConfigLoader::new())
    }

    /// Loads the configuration of worker `W`: its declared [`WorkerSpec`] (from
    /// `#[derive(Worker)]`), then `pythia.toml` (or `PYTHIA_CONFIG`), then
    /// `PYTHIA_*` variables; and validates.
    ///
    /// ```
    /// use pythia_kafka::{Config, Context, Message, Outputs, Process, ProcessError, Worker};
    ///
    /// #[derive(Worker)]
    /// #[pythia(topic = "orders", sinks(billing = "billing.invoices"))]
    /// struct Billing;
    /// impl Process for Billing {
    ///     type Input = serde_json::Value;
    ///     type Output = serde_json::Value;
    ///     async fn process(&self, msg: Message<Self::Input>, _: &Context) -> Result<Outputs<Self::Output>, ProcessError> {
    ///         Ok(Outputs::one(msg.into_payload()))
    ///     }
    /// }
    ///
    /// # unsafe { std::env::set_var("PYTHIA_KAFKA__BROKERS", "localhost:9092") };
    /// // PYTHIA_KAFKA__BROKERS=localhost:9092
    /// let config = Config::for_worker::<Billing>()?;
    /// assert_eq!(config.name(), "billing");
    /// assert_eq!(config.kafka.group.as_deref(), Some("billing"));
    /// assert_eq!(config.kafka.topics, ["orders"]);
    /// assert_eq!(config.kafka.sinks["billing"], "billing.invoices");
    /// # Ok::<(), pythia_core::ConfigError>(())
    /// ```
    pub fn for_worker<W: Worker>() -> Result<Self, ConfigError> {
        Self::from_loader(Self::loader_for::<W>())
    }

    /// A loader whose defaults are `W`'s declared [`WorkerSpec`]; add code
    /// defaults or overrides to it, then pass it to [`Config::from_loader`].
    ///
    /// ```
    /// # use pythia_kafka::{Config, ConfigLoader};
    /// # fn demo<W: pythia_kafka::Worker>() -> Result<(), pythia_core::ConfigError> {
    /// let config = Config::from_loader(
    ///     Config::loader_for::<W>().default_value("kafka.brokers", "embedded"),
    /// )?;
    /// # Ok(()) }
    /// ```
    pub fn loader_for<W: Worker>() -> ConfigLoader {
        Self::spec_defaults(ConfigLoader::new(), &W::SPEC)
    }

    /// Adds the keys `spec` declares as defaults of `loader`.
    pub fn spec_defaults(mut loader: ConfigLoader, spec: &WorkerSpec) -> ConfigLoader {
        if !spec.name.is_empty() {
            loader = loader
                .default_value("worker.name", spec.name)
                .default_value("kafka.group", spec.group_or_name());
        } else if let Some(group) = spec.group {
            loader = loader.default_value("kafka.group", group);
        }
        if !spec.topics.is_empty() {
            loader = loader.default_value("kafka.topics", spec.topics.join(","));
        }
        if let Some(output) = spec.output {
            loader = loader.default_value("kafka.output_topic", output);
        }
        for (name, topic) in spec.sinks {
            loader = loader.default_value(&format!("kafka.sinks.{name}"), *topic);
        }
        if let Some(n) = spec.max_in_flight {
            loader = loader.default_value("worker.max_in_flight", n as u64);
        }
        if let Some(n) = spec.partition_buffer {
            loader = loader.default_value("worker.partition_buffer", n as u64);
        }
        if let Some(ordering) = spec.ordering {
            loader = loader.default_value("worker.ordering", ordering.as_str());
        }
        loader
    }

    /// Loads with a loader carrying code defaults or overrides, and validates.
    pub fn from_loader(loader: ConfigLoader) -> Result<Self, ConfigError> {
        let config: Self = loader.load()?;
        config.validate()?;
        Ok(config)
    }

    /// Checks every setting; the error names the first bad key.
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.worker.validate()?;
        self.metrics.validate()?;
        self.health.validate()?;
        self.otel.validate()?;
        self.kafka.validate()
    }

    /// The worker's name: `worker.name`, else the group.
    pub fn name(&self) -> &str {
        self.worker
            .name
            .as_deref()
            .or(self.kafka.group.as_deref())
            .unwrap_or("pythia")
    }
}

/// The `[kafka]` section.
///
/// ```toml
/// [kafka]
/// brokers = "kafka-1:9092,kafka-2:9092"   # or "embedded"
/// group = "billing"
/// topics = ["orders"]
/// output_topic = "invoices"               # where outputs that name no sink go
/// sinks = { billing = "billing.invoices" } # named sinks: Output::to("billing")
/// group_protocol = "auto"                 # auto | consumer (KIP-848) | classic
/// assignment_strategy = "cooperative-sticky"  # classic only
/// session_timeout = "45s"                 # classic only
/// commit_interval = "1s"
/// embedded_partitions = 8                 # partitions of topics the embedded broker creates
///
/// [kafka.consumer]                        # raw librdkafka consumer properties
/// "fetch.max.bytes" = 52428800
///
/// [kafka.producer]                        # raw librdkafka producer properties
/// "linger.ms" = 10
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
#[non_exhaustive]
pub struct KafkaConfig {
    /// Bootstrap servers, comma-separated, or `"embedded"`.
    pub brokers: Option<String>,
    /// The consumer group id: instances with the same group share the partitions.
    pub group: Option<String>,
    /// Input topics (a list, or one comma-separated string).
    #[serde(deserialize_with = "list_or_csv")]
    pub topics: Vec<String>,
    /// The default topic for outputs.
    pub output_topic: Option<String>,
    /// Named sinks: the topic of each (`[kafka.sinks]`, `billing = "billing.invoices"`).
    pub sinks: BTreeMap<String, String>,
    /// The consumer-group protocol.
    pub group_protocol: GroupProtocol,
    /// The assignor of the classic protocol.
    pub assignment_strategy: AssignmentStrategy,
    /// Session timeout of the classic protocol (KIP-848 takes it from the broker).
    #[serde(with = "humantime_serde")]
    pub session_timeout: Duration,
    /// How often finished offsets are committed.
    #[serde(with = "humantime_serde")]
    pub commit_interval: Duration,
    /// Partitions of each topic the embedded broker creates.
    pub embedded_partitions: i32,
    /// SASL/SSL.
    pub security: Security,
    /// Raw consumer properties.
    pub consumer: Properties,
    /// Raw producer properties.
    pub producer: Properties,
}

impl Default for KafkaConfig {
    fn default() -> Self {
        Self {
            brokers: None,
            group: None,
            topics: Vec::new(),
            output_topic: None,
            sinks: BTreeMap::new(),
            group_protocol: GroupProtocol::Auto,
            assignment_strategy: AssignmentStrategy::CooperativeSticky,
            session_timeout: Duration::from_secs(45),
            commit_interval: Duration::from_secs(1),
            embedded_partitions: 8,
            security: Security::default(),
            consumer: Properties::default(),
            producer: Properties::default(),
        }
    }
}

impl KafkaConfig {
    /// Checks the section; the error names the key and the fix.
    pub fn validate(&self) -> Result<(), ConfigError> {
        match self.brokers.as_deref().map(str::trim) {
            None | Some("") => return Err(ConfigError::missing("kafka.brokers", BROKERS_HINT)),
            Some(_) => {}
        }
        if self.group.as_deref().is_none_or(|g| g.trim().is_empty()) {
            return Err(ConfigError::missing(
                "kafka.group",
                "set the consumer group id: PYTHIA_KAFKA__GROUP=my-group or `group = \"my-group\"` under [kafka]",
            ));
        }
        if self.topics.is_empty() {
            return Err(ConfigError::missing(
                "kafka.topics",
                "set the input topics: PYTHIA_KAFKA__TOPICS=orders,refunds or `topics = [\"orders\"]` under [kafka]",
            ));
        }
        for (name, topic) in &self.sinks {
            if topic.trim().is_empty() {
                return Err(ConfigError::invalid(
                    format!("kafka.sinks.{name}"),
                    "names no topic: set the sink's topic, e.g. `billing = \"billing.invoices\"` under [kafka.sinks]",
                ));
            }
        }
        self.validate_clients()
    }

    /// Every topic the worker writes to: the output topic and the sinks' topics.
    pub fn output_topics(&self) -> impl Iterator<Item = &str> {
        self.output_topic
            .iter()
            .chain(self.sinks.values())
            .map(String::as_str)
    }

    /// Checks what a producer-only use needs (brokers and raw properties).
    pub fn validate_clients(&self) -> Result<(), ConfigError> {
        if self.brokers.as_deref().is_none_or(|b| b.trim().is_empty()) {
            return Err(ConfigError::missing("kafka.brokers", BROKERS_HINT));
        }
        if self.commit_interval.is_zero() {
            return Err(ConfigError::invalid(
                "kafka.commit_interval",
                "must be longer than zero, e.g. \"1s\"",
            ));
        }
        if self.embedded_partitions < 1 {
            return Err(ConfigError::invalid(
                "kafka.embedded_partitions",
                "must be at least 1",
            ));
        }
        for (table, props) in [("consumer", &self.consumer), ("producer", &self.producer)] {
            refuse_reserved(table, props)?;
        }
        self.security
            .validate(&[&self.consumer, &self.producer], &builtin_features())?;
        // librdkafka knows its properties; ask it now rather than at connect time.
        self.consumer_client_config("check")?;
        self.producer_client_config()?;
        Ok(())
    }

    /// Whether the brokers setting asks for the in-process broker.
    pub fn is_embedded(&self) -> bool {
        self.brokers.as_deref().map(str::trim) == Some(EMBEDDED)
    }
}

fn list_or_csv<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Vec<String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum ListOrCsv {
        List(Vec<String>),
        Csv(String),
    }
    let items = match ListOrCsv::deserialize(deserializer)? {
        ListOrCsv::List(items) => items,
        ListOrCsv::Csv(csv) => csv.split(',').map(str::to_owned).collect(),
    };
    Ok(items
        .into_iter()
        .map(|t| t.trim().to_owned())
        .filter(|t| !t.is_empty())
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(super) fn load(vars: &[(&str, &str)]) -> Result<Config, ConfigError> {
        Config::from_loader(ConfigLoader::new().no_file().env(vars.iter().copied()))
    }

    pub(super) const OK: &[(&str, &str)] = &[
        ("PYTHIA_KAFKA__BROKERS", "localhost:9092"),
        ("PYTHIA_KAFKA__GROUP", "g"),
        ("PYTHIA_KAFKA__TOPICS", "a,b"),
    ];

    pub(super) fn with(
        extra: &[(&'static str, &'static str)],
    ) -> Vec<(&'static str, &'static str)> {
        OK.iter().chain(extra).copied().collect()
    }

    #[test]
    fn the_rabbitmq_section_is_left_to_its_connector_and_typos_are_named() {
        let config = load(&with(&[
            (
                "PYTHIA_RABBITMQ__URL",
                "amqp://guest:guest@127.0.0.1:5672/%2f",
            ),
            ("PYTHIA_RABBITMQ__QUEUE", "jobs"),
            // Not checked here: the RabbitMQ connector's to refuse.
            ("PYTHIA_RABBITMQ__PREFETCH", "0"),
        ]))
        .unwrap();
        assert_eq!(config.kafka.topics, ["a", "b"]);
        let file = |toml: &str| {
            let path = std::env::temp_dir().join(format!(
                "pythia-kafka-mixed-{}-{}.toml",
                std::process::id(),
                toml.len()
            ));
            std::fs::write(&path, toml).unwrap();
            let loaded =
                Config::from_loader(ConfigLoader::new().file(&path).env(OK.iter().copied()));
            std::fs::remove_file(&path).unwrap();
            loaded
        };
        file("[rabbitmq]\nqueue = \"jobs\"\nprefetch = 20\n[rabbitmq.sinks]\naudit = \"audit\"\n")
            .unwrap();
        let err = file("[kafak]\nbrokers = \"b:1\"\n").unwrap_err();
        assert_eq!(err.key(), "kafak", "{err}");
        let text = err.to_string();
        assert!(
            text.contains("kafka") && text.contains("rabbitmq"),
            "{text}"
        );
        let err = load(&with(&[("PYTHIA_RABITMQ__QUEUE", "jobs")])).unwrap_err();
        assert_eq!(err.key(), "rabitmq", "{err}");
        // Within [kafka], unknown keys are still refused.
        let err = load(&with(&[("PYTHIA_KAFKA__QUEUE", "jobs")])).unwrap_err();
        assert_eq!(err.key(), "kafka.queue", "{err}");
    }

    #[test]
    fn missing_brokers_says_how_to_set_them() {
        let err = load(&[("PYTHIA_KAFKA__GROUP", "g")]).unwrap_err();
        assert_eq!(err.key(), "kafka.brokers");
        let text = err.to_string();
        assert!(text.contains("PYTHIA_KAFKA__BROKERS"), "{text}");
        assert!(text.contains("embedded"), "{text}");
    }

    #[test]
    fn missing_group_and_topics_are_named() {
        let err = load(&[("PYTHIA_KAFKA__BROKERS", "b:1")]).unwrap_err();
        assert_eq!(err.key(), "kafka.group");
        let err = load(&[
            ("PYTHIA_KAFKA__BROKERS", "b:1"),
            ("PYTHIA_KAFKA__GROUP", "g"),
        ])
        .unwrap_err();
        assert_eq!(err.key(), "kafka.topics");
    }

    #[test]
    fn the_kafka_config_example_loads_as_written() {
        // Each item's example is in the file that declares it.
        let source = [include_str!("mod.rs"), include_str!("security.rs")].concat();
        let example = |item: &str| {
            let end = source
                .find(&format!("\npub struct {item} "))
                .expect("the item");
            let start = source[..end]
                .rfind("/// ```toml\n")
                .expect("its TOML example");
            let lines: Vec<&str> = (source[start..end].lines().skip(1))
                .take_while(|line| *line != "/// ```")
                .map(|line| line.strip_prefix("///").unwrap_or(line))
                .map(|line| line.strip_prefix(' ').unwrap_or(line))
                .collect();
            lines.join("\n") + "\n"
        };
        // [kafka.security] needs TLS in this build: check it apart.
        let security = example("Security");
        let toml = format!("{}\n{security}", example("KafkaConfig"));
        let dir = std::env::temp_dir().join(format!("pythia-kafka-example-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("pythia.toml");
        std::fs::write(&path, &toml).unwrap();
        let loaded: Config = ConfigLoader::new()
            .file(&path)
            .env::<&str, &str>([])
            .load()
            .unwrap_or_else(|e| panic!("{e}\nin the example:\n{toml}"));
        loaded.worker.validate().unwrap();
        let kafka = &loaded.kafka;
        assert_eq!(kafka.topics, ["orders"]);
        assert_eq!(kafka.sinks["billing"], "billing.invoices");
        assert_eq!(kafka.consumer.get("fetch.max.bytes"), Some("52428800"));
        assert_eq!(kafka.producer.get("linger.ms"), Some("10"));
        assert_eq!(kafka.security.protocol.as_deref(), Some("sasl_ssl"));
        assert_eq!(kafka.security.sasl_username.as_deref(), Some("billing"));
        // What librdkafka is asked for, bar TLS, which this build may lack.
        kafka.security.protocol().unwrap();
        kafka.security.sasl_mechanism().unwrap();
        let mut without_tls = kafka.clone();
        without_tls.security = Security::default();
        without_tls.validate().unwrap();
    }
}
