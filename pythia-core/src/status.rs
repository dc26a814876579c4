//! Where a run is: its phase and its assigned partitions, as published to
//! health checks and to whoever watches a run.

use crate::message::PartitionId;

/// Where a run is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum Phase {
    /// Connecting and joining; not in the group yet.
    #[default]
    Starting,
    /// In the group and taking messages from whatever it is assigned, which
    /// may be nothing (more members than partitions).
    Running,
    /// Shutting down: finishing in-flight messages, then committing.
    Draining,
    /// Done.
    Stopped,
}

/// A snapshot of a run, published on every change (see [`Runtime::status`](crate::connector::Runtime::status)).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Status {
    /// The run's phase.
    pub phase: Phase,
    /// The partitions currently assigned to this member, sorted.
    pub assigned: Vec<PartitionId>,
}
