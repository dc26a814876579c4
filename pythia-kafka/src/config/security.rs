//! `[kafka.security]`: SASL/SSL settings, the [`Secret`]s among them, and
//! the checks of the protocol and mechanism against what this build of
//! librdkafka supports.

use std::fmt;

use pythia_core::ConfigError;
use rdkafka::ClientConfig;
use serde::Deserialize;

use super::group::choose;
use super::properties::Properties;

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

/// A value of `kafka.security.protocol`, as librdkafka spells it, and
/// whether it needs TLS and SASL.
#[derive(Debug, Clone, Copy)]
pub(super) struct Protocol {
    pub(super) name: &'static str,
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
pub(super) struct Mechanism {
    pub(super) name: &'static str,
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

impl Security {
    /// `protocol`, if set.
    pub(super) fn protocol(&self) -> Result<Option<Protocol>, ConfigError> {
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
    pub(super) fn sasl_mechanism(&self) -> Result<Option<Mechanism>, ConfigError> {
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
    pub(super) fn validate(
        &self,
        raw: &[&Properties],
        features: &[String],
    ) -> Result<(), ConfigError> {
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
pub(super) fn builtin_features() -> Vec<String> {
    ClientConfig::new()
        .create_native_config()
        .and_then(|config| config.get("builtin.features"))
        .map(|features| features.split(',').map(str::to_owned).collect())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::tests::{load, with};

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
}
