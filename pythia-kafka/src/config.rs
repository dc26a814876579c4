//! Kafka settings under `[kafka]`, and the full worker configuration.

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use pythia_core::endpoint::MetricsConfig;
use pythia_core::health::HealthConfig;
use pythia_core::{ConfigError, ConfigLoader, Worker, WorkerConfig, WorkerSpec};
use rdkafka::ClientConfig;
use rdkafka::config::RDKafkaLogLevel;
use rdkafka::error::KafkaError;
use rdkafka::types::RDKafkaConfRes;
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
/// 1048576`, `log_level = 3`): a name librdkafka knows is kept as written. In
/// environment variables write the dots as underscores
/// (`PYTHIA_KAFKA__CONSUMER__FETCH_MAX_BYTES=1048576`): a name without a dot
/// that librdkafka does not know becomes the property with dots in their
/// place, while one it knows with its underscores stays
/// (`PYTHIA_KAFKA__CONSUMER__LOG_LEVEL=3` sets `log_level`). Values that look
/// like secrets (`*password*`, `*secret*`, `*.key.pem`) are hidden in `Debug`.
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
                    let name = property_name(name, librdkafka_knows);
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

/// The librdkafka property a raw entry names.
///
/// The configuration loader merges the file and the environment before this
/// sees the names, so the name itself tells: one librdkafka knows (any with a
/// dot, `log_level`) is kept as written; one without a dot that it does not
/// know is an environment variable's, whose dots had to be written as
/// underscores (`fetch_max_bytes` for `fetch.max.bytes`). Every property of
/// librdkafka 2.12.1 that can be set as text and has an underscore
/// (`log_level`, `enabled_events`, `enable_sasl_queue`; CONFIGURATION.md and
/// `src/rdkafka_conf.c`) has no dot, so each property has one spelling that
/// works from both sources. A name unknown either way stays for librdkafka
/// to refuse, with dots for underscores as the variable meant.
fn property_name(name: String, knows: impl Fn(&str) -> bool) -> String {
    if name.contains('.') || !name.contains('_') || knows(&name) {
        name
    } else {
        name.replace('_', ".")
    }
}

/// Whether the linked librdkafka has a property called `name`, whatever
/// its value.
fn librdkafka_knows(name: &str) -> bool {
    !matches!(
        ClientConfig::new().set(name, "").create_native_config(),
        Err(KafkaError::ClientConfig(
            RDKafkaConfRes::RD_KAFKA_CONF_UNKNOWN,
            ..
        ))
    )
}

/// Hands a raw `log_level` to rdkafka as well: once a client exists, rdkafka
/// sets its level (`rd_kafka_set_log_level`) from its own setting, which
/// would undo the property. A value librdkafka refuses is left to `check`.
fn apply_log_level(config: &mut ClientConfig, raw: &Properties) {
    let level = match raw.get("log_level").map(|v| v.trim().parse::<i32>()) {
        Some(Ok(0)) => RDKafkaLogLevel::Emerg,
        Some(Ok(1)) => RDKafkaLogLevel::Alert,
        Some(Ok(2)) => RDKafkaLogLevel::Critical,
        Some(Ok(3)) => RDKafkaLogLevel::Error,
        Some(Ok(4)) => RDKafkaLogLevel::Warning,
        Some(Ok(5)) => RDKafkaLogLevel::Notice,
        Some(Ok(6)) => RDKafkaLogLevel::Info,
        Some(Ok(7)) => RDKafkaLogLevel::Debug,
        _ => return,
    };
    config.set_log_level(level);
}

