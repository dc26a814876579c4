//! Errors of the Kafka connector.

use pythia_core::{ConfigError, SourceError};
use rdkafka::types::RDKafkaErrorCode;

/// Why a Kafka client could not be set up.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum KafkaError {
    /// The configuration is invalid.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// librdkafka refused to create or subscribe a client.
    #[error("kafka client error: {0}")]
    Client(#[from] rdkafka::error::KafkaError),
    /// The embedded broker failed.
    #[error(transparent)]
    Embedded(#[from] crate::embedded::EmbeddedError),
    /// A dead-letter replay could not finish; what it sent is not committed.
    #[error("dead-letter replay failed: {0}")]
    Replay(String),
    /// A thread or I/O resource could not be created.
    #[error("cannot start consumer thread: {0}")]
    Io(String),
    /// The metrics and health endpoint could not start.
    #[error(transparent)]
    Endpoint(#[from] pythia_core::EndpointError),
    /// The final offset commit was refused, or not answered, until the
    /// shutdown's deadline.
    #[error("final offset commit failed ({}); not committed: {uncommitted}", .code.map_or_else(|| "no answer in time".to_owned(), |c| format!("{c:?}")))]
    FinalCommit {
        /// The broker's last answer, if there was one.
        code: Option<RDKafkaErrorCode>,
        /// The partitions and offsets left uncommitted.
        uncommitted: String,
    },
}

impl KafkaError {
    /// The librdkafka error code, when the error came from librdkafka.
    pub fn rdkafka_code(&self) -> Option<RDKafkaErrorCode> {
        match self {
            Self::Client(e) => e.rdkafka_error_code(),
            Self::FinalCommit { code, .. } => *code,
            _ => None,
        }
    }
}

impl KafkaError {
    /// Whether running again unchanged cannot help: librdkafka's fatal
    /// errors, failed authentication or authorization, an invalid
    /// configuration.
    pub fn is_fatal(&self) -> bool {
        match self {
            Self::Config(_) | Self::Endpoint(_) => true,
            _ => self.rdkafka_code().is_some_and(is_fatal_code),
        }
    }

    /// Whether the error may go away by itself: the brokers are down or
    /// unreachable, a request timed out, a coordinator is moving.
    pub fn is_retriable(&self) -> bool {
        self.rdkafka_code().is_some_and(is_retriable_code)
    }
}

/// librdkafka's codes after which the same client, or a new one with the
/// same settings, cannot succeed.
pub(crate) fn is_fatal_code(code: RDKafkaErrorCode) -> bool {
    use RDKafkaErrorCode::*;
    matches!(
        code,
        Fatal
            | Authentication
            | SaslAuthenticationFailed
            | TopicAuthorizationFailed
            | GroupAuthorizationFailed
            | ClusterAuthorizationFailed
            | TransactionalIdAuthorizationFailed
            | UnsupportedSASLMechanism
            | IllegalSASLState
            | InvalidConfig
            | UnsupportedVersion
            | SSL
            | InvalidArgument
    )
}

/// librdkafka's codes of conditions that pass: an outage, a timeout, a
/// coordinator or leader moving.
pub(crate) fn is_retriable_code(code: RDKafkaErrorCode) -> bool {
    use RDKafkaErrorCode::*;
    matches!(
        code,
        AllBrokersDown
            | BrokerTransportFailure
            | Resolve
            | MessageTimedOut
            | OperationTimedOut
            | RequestTimedOut
            | TimedOutQueue
            | NetworkException
            | BrokerNotAvailable
            | LeaderNotAvailable
            | NotLeaderForPartition
            | CoordinatorLoadInProgress
            | CoordinatorNotAvailable
            | NotCoordinator
            | RebalanceInProgress
            | NotEnoughReplicas
            | NotEnoughReplicasAfterAppend
            | KafkaStorageError
            | QueueFull
            | WaitingForCoordinator
    )
}

impl From<KafkaError> for pythia_core::Error {
    fn from(error: KafkaError) -> Self {
        match error {
            KafkaError::Config(e) => Self::Config(e),
            KafkaError::Endpoint(e) => Self::Endpoint(e),
            other => Self::Source(other.into()),
        }
    }
}

impl From<KafkaError> for SourceError {
    fn from(error: KafkaError) -> Self {
        if error.is_fatal() {
            SourceError::fatal(error)
        } else if error.is_retriable() {
            SourceError::retriable(error)
        } else {
            SourceError::new(error)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn client(code: RDKafkaErrorCode) -> KafkaError {
        KafkaError::Client(rdkafka::error::KafkaError::Global(code))
    }

    #[test]
    fn the_code_is_kept_and_classed() {
        let down = client(RDKafkaErrorCode::AllBrokersDown);
        assert_eq!(down.rdkafka_code(), Some(RDKafkaErrorCode::AllBrokersDown));
        let core = pythia_core::Error::from(down);
        assert!(core.is_retriable() && !core.is_fatal(), "{core:?}");
        let inner = core
            .source_error()
            .and_then(|e| e.downcast_ref::<KafkaError>());
        assert_eq!(
            inner.and_then(KafkaError::rdkafka_code),
            Some(RDKafkaErrorCode::AllBrokersDown)
        );

        let auth = pythia_core::Error::from(client(RDKafkaErrorCode::SaslAuthenticationFailed));
        assert!(auth.is_fatal() && !auth.is_retriable());

        let other = pythia_core::Error::from(KafkaError::Io("no thread".into()));
        assert!(!other.is_fatal() && !other.is_retriable());
        assert_eq!(
            other.to_string(),
            "source failed: cannot start consumer thread: no thread"
        );
    }

    #[test]
    fn codes_are_classed_as_librdkafka_documents_them() {
        use RDKafkaErrorCode::*;
        let table = [
            (Fatal, true, false),
            (TopicAuthorizationFailed, true, false),
            (InvalidConfig, true, false),
            (AllBrokersDown, false, true),
            (BrokerTransportFailure, false, true),
            (RequestTimedOut, false, true),
            (NotCoordinator, false, true),
            (UnknownTopicOrPartition, false, false),
            (MessageSizeTooLarge, false, false),
        ];
        for (code, fatal, retriable) in table {
            assert_eq!(
                (is_fatal_code(code), is_retriable_code(code)),
                (fatal, retriable),
                "{code:?}"
            );
            assert_eq!(client(code).is_fatal(), fatal, "{code:?}");
            assert_eq!(client(code).is_retriable(), retriable, "{code:?}");
        }
    }
}
