//! How a command reaches the cluster: the same configuration layers as a
//! worker (`pythia.toml` or `PYTHIA_CONFIG`, then `PYTHIA_*` variables),
//! then the command's flags. The `[kafka]` section gives the brokers and the
//! `[kafka.security]` SASL/TLS settings, so `lag`, `dlq replay` and `console`
//! reach the cluster a worker reaches. Secrets stay in [`Secret`]s: nothing
//! here prints or logs the configuration.
//!
//! [`Secret`]: pythia_kafka::Secret

use std::path::PathBuf;

use anyhow::Context as _;
use pythia_kafka::{Config, ConfigLoader, KafkaConfig};
use rdkafka::ClientConfig;

/// The flags every cluster command shares.
#[derive(clap::Args, Debug, Clone)]
pub(crate) struct ClusterArgs {
    /// Bootstrap servers, host:port[,host:port]; default: `kafka.brokers`
    /// from the config file or PYTHIA_KAFKA__BROKERS.
    #[arg(long)]
    brokers: Option<String>,
    /// The config file; default: PYTHIA_CONFIG, else ./pythia.toml if it
    /// exists. Its [kafka] and [kafka.security] sections are used (SASL/TLS
    /// settings included).
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
}

impl ClusterArgs {
    /// The `[kafka]` settings from every layer, checked.
    pub(crate) fn kafka(&self) -> anyhow::Result<KafkaConfig> {
        self.kafka_from(ConfigLoader::new())
    }

    fn kafka_from(&self, mut loader: ConfigLoader) -> anyhow::Result<KafkaConfig> {
        if let Some(path) = &self.config {
            loader = loader.file(path);
        }
        if let Some(brokers) = &self.brokers {
            loader = loader.set("kafka.brokers", brokers.as_str());
        }
        let config: Config = loader.load().context("reading the configuration")?;
        config
            .kafka
            .validate_clients()
            .context("checking the [kafka] settings")?;
        if config.kafka.is_embedded() {
            anyhow::bail!(
                "kafka.brokers is \"embedded\": this command needs a running broker's address (--brokers host:port, or `pythia broker` to host one)"
            );
        }
        Ok(config.kafka)
    }

    /// The `--config` file, when given.
    pub(crate) fn config_file(&self) -> Option<&std::path::Path> {
        self.config.as_deref()
    }

    /// The brokers, for messages.
    pub(crate) fn brokers_of(kafka: &KafkaConfig) -> &str {
        kafka.brokers.as_deref().unwrap_or_default()
    }
}

/// The properties that reach `kafka`'s brokers — their addresses and the
/// SASL/TLS settings — and none of Pythia's client defaults: what a plain
/// rdkafka client of a benchmark or load test starts from.
pub(crate) fn connection(kafka: &KafkaConfig) -> anyhow::Result<ClientConfig> {
    let full = kafka.producer_client_config()?;
    let mut connection = ClientConfig::new();
    for (name, value) in full.config_map() {
        if is_connection(name) {
            connection.set(name, value);
        }
    }
    Ok(connection)
}

fn is_connection(name: &str) -> bool {
    name == "bootstrap.servers"
        || ["security.", "sasl.", "ssl."]
            .iter()
            .any(|prefix| name.starts_with(prefix))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_connection_and_security_properties_are_a_connection() {
        for name in [
            "bootstrap.servers",
            "security.protocol",
            "sasl.password",
            "ssl.ca.location",
        ] {
            assert!(is_connection(name), "{name}");
        }
        for name in [
            "linger.ms",
            "enable.idempotence",
            "compression.type",
            "queued.max.messages.kbytes",
        ] {
            assert!(!is_connection(name), "{name}");
        }
    }

    fn args(brokers: Option<&str>) -> ClusterArgs {
        ClusterArgs {
            brokers: brokers.map(str::to_owned),
            config: None,
        }
    }

    #[test]
    fn flags_win_over_the_environment_and_security_comes_along() {
        let loader = ConfigLoader::new().no_file().env([
            ("PYTHIA_KAFKA__BROKERS", "env:9092"),
            ("PYTHIA_KAFKA__SECURITY__PROTOCOL", "sasl_plaintext"),
            ("PYTHIA_KAFKA__SECURITY__SASL_MECHANISM", "PLAIN"),
            ("PYTHIA_KAFKA__SECURITY__SASL_USERNAME", "ops"),
            ("PYTHIA_KAFKA__SECURITY__SASL_PASSWORD", "hunter2"),
        ]);
        let kafka = args(Some("flag:9092")).kafka_from(loader.clone()).unwrap();
        assert_eq!(kafka.brokers.as_deref(), Some("flag:9092"));
        assert_eq!(kafka.security.sasl_username.as_deref(), Some("ops"));
        assert_eq!(
            kafka.security.sasl_password.as_ref().map(|s| s.expose()),
            Some("hunter2")
        );
        assert!(!format!("{kafka:?}").contains("hunter2"));
        let kafka = args(None).kafka_from(loader).unwrap();
        assert_eq!(kafka.brokers.as_deref(), Some("env:9092"));
    }

    #[test]
    fn no_brokers_anywhere_says_how_to_set_them() {
        let error = args(None)
            .kafka_from(ConfigLoader::new().no_file().env::<&str, &str>([]))
            .unwrap_err();
        assert!(
            format!("{error:#}").contains("PYTHIA_KAFKA__BROKERS"),
            "{error:#}"
        );
    }

    #[test]
    fn the_embedded_broker_is_refused_with_the_way_out() {
        let error = args(Some("embedded"))
            .kafka_from(ConfigLoader::new().no_file().env::<&str, &str>([]))
            .unwrap_err();
        assert!(format!("{error:#}").contains("pythia broker"), "{error:#}");
    }
}