/// SASL/SSL settings, under `[kafka.security]`. Passwords never appear in
/// `Debug` output or logs.
///
/// `protocol` and `sasl_mechanism` are checked when the configuration is
/// loaded, as is whether this build of librdkafka supports them: TLS, and
/// with it SCRAM and OAUTHBEARER, needs pythia-kafka's `ssl` or
/// `ssl-vendored` feature.
///
/// ```toml
/// [kafka.security]
/// protocol = "sasl_ssl"            # plaintext | ssl | sasl_plaintext | sasl_ssl
/// sasl_mechanism = "SCRAM-SHA-512" # PLAIN | SCRAM-SHA-256 | SCRAM-SHA-512 | OAUTHBEARER | GSSAPI
/// sasl_username = "billing"
/// # sasl_password: PYTHIA_KAFKA__SECURITY__SASL_PASSWORD
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
#[non_exhaustive]
pub struct Security {
    /// `security.protocol`: plaintext, ssl, sasl_plaintext or sasl_ssl (any case).
    pub protocol: Option<String>,
    /// `sasl.mechanisms`: PLAIN, SCRAM-SHA-256, SCRAM-SHA-512, OAUTHBEARER or
    /// GSSAPI (any case). With a `sasl_*` protocol and no mechanism,
    /// librdkafka uses GSSAPI.
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

/// A value of `kafka.security.protocol`, as librdkafka spells it, and
/// whether it needs TLS and SASL.
#[derive(Debug, Clone, Copy)]
struct Protocol {
    name: &'static str,
    tls: bool,
    sasl: bool,
}

const SECURITY_PROTOCOLS: &[Protocol] = &[
    Protocol {
        name: "plaintext",
        tls: false,
        sasl: false,
    },
    Protocol {
        name: "ssl",
        tls: true,
        sasl: false,
    },
    Protocol {
        name: "sasl_plaintext",
        tls: false,
        sasl: true,
    },
    Protocol {
        name: "sasl_ssl",
        tls: true,
        sasl: true,
    },
];

/// A value of `kafka.security.sasl_mechanism`, as librdkafka spells it,
/// with its name in librdkafka's `builtin.features` and what a build
/// without it lacks.
#[derive(Debug, Clone, Copy)]
struct Mechanism {
    name: &'static str,
    feature: &'static str,
    lacking: &'static str,
}

const SASL_MECHANISMS: &[Mechanism] = &[
    Mechanism {
        name: "PLAIN",
        feature: "sasl_plain",
        lacking: "",
    },
    Mechanism {
        name: "SCRAM-SHA-256",
        feature: "sasl_scram",
        lacking: TLS_BUILD,
    },
    Mechanism {
        name: "SCRAM-SHA-512",
        feature: "sasl_scram",
        lacking: TLS_BUILD,
    },
    Mechanism {
        name: "OAUTHBEARER",
        feature: "sasl_oauthbearer",
        lacking: TLS_BUILD,
    },
    GSSAPI,
];

/// librdkafka's mechanism when a `sasl_*` protocol names none.
const GSSAPI: Mechanism = Mechanism {
    name: "GSSAPI",
    feature: "sasl_gssapi",
    lacking: "it needs librdkafka built with Cyrus SASL (rdkafka's `gssapi` feature), which pythia-kafka's features do not turn on",
};

const TLS_BUILD: &str = "it needs TLS support: build pythia-kafka with its `ssl` (system OpenSSL) or `ssl-vendored` feature";

/// `value` as one of `table`'s entries, named by `name` (any case), or
/// an error naming `key` and listing the names.
fn one_of<T: Copy>(
    key: &str,
    value: &str,
    table: &[T],
    name: fn(&T) -> &'static str,
) -> Result<T, ConfigError> {
    let choices: Vec<(&str, T)> = table.iter().map(|entry| (name(entry), *entry)).collect();
    choose(value, &choices).map_err(|reason| ConfigError::invalid(key, reason))
}

/// Properties Pythia sets from typed keys, with the key each comes from: a
/// value librdkafka refuses is reported under that key, unless the raw
/// property was set too (`[kafka.consumer]`, `[kafka.producer]`).
const FROM_TYPED_KEYS: &[(&str, &str)] = &[
    ("bootstrap.servers", "kafka.brokers"),
    ("security.protocol", "kafka.security.protocol"),
    ("sasl.mechanisms", "kafka.security.sasl_mechanism"),
    ("sasl.username", "kafka.security.sasl_username"),
    ("sasl.password", "kafka.security.sasl_password"),
    ("ssl.ca.location", "kafka.security.ssl_ca_location"),
    ("ssl.key.password", "kafka.security.ssl_key_password"),
];

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
        // Spelled as librdkafka does. A value that is none of ours goes as
        // given (`validate` has reported it already, if it ran).
        let protocol = s.protocol().ok().flatten().map(|p| p.name);
        let mechanism = s.sasl_mechanism().ok().flatten().map(|m| m.name);
        let pairs = [
            ("security.protocol", protocol.or(s.protocol.as_deref())),
            ("sasl.mechanisms", mechanism.or(s.sasl_mechanism.as_deref())),
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
        apply_log_level(&mut config, &self.consumer);
        check(&config, "consumer", &self.consumer)?;
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
        apply_log_level(&mut config, &self.producer);
        check(&config, "producer", &self.producer)?;
        Ok(config)
    }
}

