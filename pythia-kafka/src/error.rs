//! Errors of the Kafka connector.

use pythia_core::ConfigError;

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
    Endpoint(#[from] pythia_core::endpoint::EndpointError),
}

impl KafkaError {
    /// The librdkafka error code, when the error came from librdkafka.
    pub fn rdkafka_code(&self) -> Option<rdkafka::types::RDKafkaErrorCode> {
        match self {
            Self::Client(e) => e.rdkafka_error_code(),
            _ => None,
        }
    }
}

impl From<KafkaError> for pythia_core::Error {
    fn from(error: KafkaError) -> Self {
        match error {
            KafkaError::Config(e) => Self::Config(e),
            KafkaError::Endpoint(e) => Self::Endpoint(e),
            other => Self::Source(other.to_string()),
        }
    }
}
