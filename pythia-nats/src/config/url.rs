//! [`NatsUrl`]: the server address, whose password or token never shows.

use std::fmt;

use pythia_core::connector::redact_url;
use serde::{Deserialize, Deserializer};

/// The URL of a NATS server, `nats://user:password@host:4222` (or
/// `tls://…`; several servers separated by commas).
///
/// `Debug` and `Display` print it with the password replaced by `***`, so a
/// configuration can be logged or printed whole; [`NatsUrl::expose`] gives the
/// URL itself, for the client only.
///
/// ```
/// use pythia_nats::NatsUrl;
/// let url = NatsUrl::new("nats://jobs:s3cret@nats:4222");
/// assert_eq!(url.to_string(), "nats://jobs:***@nats:4222");
/// assert!(!format!("{url:?}").contains("s3cret"));
/// assert_eq!(url.expose(), "nats://jobs:s3cret@nats:4222");
/// ```
#[derive(Clone, PartialEq, Eq)]
pub struct NatsUrl(String);

/// The server a worker connects to when no URL is set: NATS on this machine.
pub const DEFAULT_URL: &str = "nats://127.0.0.1:4222";

impl NatsUrl {
    /// Wraps a URL.
    pub fn new(url: impl Into<String>) -> Self {
        Self(url.into())
    }

    /// The URL with its password, for the client.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// The URL with each password (or token) replaced by `***`.
    pub fn redacted(&self) -> String {
        self.0
            .split(',')
            .map(|url| redact_url(url, true))
            .collect::<Vec<_>>()
            .join(",")
    }

    /// Why the URL cannot be used, if it cannot.
    pub(crate) fn scheme_error(&self) -> Option<&'static str> {
        let bad = self.0.split(',').map(str::trim).any(|server| {
            server.is_empty()
                || (server.contains("://")
                    && !(server.starts_with("nats://") || server.starts_with("tls://")))
        });
        bad.then_some(
            "must be nats://host:port or tls://host:port (several separated by commas), e.g. \"nats://127.0.0.1:4222\"",
        )
    }
}

impl Default for NatsUrl {
    fn default() -> Self {
        Self::new(DEFAULT_URL)
    }
}

impl fmt::Display for NatsUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.redacted())
    }
}

impl fmt::Debug for NatsUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.redacted())
    }
}

impl<'de> Deserialize<'de> for NatsUrl {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        String::deserialize(deserializer).map(Self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_and_tokens_are_redacted_and_the_rest_kept() {
        let cases = [
            ("nats://u:p@h:4222", "nats://u:***@h:4222"),
            ("nats://u:p@ss@h", "nats://u:***@h"),
            ("nats://t0ken@h:4222", "nats://***@h:4222"),
            ("nats://h:4222", "nats://h:4222"),
            (
                "nats://a:1@h1,tls://b:2@h2",
                "nats://a:***@h1,tls://b:***@h2",
            ),
            ("h:4222", "h:4222"),
        ];
        for (url, shown) in cases {
            assert_eq!(NatsUrl::new(url).to_string(), shown, "{url}");
        }
    }

    #[test]
    fn nats_and_tls_schemes_are_accepted() {
        for ok in [
            "nats://h:4222",
            "tls://h:4222",
            "h:4222",
            "nats://a,nats://b",
        ] {
            assert!(NatsUrl::new(ok).scheme_error().is_none(), "{ok}");
        }
        for bad in ["http://h", "nats://a,", ""] {
            assert!(NatsUrl::new(bad).scheme_error().is_some(), "{bad}");
        }
    }
}
