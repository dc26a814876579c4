//! A worker's declaration: its name, input topics, group, outputs and limits.
//!
//! `#[derive(Worker)]` writes the [`WorkerSpec`] from the struct's
//! `#[pythia(...)]` attribute. It holds defaults only: a connector starts the
//! worker's configuration from it, and the configuration file, the environment
//! and values set in code override each key.

/// What a worker consumes and produces, and its concurrency limits.
///
/// Built in `const` context, so a hand-written [`Worker`](crate::Worker) impl can
/// declare it too:
///
/// ```
/// use pythia_core::WorkerSpec;
///
/// const SPEC: WorkerSpec = WorkerSpec::new("fan-out")
///     .with_topics(&["orders"])
///     .with_sinks(&[("billing", "billing.invoices"), ("inventory", "inventory.reservations")])
///     .with_max_in_flight(256);
/// assert_eq!(SPEC.group_or_name(), "fan-out"); // the group defaults to the name
/// assert_eq!(SPEC.sink_topic("billing"), Some("billing.invoices"));
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct WorkerSpec {
    /// The name, in logs and metrics; empty when the configuration must give it.
    pub name: &'static str,
    /// The input topics.
    pub topics: &'static [&'static str],
    /// The consumer group; `None` for the name.
    pub group: Option<&'static str>,
    /// The topic of outputs that name no sink.
    pub output: Option<&'static str>,
    /// Named sinks, as `(name, topic)` pairs.
    pub sinks: &'static [(&'static str, &'static str)],
    /// The sink of outputs that name none.
    pub default_sink: Option<&'static str>,
    /// The default of `worker.max_in_flight`.
    pub max_in_flight: Option<usize>,
    /// The default of `worker.partition_buffer`.
    pub partition_buffer: Option<usize>,
    /// The default of `worker.ordering`.
    pub ordering: Option<MessageOrder>,
}

impl WorkerSpec {
    /// A spec with no name and no topics: everything comes from configuration.
    pub const UNNAMED: Self = Self::new("");

    /// A spec for the worker called `name` (in logs, metrics and, by default,
    /// as its consumer group).
    pub const fn new(name: &'static str) -> Self {
        Self {
            name,
            topics: &[],
            group: None,
            output: None,
            sinks: &[],
            default_sink: None,
            max_in_flight: None,
            partition_buffer: None,
            ordering: None,
        }
    }

    /// Sets the input topics.
    pub const fn with_topics(mut self, topics: &'static [&'static str]) -> Self {
        self.topics = topics;
        self
    }

    /// Sets the consumer group.
    pub const fn with_group(mut self, group: &'static str) -> Self {
        self.group = Some(group);
        self
    }

    /// Sets the topic of outputs that name no sink.
    pub const fn with_output(mut self, topic: &'static str) -> Self {
        self.output = Some(topic);
        self
    }

    /// Sets the named sinks, as `(name, topic)` pairs.
    pub const fn with_sinks(mut self, sinks: &'static [(&'static str, &'static str)]) -> Self {
        self.sinks = sinks;
        self
    }

    /// Sets the sink of outputs that name none.
    pub const fn with_default_sink(mut self, sink: &'static str) -> Self {
        self.default_sink = Some(sink);
        self
    }

    /// Sets the default of `worker.max_in_flight`.
    pub const fn with_max_in_flight(mut self, n: usize) -> Self {
        self.max_in_flight = Some(n);
        self
    }

    /// Sets the default of `worker.partition_buffer`.
    pub const fn with_partition_buffer(mut self, n: usize) -> Self {
        self.partition_buffer = Some(n);
        self
    }

    /// Sets the default of `worker.ordering`.
    pub const fn with_ordering(mut self, ordering: MessageOrder) -> Self {
        self.ordering = Some(ordering);
        self
    }

    /// The consumer group: the declared one, else the name.
    pub const fn group_or_name(&self) -> &'static str {
        match self.group {
            Some(group) => group,
            None => self.name,
        }
    }

    /// The declared topic of the sink called `name`.
    pub fn sink_topic(&self, name: &str) -> Option<&'static str> {
        self.sinks
            .iter()
            .find(|(sink, _)| *sink == name)
            .map(|(_, topic)| *topic)
    }
}

impl Default for WorkerSpec {
    fn default() -> Self {
        Self::UNNAMED
    }
}

/// Which messages of one partition may be processed at the same time
/// (`worker.ordering`, the derive's `ordering`).
///
/// ```
/// use pythia_core::MessageOrder;
/// assert_eq!(MessageOrder::default(), MessageOrder::Partition);
/// assert_eq!(MessageOrder::Key.as_str(), "key");
/// ```
#[derive(Debug, Clone, Copy, Default, serde::Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
#[non_exhaustive]
pub enum MessageOrder {
    /// One at a time, in offset order (the default).
    #[default]
    Partition,
    /// Messages with different keys in parallel; each key in offset order.
    Key,
    /// All in parallel, for work with no order.
    None,
}

impl MessageOrder {
    /// The value as written in configuration.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Partition => "partition",
            Self::Key => "key",
            Self::None => "none",
        }
    }
}
