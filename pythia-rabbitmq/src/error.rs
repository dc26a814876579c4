//! [`RabbitError`]: what went wrong talking to RabbitMQ.

/// A failure of the RabbitMQ connector. The broker URL in it is redacted.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum RabbitError {
    /// The broker did not accept the connection.
    #[error(
        "cannot connect to RabbitMQ at {url}: {reason}; check rabbitmq.url (PYTHIA_RABBITMQ__URL) and that the broker runs"
    )]
    Connect {
        /// The URL, password redacted.
        url: String,
        /// The client's reason.
        reason: String,
    },
    /// A queue could not be declared, or is missing with `rabbitmq.queues = "expect"`.
    #[error("queue `{queue}`: {reason}")]
    Queue {
        /// The queue.
        queue: String,
        /// The broker's reason.
        reason: String,
    },
    /// Another AMQP operation failed.
    #[error("{operation} failed: {reason}")]
    Amqp {
        /// What was being done.
        operation: &'static str,
        /// The client's or broker's reason.
        reason: String,
    },
}

impl RabbitError {
    /// An AMQP failure of `operation`.
    pub(crate) fn amqp(operation: &'static str, error: impl std::fmt::Display) -> Self {
        Self::Amqp {
            operation,
            reason: error.to_string(),
        }
    }
}

impl From<RabbitError> for pythia_core::Error {
    fn from(error: RabbitError) -> Self {
        pythia_core::Error::Source(pythia_core::SourceError::retriable(error))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_say_what_to_check_and_stay_reachable() {
        let error = RabbitError::Connect {
            url: "amqp://u:***@h".into(),
            reason: "refused".into(),
        };
        assert!(error.to_string().contains("PYTHIA_RABBITMQ__URL"));
        let core: pythia_core::Error = error.into();
        let source = core.source_error().expect("a source error");
        assert!(source.downcast_ref::<RabbitError>().is_some());
        assert!(core.is_retriable());
    }
}
