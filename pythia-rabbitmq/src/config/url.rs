//! [`AmqpUrl`]: the broker address, whose password never shows.

use std::fmt;

use pythia_core::connector::redact_url;
use serde::{Deserialize, Deserializer};

/// The URL of a RabbitMQ broker, `amqp://user:password@host:port/vhost`.
///
/// `Debug` and `Display` print it with the password replaced by `***`, so a
/// configuration can be logged or printed whole; [`AmqpUrl::expose`] gives the
/// URL itself, for the client only.
///
/// ```
/// use pythia_rabbitmq::AmqpUrl;
/// let url = AmqpUrl::new("amqp://jobs:s3cret@rabbit:5672/%2f");
/// assert_eq!(url.to_string(), "amqp://jobs:***@rabbit:5672/%2f");
/// assert!(!format!("{url:?}").contains("s3cret"));
/// assert_eq!(url.expose(), "amqp://jobs:s3cret@rabbit:5672/%2f");
/// ```
#[derive(Clone, PartialEq, Eq)]
pub struct AmqpUrl(String);

/// The broker a worker connects to when no URL is set: RabbitMQ on this
/// machine, with the client's default credentials (guest).
pub const DEFAULT_URL: &str = "amqp://127.0.0.1:5672/%2f";

impl AmqpUrl {
    /// Wraps a URL.
    pub fn new(url: impl Into<String>) -> Self {
        Self(url.into())
    }

    /// The URL with its password, for the client.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// The URL with the password replaced by `***`.
    pub fn redacted(&self) -> String {
        redact_url(&self.0, false)
    }

    /// Whether the scheme is one this build can connect with.
    pub(crate) fn scheme_error(&self) -> Option<&'static str> {
        let url = self.0.trim();
        if url.starts_with("amqp://") {
            None
        } else if url.starts_with("amqps://") {
            Some(
                "amqps:// (TLS) is not supported by this build: use amqp:// behind a TLS-terminating proxy, or a local broker",
            )
        } else {
            Some("must start with amqp://, e.g. \"amqp://user:password@rabbit:5672/%2f\"")
        }
    }
}

impl Default for AmqpUrl {
    fn default() -> Self {
        Self::new(DEFAULT_URL)
    }
}

impl fmt::Display for AmqpUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.redacted())
    }
}

impl fmt::Debug for AmqpUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.redacted())
    }
}

impl<'de> Deserialize<'de> for AmqpUrl {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        String::deserialize(deserializer).map(Self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_are_redacted_and_the_rest_kept() {
        let cases = [
            ("amqp://u:p@h:5672/%2f", "amqp://u:***@h:5672/%2f"),
            ("amqp://u:p@ss@h/v", "amqp://u:***@h/v"),
            ("amqp://u@h:5672", "amqp://u@h:5672"),
            ("amqp://h:5672/%2f", "amqp://h:5672/%2f"),
            ("amqp://h/x@y", "amqp://h/x@y"),
            ("not a url", "not a url"),
        ];
        for (url, shown) in cases {
            assert_eq!(AmqpUrl::new(url).to_string(), shown, "{url}");
        }
    }

    #[test]
    fn only_plain_amqp_is_accepted() {
        assert!(AmqpUrl::new("amqp://h").scheme_error().is_none());
        assert!(
            AmqpUrl::new("amqps://h")
                .scheme_error()
                .unwrap()
                .contains("TLS")
        );
        assert!(AmqpUrl::new("http://h").scheme_error().is_some());
    }
}
