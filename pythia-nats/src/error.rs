//! [`NatsError`]: what went wrong talking to NATS.

/// A failure of the NATS connector. The server URL in it is redacted.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum NatsError {
    /// The server did not accept the connection.
    #[error(
        "cannot connect to NATS at {url}: {reason}; check nats.url (PYTHIA_NATS__URL) and that the server runs with JetStream (-js)"
    )]
    Connect {
        /// The URL, password redacted.
        url: String,
        /// The client's reason.
        reason: String,
    },
    /// A stream or consumer could not be found or created.
    #[error("{what} `{name}`: {reason}")]
    Setup {
        /// `stream` or `consumer`.
        what: &'static str,
        /// Its name.
        name: String,
        /// The server's reason and what to do.
        reason: String,
    },
    /// Another JetStream operation failed.
    #[error("{operation} failed: {reason}")]
    JetStream {
        /// What was being done.
        operation: &'static str,
        /// The client's or server's reason.
        reason: String,
    },
}

impl NatsError {
    /// A JetStream failure of `operation`.
    pub(crate) fn jetstream(operation: &'static str, error: impl std::fmt::Display) -> Self {
        Self::JetStream {
            operation,
            reason: error.to_string(),
        }
    }
}

impl From<NatsError> for pythia_core::Error {
    fn from(error: NatsError) -> Self {
        pythia_core::Error::Source(pythia_core::SourceError::retriable(error))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_say_what_to_check_and_stay_reachable() {
        let error = NatsError::Connect {
            url: "nats://u:***@h".into(),
            reason: "refused".into(),
        };
        assert!(error.to_string().contains("PYTHIA_NATS__URL"));
        let core: pythia_core::Error = error.into();
        let source = core.source_error().expect("a source error");
        assert!(source.downcast_ref::<NatsError>().is_some());
        assert!(core.is_retriable());
    }
}
