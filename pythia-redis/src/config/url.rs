//! [`RedisUrl`]: the server address, whose password never shows.

use std::fmt;

use pythia_core::connector::redact_url;
use serde::{Deserialize, Deserializer};

/// The URL of a Redis server, `redis://user:password@host:port/db`.
///
/// `Debug` and `Display` print it with the password replaced by `***`, so a
/// configuration can be logged or printed whole; [`RedisUrl::expose`] gives the
/// URL itself, for the client only.
///
/// ```
/// use pythia_redis::RedisUrl;
/// let url = RedisUrl::new("redis://jobs:s3cret@redis:6379/0");
/// assert_eq!(url.to_string(), "redis://jobs:***@redis:6379/0");
/// assert!(!format!("{url:?}").contains("s3cret"));
/// assert_eq!(url.expose(), "redis://jobs:s3cret@redis:6379/0");
/// ```
#[derive(Clone, PartialEq, Eq)]
pub struct RedisUrl(String);

/// The server a worker connects to when no URL is set: Redis on this
/// machine, database 0, no password.
pub const DEFAULT_URL: &str = "redis://127.0.0.1:6379/0";

impl RedisUrl {
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
        if url.starts_with("redis://") {
            None
        } else if url.starts_with("rediss://") {
            Some(
                "rediss:// (TLS) is not supported by this build: use redis:// behind a TLS-terminating proxy, or a local server",
            )
        } else {
            Some("must start with redis://, e.g. \"redis://:password@redis:6379/0\"")
        }
    }
}

impl Default for RedisUrl {
    fn default() -> Self {
        Self::new(DEFAULT_URL)
    }
}

impl fmt::Display for RedisUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.redacted())
    }
}

impl fmt::Debug for RedisUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.redacted())
    }
}

impl<'de> Deserialize<'de> for RedisUrl {
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
            ("redis://u:p@h:6379/0", "redis://u:***@h:6379/0"),
            ("redis://:p@h:6379", "redis://:***@h:6379"),
            ("redis://u:p@ss@h/1", "redis://u:***@h/1"),
            ("redis://u@h:6379", "redis://u@h:6379"),
            ("redis://h:6379/0", "redis://h:6379/0"),
            ("not a url", "not a url"),
        ];
        for (url, shown) in cases {
            assert_eq!(RedisUrl::new(url).to_string(), shown, "{url}");
        }
    }

    #[test]
    fn only_plain_redis_is_accepted() {
        assert!(RedisUrl::new("redis://h").scheme_error().is_none());
        assert!(
            RedisUrl::new("rediss://h")
                .scheme_error()
                .unwrap()
                .contains("TLS")
        );
        assert!(RedisUrl::new("http://h").scheme_error().is_some());
    }
}
