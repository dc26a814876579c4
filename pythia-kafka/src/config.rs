//! Kafka settings under `[kafka]`, and the full worker configuration.

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use pythia_core::endpoint::MetricsConfig;
use pythia_core::health::HealthConfig;
use pythia_core::{ConfigError, ConfigLoader, Worker, WorkerConfig, WorkerSpec};
use rdkafka::ClientConfig;
use serde::{Deserialize, Deserializer};

use crate::log::LogConfig;
use crate::otel::OtelConfig;

/// The value of `kafka.brokers` that starts an in-process broker.
pub const EMBEDDED: &str = "embedded";

const BROKERS_HINT: &str = "set PYTHIA_KAFKA__BROKERS=host:9092[,host2:9092] or `brokers = \"host:9092\"` under [kafka] in pythia.toml; `brokers = \"embedded\"` runs an in-process broker for development";

/// Everything a Kafka worker is configured with: `[worker]` and `[kafka]`.
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

/// Which consumer-group protocol to speak.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(try_from = "String")]
#[non_exhaustive]
pub enum GroupProtocol {
    /// KIP-848 on the embedded broker, classic everywhere else.
    #[default]
    Auto,
    /// KIP-848 (`group.protocol=consumer`, Kafka 4.0+): the broker assigns,
    /// rebalances are incremental and fast.
    Consumer,
    /// The classic protocol with a client-side assignor (`assignment_strategy`).
    Classic,
}

/// The client-side assignor of the classic protocol.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(try_from = "String")]
#[non_exhaustive]
pub enum AssignmentStrategy {
    /// Incremental: a rebalance moves only the partitions it must.
    #[default]
    CooperativeSticky,
    /// Eager range assignment (every rebalance revokes everything).
    Range,
    /// Eager round-robin assignment.
    Roundrobin,
}

/// Parses one of `choices` (case-insensitive) or says which are allowed.
fn choose<T: Copy>(value: &str, choices: &[(&str, T)]) -> Result<T, String> {
    choices
        .iter()
        .find(|(name, _)| name.eq_ignore_ascii_case(value.trim()))
        .map(|(_, v)| *v)
        .ok_or_else(|| {
            let names: Vec<&str> = choices.iter().map(|(n, _)| *n).collect();
            format!("`{value}` is not one of: {}", names.join(", "))
        })
}

impl TryFrom<String> for GroupProtocol {
    type Error = String;

    fn try_from(value: String) -> Result<Self, String> {
        choose(
            &value,
            &[
                ("auto", Self::Auto),
                ("consumer", Self::Consumer),
                ("classic", Self::Classic),
            ],
        )
    }
}

impl TryFrom<String> for AssignmentStrategy {
    type Error = String;

    fn try_from(value: String) -> Result<Self, String> {
        choose(
            &value,
            &[
                ("cooperative-sticky", Self::CooperativeSticky),
                ("range", Self::Range),
                ("roundrobin", Self::Roundrobin),
            ],
        )
    }
}

impl AssignmentStrategy {
    fn as_str(self) -> &'static str {
        match self {
            Self::CooperativeSticky => "cooperative-sticky",
            Self::Range => "range",
            Self::Roundrobin => "roundrobin",
        }
    }
}

/// A value that must not be shown: `Debug` prints `***`.
#[derive(Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    /// Wraps a secret value.
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    /// The secret itself, for handing to the client.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("\"***\"")
    }
}

/// Raw librdkafka properties, passed to the client as given.
///
/// In TOML write the property names as librdkafka does (`"fetch.max.bytes" =
/// 1048576`); in environment variables write the dots as underscores
/// (`PYTHIA_KAFKA__CONSUMER__FETCH_MAX_BYTES=1048576`). Values that look like
/// secrets (`*password*`, `*secret*`, `*.key.pem`) are hidden in `Debug`.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Properties(BTreeMap<String, String>);

impl Properties {
    /// Sets one property.
    pub fn set(&mut self, name: impl Into<String>, value: impl Into<String>) -> &mut Self {
        self.0.insert(name.into(), value.into());
        self
    }

    /// One property's value.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.0.get(name).map(String::as_str)
    }

    /// All properties, sorted by name.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.0.iter().map(|(k, v)| (k.as_str(), v.as_str()))
    }
}

fn is_secret(name: &str) -> bool {
    name.contains("password") || name.contains("secret") || name.ends_with(".key.pem")
}

impl fmt::Debug for Properties {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_map()
            .entries(
                self.0
                    .iter()
                    .map(|(k, v)| (k, if is_secret(k) { "***" } else { v.as_str() })),
            )
            .finish()
    }
}

