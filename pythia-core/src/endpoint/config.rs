//! `[metrics]`: where the endpoint serves and how often lag is read.

use std::net::SocketAddr;
use std::time::Duration;

use serde::Deserialize;

use crate::error::ConfigError;

/// Settings under `[metrics]`.
///
/// ```toml
/// [metrics]
/// address = "0.0.0.0:9464"   # serve /metrics and /health/*; unset or "off": no server
/// lag_interval = "5s"        # how often lag is read from the broker
/// ```
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
#[non_exhaustive]
pub struct MetricsConfig {
    /// Where to serve `/metrics` and `/health/*`, as `IP:PORT`. Unset, empty or
    /// `"off"` runs no server. Off by default: a fixed default port would
    /// collide when several instances run on one host.
    pub address: Option<String>,
    /// How often partition lag, watermarks and broker reachability are read.
    #[serde(with = "humantime_serde")]
    pub lag_interval: Duration,
}

impl Default for MetricsConfig {
    fn default() -> Self {
        Self {
            address: None,
            lag_interval: Duration::from_secs(5),
        }
    }
}

impl MetricsConfig {
    /// Checks the section; the error names the key.
    ///
    /// ```
    /// let mut config = pythia_core::MetricsConfig::default();
    /// config.address = Some("localhost".into());
    /// assert_eq!(config.validate().unwrap_err().key(), "metrics.address");
    /// ```
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.socket_address()?;
        if self.lag_interval.is_zero() {
            return Err(ConfigError::invalid(
                "metrics.lag_interval",
                "must be longer than zero, e.g. \"5s\"",
            ));
        }
        Ok(())
    }

    /// The address to serve on; `None` when the server is off.
    pub fn socket_address(&self) -> Result<Option<SocketAddr>, ConfigError> {
        match self.address.as_deref().map(str::trim) {
            None | Some("") | Some("off") => Ok(None),
            Some(text) => text.parse().map(Some).map_err(|_| {
                ConfigError::invalid(
                    "metrics.address",
                    format!(
                        "`{text}` is not IP:PORT; write e.g. \"0.0.0.0:9464\" (all interfaces) or \"127.0.0.1:9464\", or \"off\" for no server"
                    ),
                )
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_addresses_name_the_key() {
        for bad in ["9464", "localhost:9464", "0.0.0.0:99999"] {
            let config = MetricsConfig {
                address: Some(bad.into()),
                ..MetricsConfig::default()
            };
            let error = config.validate().unwrap_err();
            assert_eq!(error.key(), "metrics.address");
            assert!(error.to_string().contains("IP:PORT"), "{error}");
        }
        let off = MetricsConfig {
            address: Some("off".into()),
            ..MetricsConfig::default()
        };
        assert_eq!(off.socket_address().unwrap(), None);
    }
}