impl Security {
    /// `protocol`, if set.
    fn protocol(&self) -> Result<Option<Protocol>, ConfigError> {
        self.protocol
            .as_deref()
            .map(|value| {
                one_of("kafka.security.protocol", value, SECURITY_PROTOCOLS, |p| {
                    p.name
                })
            })
            .transpose()
    }

    /// `sasl_mechanism`, if set.
    fn sasl_mechanism(&self) -> Result<Option<Mechanism>, ConfigError> {
        self.sasl_mechanism
            .as_deref()
            .map(|value| {
                one_of(
                    "kafka.security.sasl_mechanism",
                    value,
                    SASL_MECHANISMS,
                    |m| m.name,
                )
            })
            .transpose()
    }

    /// Checks `protocol` and `sasl_mechanism`, and that this build of
    /// librdkafka supports them, before librdkafka sees them: it would name
    /// its own property, or refuse only when the consumer starts. A raw
    /// `sasl.mechanism(s)` property in one of `raw` is left to librdkafka.
    /// `features` are librdkafka's `builtin.features` (none: not known, not
    /// checked).
    fn validate(&self, raw: &[&Properties], features: &[String]) -> Result<(), ConfigError> {
        let mechanism = self.sasl_mechanism()?;
        let Some(protocol) = self.protocol()? else {
            return Ok(());
        };
        if features.is_empty() {
            return Ok(());
        }
        let supports = |feature: &str| features.iter().any(|f| f == feature);
        if protocol.tls && !supports("ssl") {
            return Err(ConfigError::invalid(
                "kafka.security.protocol",
                format!(
                    "`{}` is not supported by this build: {TLS_BUILD}",
                    protocol.name
                ),
            ));
        }
        let raw_mechanism = raw
            .iter()
            .any(|p| p.get("sasl.mechanisms").is_some() || p.get("sasl.mechanism").is_some());
        let used = mechanism.unwrap_or(GSSAPI);
        if !protocol.sasl || raw_mechanism || supports(used.feature) {
            return Ok(());
        }
        let supported: Vec<&str> = SASL_MECHANISMS
            .iter()
            .filter(|m| supports(m.feature))
            .map(|m| m.name)
            .collect();
        let (name, lacking, supported) = (used.name, used.lacking, supported.join(", "));
        Err(match mechanism {
            Some(_) => ConfigError::invalid(
                "kafka.security.sasl_mechanism",
                format!(
                    "`{name}` is not supported by this build ({lacking}); it supports: {supported}"
                ),
            ),
            None => ConfigError::missing(
                "kafka.security.sasl_mechanism",
                format!(
                    "`{}` needs a SASL mechanism, and librdkafka's default, {name}, is not supported by this build ({lacking}): set one it supports ({supported}), e.g. PYTHIA_KAFKA__SECURITY__SASL_MECHANISM=PLAIN",
                    protocol.name
                ),
            ),
        })
    }
}

/// What this build of librdkafka supports (`builtin.features`: `ssl`,
/// `sasl_plain`, `sasl_scram`, ...).
fn builtin_features() -> Vec<String> {
    ClientConfig::new()
        .create_native_config()
        .and_then(|config| config.get("builtin.features"))
        .map(|features| features.split(',').map(str::to_owned).collect())
        .unwrap_or_default()
}

/// Lets librdkafka validate every property, naming the bad one by the key
/// it was set with: `kafka.<table>.<property>` for a raw property of `raw`,
/// else the typed key it comes from (`kafka.security.protocol`).
fn check(config: &ClientConfig, table: &str, raw: &Properties) -> Result<(), ConfigError> {
    config
        .create_native_config()
        .map(drop)
        .map_err(|e| match e {
            KafkaError::ClientConfig(_, description, name, _) => {
                ConfigError::invalid(key_of(&name, table, raw), description)
            }
            other => ConfigError::invalid(format!("kafka.{table}"), other.to_string()),
        })
}