impl<'de> Deserialize<'de> for Properties {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Scalar {
            Bool(bool),
            Int(i64),
            Float(f64),
            Text(String),
        }
        let raw = BTreeMap::<String, Scalar>::deserialize(deserializer)?;
        Ok(Self(
            raw.into_iter()
                .map(|(name, value)| {
                    // Environment variables cannot hold dots: fetch_max_bytes -> fetch.max.bytes.
                    let name = if name.contains('.') {
                        name
                    } else {
                        name.replace('_', ".")
                    };
                    let value = match value {
                        Scalar::Bool(b) => b.to_string(),
                        Scalar::Int(i) => i.to_string(),
                        Scalar::Float(f) => f.to_string(),
                        Scalar::Text(s) => s,
                    };
                    (name, value)
                })
                .collect(),
        ))
    }
}

/// SASL/SSL settings. Passwords never appear in `Debug` output or logs.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
#[non_exhaustive]
pub struct Security {
    /// `security.protocol`: plaintext, ssl, sasl_plaintext or sasl_ssl.
    pub protocol: Option<String>,
    /// `sasl.mechanisms`: PLAIN, SCRAM-SHA-256, SCRAM-SHA-512, …
    pub sasl_mechanism: Option<String>,
    /// `sasl.username`.
    pub sasl_username: Option<String>,
    /// `sasl.password`.
    pub sasl_password: Option<Secret>,
    /// `ssl.ca.location`.
    pub ssl_ca_location: Option<String>,
    /// `ssl.key.password`.
    pub ssl_key_password: Option<Secret>,
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

/// Properties Pythia sets from typed keys; setting them raw would break it.
const RESERVED: &[(&str, &str)] = &[
    ("bootstrap.servers", "kafka.brokers"),
    ("group.id", "kafka.group"),
    ("group.protocol", "kafka.group_protocol"),
    ("partition.assignment.strategy", "kafka.assignment_strategy"),
    ("session.timeout.ms", "kafka.session_timeout"),
    (
        "enable.auto.commit",
        "kafka.commit_interval (Pythia commits what is done)",
    ),
    (
        "enable.auto.offset.store",
        "nothing (Pythia stores offsets of finished messages)",
    ),
    ("auto.commit.interval.ms", "kafka.commit_interval"),
];

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
            for (name, _) in props.iter() {
                if let Some((_, instead)) = RESERVED.iter().find(|(r, _)| *r == name) {
                    return Err(ConfigError::invalid(
                        format!("kafka.{table}.{name}"),
                        format!("is set by Pythia; use {instead} instead"),
                    ));
                }
            }
        }
        // librdkafka knows its properties; ask it now rather than at connect time.
        self.consumer_client_config("check")?;
        self.producer_client_config()?;
        Ok(())
    }

    /// Whether the brokers setting asks for the in-process broker.
    pub fn is_embedded(&self) -> bool {
        self.brokers.as_deref().map(str::trim) == Some(EMBEDDED)
    }

    fn uses_kip848(&self) -> bool {
        match self.group_protocol {
            GroupProtocol::Consumer => true,
            GroupProtocol::Classic => false,
            GroupProtocol::Auto => self.is_embedded(),
        }
    }

    pub(crate) fn base(&self) -> ClientConfig {
        let mut config = ClientConfig::new();
        config.set(
            "bootstrap.servers",
            self.brokers.as_deref().unwrap_or_default(),
        );
        let s = &self.security;
        let pairs = [
            ("security.protocol", s.protocol.as_deref()),
            ("sasl.mechanisms", s.sasl_mechanism.as_deref()),
            ("sasl.username", s.sasl_username.as_deref()),
            (
                "sasl.password",
                s.sasl_password.as_ref().map(Secret::expose),
            ),
            ("ssl.ca.location", s.ssl_ca_location.as_deref()),
            (
                "ssl.key.password",
                s.ssl_key_password.as_ref().map(Secret::expose),
            ),
        ];
        for (name, value) in pairs {
            if let Some(value) = value {
                config.set(name, value);
            }
        }
        config
    }

    /// The librdkafka consumer configuration for member `client_id`.
    pub fn consumer_client_config(&self, client_id: &str) -> Result<ClientConfig, ConfigError> {
        let mut config = self.base();
        config
            .set("group.id", self.group.as_deref().unwrap_or_default())
            .set("client.id", client_id)
            .set("enable.auto.commit", "false")
            .set("enable.auto.offset.store", "false")
            .set("auto.offset.reset", "earliest")
            .set("enable.partition.eof", "false")
            // librdkafka's 1000 ms default caps a consumer near 160k msg/s.
            .set("fetch.queue.backoff.ms", "10")
            // Each partition is read from its own queue, and these bounds apply
            // per queue: librdkafka's defaults (100,000 messages or 64 MiB per
            // partition) let the prefetch of a few hundred partitions reach
            // gigabytes, far beyond worker.partition_buffer.
            .set("queued.min.messages", "20000")
            .set("queued.max.messages.kbytes", "16384");
        if self.uses_kip848() {
            config.set("group.protocol", "consumer");
        } else {
            config
                .set("group.protocol", "classic")
                .set(
                    "partition.assignment.strategy",
                    self.assignment_strategy.as_str(),
                )
                .set(
                    "session.timeout.ms",
                    self.session_timeout.as_millis().to_string(),
                );
        }
        for (name, value) in self.consumer.iter() {
            config.set(name, value);
        }
        check(&config, "consumer")?;
        Ok(config)
    }

    /// The librdkafka producer configuration.
    pub fn producer_client_config(&self) -> Result<ClientConfig, ConfigError> {
        let mut config = self.base();
        config
            // Ordered, no duplicates on internal retries.
            .set("enable.idempotence", "true")
            .set("linger.ms", "5")
            .set("compression.type", "lz4");
        for (name, value) in self.producer.iter() {
            config.set(name, value);
        }
        check(&config, "producer")?;
        Ok(config)
    }
}

