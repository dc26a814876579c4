//! [`SinkError`]: why an output was not delivered.

/// Why an output was not delivered.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SinkError {
    /// The output names no topic and the sink has no default topic.
    #[error(
        "output has no topic: set the worker's output topic (kafka.output_topic) or call Output::to_topic"
    )]
    NoTopic,
    /// The output names a sink the worker does not declare.
    #[error(
        "output names the sink `{sink}`, which has no topic: declare it with #[pythia(sinks({sink} = \"topic\"))] or set kafka.sinks.{sink}"
    )]
    UnknownSink {
        /// The sink's name.
        sink: String,
    },
    /// The broker refused the record or did not confirm it in time.
    #[error("delivery to `{topic}` failed: {reason}")]
    Delivery {
        /// The target topic.
        topic: String,
        /// The broker's or client's reason.
        reason: String,
    },
    /// The sink dropped the record's [`Receipt`](crate::connector::Receipt) without settling it.
    #[error("the sink dropped an output without reporting its delivery")]
    Dropped,
    /// The client or the broker refused the record itself (too large, or
    /// invalid): sent again unchanged it would fail the same way. A dead
    /// letter refused so is sent again reduced (see
    /// [`dead_letter`](crate::dead_letter)).
    #[error(
        "`{topic}` refused the record: {reason}; raise the limit (the producer's message.max.bytes, the topic's max.message.bytes) or send smaller records"
    )]
    Refused {
        /// The target topic.
        topic: String,
        /// The broker's or client's reason, with its error code.
        reason: String,
    },
}

impl SinkError {
    /// Whether the record itself was refused ([`SinkError::Refused`]), as
    /// opposed to a failure of the way to the broker (an outage, a timeout,
    /// a shutdown) after which the same record may well go through.
    ///
    /// ```
    /// use pythia_core::SinkError;
    /// let refused = SinkError::Refused {
    ///     topic: "orders.dlq".into(),
    ///     reason: "Broker: Message size too large".into(),
    /// };
    /// assert!(refused.is_refused());
    /// assert!(!SinkError::Dropped.is_refused());
    /// ```
    pub fn is_refused(&self) -> bool {
        matches!(self, Self::Refused { .. })
    }
}
