//! [`SourceError`]: why a source failed, with the connector's own error.

use std::fmt;

/// Why a source failed: the connector's own error, kept whole (with its
/// code), and whether it is fatal or retriable.
///
/// ```
/// use pythia_core::SourceError;
/// #[derive(Debug, thiserror::Error)]
/// #[error("broker said no (code {0})")]
/// struct BrokerError(i32);
///
/// let error = SourceError::retriable(BrokerError(7));
/// assert!(error.is_retriable() && !error.is_fatal());
/// assert_eq!(error.downcast_ref::<BrokerError>().map(|e| e.0), Some(7));
/// assert_eq!(error.to_string(), "broker said no (code 7)");
/// ```
pub struct SourceError {
    error: Box<dyn std::error::Error + Send + Sync + 'static>,
    fatal: bool,
    retriable: bool,
}

impl SourceError {
    /// An error neither known to be fatal nor retriable.
    pub fn new(error: impl Into<Box<dyn std::error::Error + Send + Sync + 'static>>) -> Self {
        Self {
            error: error.into(),
            fatal: false,
            retriable: false,
        }
    }

    /// An error that running again unchanged cannot fix.
    pub fn fatal(error: impl Into<Box<dyn std::error::Error + Send + Sync + 'static>>) -> Self {
        Self {
            fatal: true,
            ..Self::new(error)
        }
    }

    /// An error that may go away by itself (an outage, a timeout).
    pub fn retriable(error: impl Into<Box<dyn std::error::Error + Send + Sync + 'static>>) -> Self {
        Self {
            retriable: true,
            ..Self::new(error)
        }
    }

    /// Whether running again unchanged cannot help.
    pub fn is_fatal(&self) -> bool {
        self.fatal
    }

    /// Whether running again may succeed.
    pub fn is_retriable(&self) -> bool {
        self.retriable
    }

    /// The connector's error as its own type, e.g. `pythia_kafka::KafkaError`
    /// with its librdkafka code.
    pub fn downcast_ref<T: std::error::Error + 'static>(&self) -> Option<&T> {
        self.error.downcast_ref::<T>()
    }

    /// The connector's error.
    pub fn get_ref(&self) -> &(dyn std::error::Error + Send + Sync + 'static) {
        &*self.error
    }
}

impl fmt::Display for SourceError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.error, f)
    }
}

impl fmt::Debug for SourceError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SourceError")
            .field("error", &self.error)
            .field("fatal", &self.fatal)
            .field("retriable", &self.retriable)
            .finish()
    }
}

impl std::error::Error for SourceError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.error.source()
    }
}