/// Lets librdkafka validate every property, naming the bad one.
fn check(config: &ClientConfig, table: &str) -> Result<(), ConfigError> {
    config
        .create_native_config()
        .map(drop)
        .map_err(|e| match e {
            rdkafka::error::KafkaError::ClientConfig(_, description, name, _) => {
                ConfigError::invalid(format!("kafka.{table}.{name}"), description)
            }
            other => ConfigError::invalid(format!("kafka.{table}"), other.to_string()),
        })
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

    fn load(vars: &[(&str, &str)]) -> Result<Config, ConfigError> {
        Config::from_loader(ConfigLoader::new().no_file().env(vars.iter().copied()))
    }

    const OK: &[(&str, &str)] = &[
        ("PYTHIA_KAFKA__BROKERS", "localhost:9092"),
        ("PYTHIA_KAFKA__GROUP", "g"),
        ("PYTHIA_KAFKA__TOPICS", "a,b"),
    ];

    fn with(extra: &[(&'static str, &'static str)]) -> Vec<(&'static str, &'static str)> {
        OK.iter().chain(extra).copied().collect()
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
    fn raw_properties_pass_through_and_bad_ones_are_named() {
        let config = load(&with(&[(
            "PYTHIA_KAFKA__CONSUMER__FETCH_MAX_BYTES",
            "1000000",
        )]))
        .unwrap();
        assert_eq!(
            config.kafka.consumer.get("fetch.max.bytes"),
            Some("1000000")
        );
        let client = config.kafka.consumer_client_config("x").unwrap();
        assert_eq!(client.get("fetch.max.bytes"), Some("1000000"));
        assert_eq!(client.get("fetch.queue.backoff.ms"), Some("10"));

        let err = load(&with(&[("PYTHIA_KAFKA__CONSUMER__NO_SUCH_PROPERTY", "1")])).unwrap_err();
        assert_eq!(err.key(), "kafka.consumer.no.such.property", "{err}");

        let err = load(&with(&[("PYTHIA_KAFKA__PRODUCER__LINGER_MS", "soon")])).unwrap_err();
        assert_eq!(err.key(), "kafka.producer.linger.ms", "{err}");

        let err = load(&with(&[("PYTHIA_KAFKA__CONSUMER__GROUP_ID", "other")])).unwrap_err();
        assert_eq!(err.key(), "kafka.consumer.group.id");
        assert!(err.to_string().contains("kafka.group"), "{err}");
    }

    #[test]
    fn protocol_choice_maps_to_client_properties() {
        let classic = load(OK).unwrap().kafka.consumer_client_config("x").unwrap();
        assert_eq!(classic.get("group.protocol"), Some("classic"));
        assert_eq!(
            classic.get("partition.assignment.strategy"),
            Some("cooperative-sticky")
        );

        let kip848 = load(&with(&[("PYTHIA_KAFKA__GROUP_PROTOCOL", "consumer")]))
            .unwrap()
            .kafka
            .consumer_client_config("x")
            .unwrap();
        assert_eq!(kip848.get("group.protocol"), Some("consumer"));
        assert_eq!(kip848.get("session.timeout.ms"), None);

        let err = load(&with(&[("PYTHIA_KAFKA__GROUP_PROTOCOL", "fast")])).unwrap_err();
        assert_eq!(err.key(), "kafka.group_protocol");
        assert!(err.to_string().contains("consumer"), "{err}");
    }

    #[test]
    fn secrets_never_show_in_debug() {
        let config = load(&with(&[
            ("PYTHIA_KAFKA__SECURITY__SASL_PASSWORD", "hunter2"),
            ("PYTHIA_KAFKA__CONSUMER__SASL_PASSWORD", "hunter3"),
        ]))
        .unwrap();
        let shown = format!("{config:?}");
        assert!(
            !shown.contains("hunter2") && !shown.contains("hunter3"),
            "{shown}"
        );
        assert_eq!(
            config
                .kafka
                .security
                .sasl_password
                .as_ref()
                .map(Secret::expose),
            Some("hunter2")
        );
    }
}
