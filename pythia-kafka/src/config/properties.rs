//! Raw librdkafka properties (`[kafka.consumer]`, `[kafka.producer]`): the
//! names as librdkafka spells them, found from environment variables' names,
//! secrets hidden, and the properties Pythia sets itself refused.

use std::collections::BTreeMap;
use std::fmt;

use pythia_core::ConfigError;
use rdkafka::ClientConfig;
use rdkafka::error::KafkaError;
use rdkafka::types::RDKafkaConfRes;
use serde::{Deserialize, Deserializer};

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

/// Refuses a raw property of `[kafka.<table>]` that Pythia sets from a typed
/// key, naming the key to set instead.
pub(super) fn refuse_reserved(table: &str, props: &Properties) -> Result<(), ConfigError> {
    for (name, _) in props.iter() {
        if let Some((_, instead)) = RESERVED.iter().find(|(r, _)| *r == name) {
            return Err(ConfigError::invalid(
                format!("kafka.{table}.{name}"),
                format!("is set by Pythia; use {instead} instead"),
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use pythia_core::ConfigLoader;

    use super::*;
    use crate::config::Config;
    use crate::config::tests::{load, with};

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
}
