//! [`ConfigError`]: a bad configuration, naming the key.

/// A configuration problem, naming the key and what is allowed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// A key that no setting has.
    #[error("unknown configuration key `{key}`: {allowed}")]
    UnknownKey {
        /// The full dotted key.
        key: String,
        /// The keys allowed at that level.
        allowed: String,
    },
    /// A key whose value has the wrong type or is out of range.
    #[error("invalid value for `{key}`: {reason}")]
    InvalidValue {
        /// The full dotted key.
        key: String,
        /// What is wrong and what is allowed.
        reason: String,
    },
    /// A required key that is not set.
    #[error("missing configuration key `{key}`: {hint}")]
    Missing {
        /// The full dotted key.
        key: String,
        /// How to set it.
        hint: String,
    },
    /// The config file could not be read or parsed.
    #[error("cannot read config file `{path}`: {reason}")]
    File {
        /// The file.
        path: String,
        /// Why.
        reason: String,
    },
}

impl ConfigError {
    /// The key the error is about (the file path for a file error).
    pub fn key(&self) -> &str {
        match self {
            Self::UnknownKey { key, .. }
            | Self::InvalidValue { key, .. }
            | Self::Missing { key, .. } => key,
            Self::File { path, .. } => path,
        }
    }

    /// An invalid-value error.
    pub fn invalid(key: impl Into<String>, reason: impl Into<String>) -> Self {
        Self::InvalidValue {
            key: key.into(),
            reason: reason.into(),
        }
    }

    /// A missing-key error.
    pub fn missing(key: impl Into<String>, hint: impl Into<String>) -> Self {
        Self::Missing {
            key: key.into(),
            hint: hint.into(),
        }
    }
}
