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

pub use ack::RedisAcker;
pub(crate) use consume::Stats;
pub(crate) use list::processing_key;

use std::sync::Arc;
use std::time::Duration;

use pythia_core::PartitionId;
use pythia_core::connector::{Health, Source, SourceEvent};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

use crate::config::{Config, Mode};
use ack::{Command, InFlight};
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
    events: mpsc::UnboundedReceiver<SourceEvent>,
    commands: mpsc::UnboundedSender<Command>,
    in_flight: Arc<InFlight>,
    stats: Arc<Stats>,
    paused: bool,
    /// The consume task, until it is started by the first `next`.
    start: Option<Consume>,
    task: Option<JoinHandle<()>>,
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
            events,
            commands,
            in_flight,
            stats,
            paused: false,
            start: Some(start),
            task: None,
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

impl Source for RedisSource {
    type Acker = RedisAcker;

    fn acker(&self) -> RedisAcker {
        RedisAcker::new(self.in_flight.clone(), self.commands.clone())
    }

    async fn next(&mut self) -> Option<SourceEvent> {
        if let Some(consume) = self.start.take() {
            self.task = Some(tokio::spawn(consume.run()));
        }
        if self.paused {
            // Messages wait in the channel; the prefetch bounds them.
            std::future::pending::<()>().await;
        }
        self.events.recv().await
    }

    /// Stops taking new messages until [`Source::resume`]; what is held is
    /// still renewed. The runtime pauses when its buffer is full, and at the
    /// start of a shutdown.
    fn pause(&mut self, _partitions: &[PartitionId]) {
        if !self.paused {
            self.paused = true;
            let _ = self.commands.send(Command::Pause);
        }
    }

    fn resume(&mut self, _partitions: &[PartitionId]) {
        if self.paused {
            self.paused = false;
            let _ = self.commands.send(Command::Resume);
        }
    }

    async fn close(mut self, timeout: Duration) -> Result<(), pythia_core::Error> {
        let Some(task) = self.task.take() else {
            return Ok(());
        };
        let (done, closed) = oneshot::channel();
        if self.commands.send(Command::Close(Some(done))).is_ok()
            && tokio::time::timeout(timeout, closed).await.is_err()
        {
            tracing::warn!(
                ?timeout,
                "the close did not finish in time; what was not acknowledged goes to other instances after redis.claim_idle"
            );
        }
        task.abort();
        Ok(())
    }
}

impl std::fmt::Debug for RedisSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisSource")
            .field("input", &self.input)
            .field("consumer", &self.consumer)
            .field("unacked", &self.unacked())
            .field("paused", &self.paused)
            .finish_non_exhaustive()
    }
}
