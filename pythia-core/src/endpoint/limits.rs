//! How much the endpoint serves at once, and how long it waits for a client.

use std::time::Duration;

/// Bounds on the endpoint's connections, so that slow, idle or too many
/// clients cannot starve the probes.
///
/// - At `max_connections` open connections the server stops accepting; the
///   operating system queues newcomers until a connection ends.
/// - A client gets `header_timeout` to send a request head, also between
///   requests on a kept-alive connection, so idle and trickling clients give
///   their place up within that time.
/// - A request gets `request_timeout` to be answered (408 after it).
/// - A connection is closed after its current request once it is
///   `connection_lifetime` old, so a client that stops reading cannot hold
///   its place for ever.
/// - On shutdown, requests in progress get `shutdown_grace` to finish.
///
/// ```
/// use std::time::Duration;
/// use pythia_core::connector::Limits;
/// let mut limits = Limits::default();
/// limits.max_connections = 64;
/// limits.header_timeout = Duration::from_secs(2);
/// assert_eq!(limits.max_connections, 64);
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Limits {
    /// Open connections at most.
    pub max_connections: usize,
    /// Longest wait for a request head.
    pub header_timeout: Duration,
    /// Longest time to answer a request.
    pub request_timeout: Duration,
    /// Age after which a connection is closed once its request is answered.
    pub connection_lifetime: Duration,
    /// Longest wait for requests in progress on shutdown.
    pub shutdown_grace: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_connections: 256,
            header_timeout: Duration::from_secs(5),
            request_timeout: Duration::from_secs(10),
            connection_lifetime: Duration::from_secs(300),
            shutdown_grace: Duration::from_secs(5),
        }
    }
}
