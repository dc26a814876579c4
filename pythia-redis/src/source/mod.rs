//! [`RedisSource`]: a Redis stream (read in a consumer group) or list (a
//! reliable queue) as a Pythia source.
//!
//! The input is one partition (its key, index 0) that the runtime processes
//! without ordering (`worker.ordering = "none"` by default), so the up to
//! `redis.prefetch` messages an instance holds are processed at the same
//! time, and the instances share the input. Each message is acknowledged
//! (`XACK`, or `LREM` from the processing list) once it and its outputs
//! are done; what an instance held when it died goes to the others after
//! `redis.claim_idle`.
//!
//! The files, one per step: `consume` (the task that owns the connections),
//! `stream` and `list` (each mode's commands), `ack` (offsets, in-flight
//! deliveries and acks), `convert` (replies as entries, entries and
//! elements as messages), `deliveries` (the delivery limit).

mod ack;
mod consume;
mod convert;
mod deliveries;
mod list;
mod stream;

pub(crate) use ack::InFlight;
pub use ack::RedisAcker;
pub(crate) use consume::Stats;
pub(crate) use list::processing_key;

use std::sync::Arc;
use std::time::Duration;

use pythia_core::PartitionId;
use pythia_core::connector::{ConsumeTask, Health, Source, SourceEvent, TaskCommand};
use tokio::sync::{mpsc, oneshot};

use crate::config::{Config, Mode};
use ack::Command;
use consume::{Consume, Input};

/// A Redis stream or list as a [`Source`]: messages in, acks back.
///
/// ```no_run
/// # async fn demo() -> Result<(), pythia_core::Error> {
/// use pythia_core::connector::{Health, Source, SourceEvent};
/// let config = pythia_redis::Config::from_loader(
///     pythia_core::ConfigLoader::new().no_file().set("redis.input", "jobs"),
/// )?;
/// let mut source = pythia_redis::RedisSource::new(&config, Health::new());
/// if let Some(SourceEvent::Assigned(input)) = source.next().await {
///     println!("consuming {input:?}");
/// }
/// source.close(std::time::Duration::from_secs(5)).await?;
/// # Ok(()) }
/// ```
pub struct RedisSource {
    input: PartitionId,
    consumer: String,
    in_flight: Arc<InFlight>,
    stats: Arc<Stats>,
    /// The task that owns the connection, started by the first `next`.
    task: ConsumeTask<Consume, Command>,
}

impl RedisSource {
    /// A source consuming `config.redis.input` as consumer
    /// [`Config::consumer`], reporting its connection state to `health`
    /// (readiness). It connects on the first [`Source::next`], and again
    /// whenever the connection is lost.
    pub fn new(config: &Config, health: Health) -> Self {
        let redis = &config.redis;
        let name = redis.input_name().to_owned();
        let consumer = config.consumer();
        let input = PartitionId::new(name.clone(), 0);
        let claim_idle_ms = redis.claim_idle.as_millis() as u64;
        let dead_letters = config.dead_letter_stream();
        let worker = config.name().to_owned();
        let input_mode = match redis.mode {
            Mode::List => Input::List(list::ListInput {
                queue: name,
                consumer: consumer.clone(),
                claim_idle_ms,
                max_deliveries: redis.max_deliveries,
                dead_letters,
                worker,
            }),
            Mode::Stream => Input::Stream(stream::StreamInput {
                stream: name,
                group: config.group().to_owned(),
                consumer: consumer.clone(),
                start: redis.group_start.id(),
                claim_idle_ms,
                max_deliveries: redis.max_deliveries,
                dead_letters,
                worker,
                cursor: "0-0".to_owned(),
            }),
        };
        let (events_tx, events) = mpsc::unbounded_channel();
        let (commands, commands_rx) = mpsc::unbounded_channel();
        let in_flight = Arc::new(InFlight::default());
        let stats = Arc::new(Stats::default());
        let start = Consume {
            config: redis.clone(),
            input: input_mode,
            partition: input.clone(),
            in_flight: in_flight.clone(),
            stats: stats.clone(),
            health,
            events: events_tx,
            commands: commands_rx,
            next_offset: 0,
            assigned: false,
            paused: false,
            unsent: Vec::new(),
            started: false,
        };
        Self {
            input,
            consumer,
            in_flight,
            stats,
            task: ConsumeTask::new(
                start,
                |consume| tokio::spawn(consume.run()),
                events,
                commands,
            ),
        }
    }

    /// The input, as the partition the runtime sees.
    pub fn input(&self) -> &PartitionId {
        &self.input
    }

    /// This instance's consumer name.
    pub fn consumer(&self) -> &str {
        &self.consumer
    }

    /// Messages handed out and not yet acknowledged.
    pub fn unacked(&self) -> usize {
        self.in_flight.len()
    }

    pub(crate) fn stats(&self) -> (Arc<Stats>, Arc<InFlight>) {
        (self.stats.clone(), self.in_flight.clone())
    }
}

impl TaskCommand for Command {
    fn pause() -> Self {
        Self::Pause
    }

    fn resume() -> Self {
        Self::Resume
    }

    fn close(done: oneshot::Sender<()>) -> Self {
        Self::Close(Some(done))
    }
}

impl Source for RedisSource {
    type Acker = RedisAcker;

    fn acker(&self) -> RedisAcker {
        RedisAcker::new(self.in_flight.clone(), self.task.commands().clone())
    }

    /// Messages wait in the channel while paused; the prefetch bounds them.
    async fn next(&mut self) -> Option<SourceEvent> {
        self.task.next().await
    }

    /// Stops taking new messages until [`Source::resume`]; what is held is
    /// still renewed. The runtime pauses when its buffer is full, and at the
    /// start of a shutdown.
    fn pause(&mut self, _partitions: &[PartitionId]) {
        self.task.pause();
    }

    fn resume(&mut self, _partitions: &[PartitionId]) {
        self.task.resume();
    }

    async fn close(self, timeout: Duration) -> Result<(), pythia_core::Error> {
        if !self.task.close(timeout).await {
            tracing::warn!(
                ?timeout,
                "the close did not finish in time; what was not acknowledged goes to other instances after redis.claim_idle"
            );
        }
        Ok(())
    }
}

impl std::fmt::Debug for RedisSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisSource")
            .field("input", &self.input)
            .field("consumer", &self.consumer)
            .field("unacked", &self.unacked())
            .field("paused", &self.task.is_paused())
            .finish_non_exhaustive()
    }
}
