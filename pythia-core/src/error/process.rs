//! A failed `process` ([`ProcessError`], [`ErrorKind`]), and why a message
//! was given up on ([`FailureKind`]).

use std::fmt;

/// Whether retrying a failed message could help.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum ErrorKind {
    /// May succeed on another attempt (a timeout, an unavailable dependency).
    Transient,
    /// Will fail every time (invalid data, a violated invariant).
    Permanent,
}

/// The error a worker's `process` returns.
///
/// Any `std::error::Error` converts into it with `?` (as a transient error);
/// [`ProcessError::permanent`] marks an error that retrying cannot fix.
///
/// ```
/// use pythia_core::ProcessError;
/// fn parse(s: &str) -> Result<u64, ProcessError> {
///     let n: u64 = s.parse()?; // ParseIntError -> ProcessError
///     if n == 0 {
///         return Err(ProcessError::permanent("amount must be positive"));
///     }
///     Ok(n)
/// }
/// assert!(parse("x").is_err());
/// assert!(parse("0").unwrap_err().is_permanent());
/// ```
pub struct ProcessError {
    kind: ErrorKind,
    inner: Box<dyn std::error::Error + Send + Sync + 'static>,
}

impl ProcessError {
    /// A transient error with this message.
    pub fn msg(message: impl fmt::Display) -> Self {
        Self {
            kind: ErrorKind::Transient,
            inner: message.to_string().into(),
        }
    }

    /// A permanent error with this message or cause.
    pub fn permanent(cause: impl Into<Box<dyn std::error::Error + Send + Sync + 'static>>) -> Self {
        Self {
            kind: ErrorKind::Permanent,
            inner: cause.into(),
        }
    }

    /// Whether the error is transient or permanent.
    pub fn kind(&self) -> ErrorKind {
        self.kind
    }

    /// Whether retrying cannot help.
    pub fn is_permanent(&self) -> bool {
        self.kind == ErrorKind::Permanent
    }

    /// The underlying error.
    pub fn into_inner(self) -> Box<dyn std::error::Error + Send + Sync + 'static> {
        self.inner
    }
}

/// Any error converts with `?` into a transient `ProcessError`: a
/// `std::error::Error`, an `anyhow::Error`, a `String` or a `&str`.
///
/// ```
/// use pythia_core::ProcessError;
/// fn lookup(id: u64) -> anyhow::Result<u64> {
///     anyhow::ensure!(id != 0, "no such order");
///     Ok(id * 10)
/// }
/// fn process(id: u64) -> Result<u64, ProcessError> {
///     Ok(lookup(id)?)
/// }
/// assert_eq!(process(0).unwrap_err().to_string(), "no such order");
/// assert!(!process(0).unwrap_err().is_permanent());
/// ```
impl<E> From<E> for ProcessError
where
    E: Into<Box<dyn std::error::Error + Send + Sync + 'static>>,
{
    fn from(error: E) -> Self {
        Self {
            kind: ErrorKind::Transient,
            inner: error.into(),
        }
    }
}

impl fmt::Display for ProcessError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.inner, f)?;
        let mut source = self.inner.source();
        while let Some(cause) = source {
            write!(f, ": {cause}")?;
            source = cause.source();
        }
        Ok(())
    }
}

impl fmt::Debug for ProcessError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ProcessError")
            .field("kind", &self.kind)
            .field("error", &self.inner)
            .finish()
    }
}

/// Why a message was given up on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum FailureKind {
    /// The payload did not decode into the worker's input type.
    Decode,
    /// The payload is larger than `worker.max_message_bytes`.
    TooLarge,
    /// `process` failed with a transient error on every attempt.
    Transient,
    /// `process` failed with a permanent error.
    Permanent,
    /// `process` panicked.
    Panic,
    /// An output of `process` could not be encoded.
    Encode,
    /// The broker refused an output of `process` as a record (too large for
    /// the topic, invalid): the message was processed but cannot be
    /// completed. Its dead letter names it; it is still in its topic.
    OutputRefused,
}

impl FailureKind {
    /// The value of the `pythia.dlq.kind` header.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Decode => "decode",
            Self::TooLarge => "too_large",
            Self::Transient => "transient",
            Self::Permanent => "permanent",
            Self::Panic => "panic",
            Self::Encode => "encode",
            Self::OutputRefused => "output_refused",
        }
    }
}

impl fmt::Display for FailureKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}