/// The key the user set librdkafka property `name` with.
fn key_of(name: &str, table: &str, raw: &Properties) -> String {
    match FROM_TYPED_KEYS
        .iter()
        .find(|(property, _)| *property == name)
    {
        Some((_, key)) if raw.get(name).is_none() => (*key).to_owned(),
        _ => format!("kafka.{table}.{name}"),
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
    fn env_names_find_their_property_and_known_names_stay_as_written() {
        let knows = |name: &str| ["log_level", "enabled_events"].contains(&name);
        let table = [
            // (name as it reaches the deserializer, property)
            ("fetch.max.bytes", "fetch.max.bytes"),
            ("log_level", "log_level"),
            ("enabled_events", "enabled_events"),
            ("fetch_max_bytes", "fetch.max.bytes"),
            ("no_such_property", "no.such.property"),
            ("acks", "acks"),
            ("ssl.certificate.verify_cb", "ssl.certificate.verify_cb"),
        ];
        for (name, property) in table {
            assert_eq!(property_name(name.to_owned(), knows), property, "{name}");
        }
        // Asked of the linked librdkafka.
        assert!(librdkafka_knows("log_level"));
        assert!(librdkafka_knows("fetch.max.bytes"));
        assert!(
            librdkafka_knows("dr_cb"),
            "known, though not settable as text"
        );
        assert!(!librdkafka_knows("fetch_max_bytes"));
        assert!(!librdkafka_knows("log.level"));
    }

    #[test]
    fn file_keys_are_kept_as_written_and_env_keys_find_their_property() {
        let dir = std::env::temp_dir().join(format!("pythia-kafka-raw-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("pythia.toml");
        std::fs::write(
            &path,
            "[kafka.consumer]\nlog_level = 3\n\"fetch.max.bytes\" = 1000000\n",
        )
        .unwrap();
        let config = Config::from_loader(ConfigLoader::new().file(&path).env(with(&[
            ("PYTHIA_KAFKA__PRODUCER__LOG_LEVEL", "2"),
            ("PYTHIA_KAFKA__PRODUCER__LINGER_MS", "7"),
        ])))
        .unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
        let consumer: Vec<_> = config.kafka.consumer.iter().collect();
        assert_eq!(
            consumer,
            [("fetch.max.bytes", "1000000"), ("log_level", "3")]
        );
        let producer: Vec<_> = config.kafka.producer.iter().collect();
        assert_eq!(producer, [("linger.ms", "7"), ("log_level", "2")]);

        // And rdkafka keeps the level, which it would otherwise reset.
        let client = config.kafka.consumer_client_config("x").unwrap();
        assert_eq!(client.get("log_level"), Some("3"));
        assert_eq!(client.log_level as i32, 3);
        let client = config.kafka.producer_client_config().unwrap();
        assert_eq!(client.log_level as i32, 2);

        let err = load(&with(&[("PYTHIA_KAFKA__CONSUMER__LOG_LEVEL", "9")])).unwrap_err();
        assert_eq!(err.key(), "kafka.consumer.log_level", "{err}");
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

    #[test]
    fn a_bad_security_protocol_is_named_by_its_key_with_the_allowed_values() {
        let err = load(&with(&[("PYTHIA_KAFKA__SECURITY__PROTOCOL", "tls")])).unwrap_err();
        assert_eq!(err.key(), "kafka.security.protocol");
        assert_eq!(
            err.to_string(),
            "invalid value for `kafka.security.protocol`: `tls` is not one of: plaintext, ssl, sasl_plaintext, sasl_ssl"
        );
        // Any case, passed on as librdkafka spells it.
        let config = load(&with(&[("PYTHIA_KAFKA__SECURITY__PROTOCOL", "PLAINTEXT")])).unwrap();
        let client = config.kafka.consumer_client_config("x").unwrap();
        assert_eq!(client.get("security.protocol"), Some("plaintext"));
    }

    #[test]
    fn a_bad_sasl_mechanism_is_named_by_its_key_with_the_allowed_values() {
        let err = load(&with(&[(
            "PYTHIA_KAFKA__SECURITY__SASL_MECHANISM",
            "SCRAM",
        )]))
        .unwrap_err();
        assert_eq!(err.key(), "kafka.security.sasl_mechanism");
        assert_eq!(
            err.to_string(),
            "invalid value for `kafka.security.sasl_mechanism`: `SCRAM` is not one of: PLAIN, SCRAM-SHA-256, SCRAM-SHA-512, OAUTHBEARER, GSSAPI"
        );
        let config = load(&with(&[
            ("PYTHIA_KAFKA__SECURITY__PROTOCOL", "sasl_plaintext"),
            ("PYTHIA_KAFKA__SECURITY__SASL_MECHANISM", "plain"),
        ]))
        .unwrap();
        let client = config.kafka.producer_client_config().unwrap();
        assert_eq!(client.get("sasl.mechanisms"), Some("PLAIN"));
    }

    #[test]
    fn what_the_build_lacks_is_named_by_the_key_that_asks_for_it() {
        let security = |protocol: &str, mechanism: Option<&str>| Security {
            protocol: Some(protocol.to_owned()),
            sasl_mechanism: mechanism.map(str::to_owned),
            ..Security::default()
        };
        let plain_only = ["gzip".to_owned(), "sasl_plain".to_owned()];
        let with_tls = ["ssl", "sasl_plain", "sasl_scram", "sasl_oauthbearer"].map(String::from);

        let err = security("ssl", None)
            .validate(&[], &plain_only)
            .unwrap_err();
        assert_eq!(err.key(), "kafka.security.protocol");
        assert!(err.to_string().contains("`ssl-vendored` feature"), "{err}");
        security("ssl", None).validate(&[], &with_tls).unwrap();

        let err = security("sasl_plaintext", Some("scram-sha-512"))
            .validate(&[], &plain_only)
            .unwrap_err();
        assert_eq!(err.key(), "kafka.security.sasl_mechanism");
        assert!(
            err.to_string()
                .contains("`SCRAM-SHA-512` is not supported by this build")
                && err.to_string().contains("it supports: PLAIN"),
            "{err}"
        );
        security("sasl_ssl", Some("SCRAM-SHA-512"))
            .validate(&[], &with_tls)
            .unwrap();

        // No mechanism: librdkafka would pick GSSAPI, which no build of ours has.
        let err = security("sasl_ssl", None)
            .validate(&[], &with_tls)
            .unwrap_err();
        assert!(matches!(err, ConfigError::Missing { .. }), "{err}");
        assert_eq!(err.key(), "kafka.security.sasl_mechanism");
        assert!(err.to_string().contains("GSSAPI"), "{err}");

        // A mechanism set as a raw property is librdkafka's to check.
        let mut raw = Properties::default();
        raw.set("sasl.mechanisms", "PLAIN");
        security("sasl_plaintext", None)
            .validate(&[&raw], &plain_only)
            .unwrap();
        // Without SASL, the mechanism is not used.
        security("plaintext", Some("GSSAPI"))
            .validate(&[], &plain_only)
            .unwrap();
        // Features unknown: librdkafka is left to say.
        security("sasl_ssl", None).validate(&[], &[]).unwrap();
        let err = security("sasl_ssl", Some("KERBEROS"))
            .validate(&[], &[])
            .unwrap_err();
        assert_eq!(err.key(), "kafka.security.sasl_mechanism");
    }

    #[test]
    fn this_build_reports_its_features() {
        let features = builtin_features();
        assert!(features.iter().any(|f| f == "sasl_plain"), "{features:?}");
    }

    #[test]
    fn librdkafka_refusals_name_the_key_the_value_was_set_with() {
        let mut raw = Properties::default();
        assert_eq!(
            key_of("security.protocol", "consumer", &raw),
            "kafka.security.protocol"
        );
        assert_eq!(
            key_of("fetch.max.bytes", "consumer", &raw),
            "kafka.consumer.fetch.max.bytes"
        );
        raw.set("security.protocol", "bogus");
        assert_eq!(
            key_of("security.protocol", "consumer", &raw),
            "kafka.consumer.security.protocol",
            "set raw, named raw"
        );
        let err = load(&with(&[(
            "PYTHIA_KAFKA__CONSUMER__SECURITY_PROTOCOL",
            "bogus",
        )]))
        .unwrap_err();
        assert_eq!(err.key(), "kafka.consumer.security.protocol", "{err}");
    }

    #[test]
    fn the_kafka_config_example_loads_as_written() {
        let source = include_str!("config.rs");
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
