//! What the queue connectors (a RabbitMQ queue, a Redis stream or list, a
//! NATS JetStream consumer) share around their own source and sink.
//!
//! A queue connector has one input, seen by the runtime as one partition,
//! and a task that owns the broker connection. Around those, each does the
//! same things, which live here once:
//!
//! - [`ConsumeTask`]: the source's side of its task — started on the first
//!   `next`, paused, resumed and closed by command;
//! - [`Observer`]: the `/metrics` and `/health/*` endpoint and a [`Monitor`]
//!   that reads the broker's series every `metrics.lag_interval`;
//! - [`QueueBuilder`]: the configuration, layers, event listeners and sink
//!   of a run before it is set up;
//! - [`QueueInstance`]: the set-up run, which starts the observer and the
//!   listeners, runs the [`Runtime`](crate::connector::Runtime) and closes
//!   the [`Publisher`] it made.
//!
//! The connector keeps what is its own: the task, the sink, the monitor's
//! reads and the public types that name them.

mod builder;
mod instance;
mod observe;
mod task;

pub use builder::{QueueBuilder, SinkSetup};
pub use instance::{Publisher, QueueInstance};
pub use observe::{Monitor, Observer, Observing};
pub use task::{ConsumeTask, TaskCommand};
