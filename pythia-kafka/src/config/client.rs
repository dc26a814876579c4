//! The librdkafka configuration Pythia builds from `[kafka]` for its
//! consumers and producers: the connection and security settings, the
//! defaults Pythia relies on, then the raw properties; and librdkafka's
//! refusals named by the key the value was set with.

use pythia_core::ConfigError;
use rdkafka::ClientConfig;
use rdkafka::config::RDKafkaLogLevel;
use rdkafka::error::KafkaError;

use super::KafkaConfig;
use super::group::GroupProtocol;
use super::properties::Properties;
use super::security::Secret;

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

/// The prefetch bound of each assigned partition, in KiB
/// (`queued.max.messages.kbytes`).
pub(crate) const PREFETCH_KIB: &str = "2048";
/// How long the broker may hold a fetch that finds nothing new (`fetch.wait.max.ms`).
pub(crate) const FETCH_WAIT_MS: &str = "100";

impl KafkaConfig {
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
            // Each partition is read from its own queue, and librdkafka's
            // prefetch bound applies per queue: its 64 MiB per partition would
            // let a member with hundreds of partitions buffer gigabytes. The
            // bound is in bytes, so a partition leaves the fetches only when
            // its queue holds PREFETCH_KIB (see `fetch.wait.max.ms` below);
            // the message count stays at librdkafka's 100,000, which 2 MiB of
            // messages of 21 bytes or more never reach.
            .set("queued.max.messages.kbytes", PREFETCH_KIB)
            // A fetch that asks only for partitions with nothing new is held
            // this long by the broker, and the partitions left out of it for
            // a full queue wait for it: librdkafka's 500 ms stalled the end of
            // every backlog drained by address. 100 ms costs an idle member
            // ten empty fetches a second per broker.
            .set("fetch.wait.max.ms", FETCH_WAIT_MS);
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::tests::{OK, load, with};

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
    fn prefetch_is_bounded_in_bytes_and_fetches_are_not_held_long() {
        let client = load(OK).unwrap().kafka.consumer_client_config("x").unwrap();
        assert_eq!(client.get("queued.max.messages.kbytes"), Some("2048"));
        assert_eq!(client.get("fetch.wait.max.ms"), Some("100"));
        // The message count is librdkafka's: the bytes bind first.
        assert_eq!(client.get("queued.min.messages"), None);

        let tuned = load(&with(&[
            (
                "PYTHIA_KAFKA__CONSUMER__QUEUED_MAX_MESSAGES_KBYTES",
                "65536",
            ),
            ("PYTHIA_KAFKA__CONSUMER__FETCH_WAIT_MAX_MS", "500"),
        ]))
        .unwrap()
        .kafka
        .consumer_client_config("x")
        .unwrap();
        assert_eq!(tuned.get("queued.max.messages.kbytes"), Some("65536"));
        assert_eq!(tuned.get("fetch.wait.max.ms"), Some("500"));
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
}
