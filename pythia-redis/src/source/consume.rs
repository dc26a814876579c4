//! The consume task: it owns the connections and does everything the source
//! asks of the server, in one order.
//!
//! A session has two connections: the reader, for the blocking take
//! (`XREADGROUP … BLOCK`, `BLMOVE`), and the other for acks, renewals and
//! recovery, which a blocking command would hold up. The task takes only
//! while the instance holds fewer than `redis.prefetch` messages and the
//! runtime has not paused it; every third of `redis.claim_idle` it renews
//! what it holds and recovers what dead instances held (see `stream` and
//! `list`); a stream's recovery runs between two takes (a take waits at
//! most `redis.block`), so that the instance never holds more than the
//! prefetch.
//!
//! When the connection is lost, readiness turns false and the task
//! reconnects after a backoff ([`crate::reconnect`]). Nothing in flight is
//! forgotten: the entries stay pending for this consumer (the elements in
//! its processing list), and acks made meanwhile are sent on the next
//! connection.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use pythia_core::PartitionId;
use pythia_core::connector::{Health, SourceEvent};
use redis::aio::MultiplexedConnection;
use tokio::sync::mpsc;

use super::ack::{Command, Handle, InFlight};
use super::convert::{self, Entry};
use super::list::ListInput;
use super::stream::StreamInput;
use crate::config::RedisConfig;
use crate::connection;
use crate::error::RedisError;
use pythia_core::connector::Backoff;

/// What the source's observers read of it.
#[derive(Debug, Default)]
pub(crate) struct Stats {
    /// Entries claimed from other consumers, or elements moved back by the reaper.
    pub(crate) recovered: AtomicU64,
    /// Messages sent to the dead-letter stream over the delivery limit.
    pub(crate) dead_lettered: AtomicU64,
    /// Whether the source is connected.
    pub(crate) connected: AtomicBool,
}

/// The input, by mode.
#[derive(Debug, Clone)]
pub(crate) enum Input {
    Stream(StreamInput),
    List(ListInput),
}

/// What one take brought.
enum Taken {
    Entries(Vec<(Entry, u64)>),
    Elements(Vec<Vec<u8>>),
}

type Take = Pin<Box<dyn Future<Output = Result<Taken, RedisError>> + Send>>;

/// How a session ended.
enum Ended {
    /// Closed on request.
    Closed,
    /// The connection failed or was lost.
    Lost(RedisError),
}

/// The task's state.
pub(crate) struct Consume {
    pub(crate) config: RedisConfig,
    pub(crate) input: Input,
    pub(crate) partition: PartitionId,
    pub(crate) in_flight: Arc<InFlight>,
    pub(crate) stats: Arc<Stats>,
    pub(crate) health: Health,
    pub(crate) events: mpsc::UnboundedSender<SourceEvent>,
    pub(crate) commands: mpsc::UnboundedReceiver<Command>,
    /// The offset of the next delivery.
    pub(crate) next_offset: i64,
    /// Whether the input was reported assigned.
    pub(crate) assigned: bool,
    /// Whether the runtime asked to stop taking (backpressure, or a drain).
    pub(crate) paused: bool,
    /// Acks not yet sent (made while disconnected, or whose send failed).
    pub(crate) unsent: Vec<Handle>,
    /// Whether a session has been set up yet.
    pub(crate) started: bool,
}

impl Consume {
    /// Consumes, reconnecting as needed, until closed.
    pub(crate) async fn run(mut self) {
        let mut backoff = Backoff::new(self.config.reconnect_min, self.config.reconnect_max);
        loop {
            let error = match self.session(&mut backoff).await {
                Ended::Closed => return,
                Ended::Lost(error) => error,
            };
            self.stats.connected.store(false, Ordering::Release);
            self.health.set_broker(Err(error.to_string()));
            let wait = backoff.next_wait();
            tracing::warn!(%error, held = self.in_flight.len(), ?wait, "Redis connection lost or refused: not ready; reconnecting");
            let sleep = tokio::time::sleep(wait);
            tokio::pin!(sleep);
            loop {
                tokio::select! {
                    () = &mut sleep => break,
                    command = self.commands.recv() => match command {
                        Some(Command::Ack(handle)) => self.unsent.push(handle),
                        Some(Command::Pause) => self.paused = true,
                        Some(Command::Resume) => self.paused = false,
                        Some(Command::Close(done)) => {
                            tracing::warn!(held = self.in_flight.len(), unsent = self.unsent.len(), "closing without a connection: what is not acknowledged goes to other instances after redis.claim_idle");
                            if let Some(done) = done {
                                let _ = done.send(());
                            }
                            return;
                        }
                        None => return,
                    },
                }
            }
        }
    }

    async fn connect(&self, timeout: Duration) -> Result<MultiplexedConnection, RedisError> {
        connection::connect(&self.config.url, timeout).await
    }

    /// One connection: set up, consume until lost or closed.
    async fn session(&mut self, backoff: &mut Backoff) -> Ended {
        let timeout = self.config.command_timeout;
        let connected = async {
            let conn = self.connect(timeout).await?;
            let reader = self.connect(timeout + self.config.block).await?;
            Ok::<_, RedisError>((conn, reader))
        };
        let (mut conn, reader) = match connected.await {
            Ok(pair) => pair,
            Err(error) => return Ended::Lost(error),
        };
        let set_up = match &self.input {
            Input::Stream(stream) => stream.set_up(&mut conn).await.map(|()| 0),
            Input::List(list) => list.set_up(&mut conn, !self.started).await,
        };
        match set_up {
            Ok(0) => {}
            Ok(given) => tracing::info!(
                given,
                "put back what an earlier instance of this name left in its processing list"
            ),
            Err(error) => return Ended::Lost(error),
        }
        self.started = true;
        if let Err(error) = self.flush_unsent(&mut conn).await {
            return Ended::Lost(error);
        }
        backoff.reset();
        self.stats.connected.store(true, Ordering::Release);
        self.health.set_broker(Ok(()));
        tracing::info!(
            input = self.partition.topic(),
            prefetch = self.config.prefetch,
            url = %self.config.url,
            "consuming"
        );
        if !self.assigned {
            self.assigned = true;
            let _ = self
                .events
                .send(SourceEvent::Assigned(vec![self.partition.clone()]));
        }
        let mut ticks = tokio::time::interval(self.config.renew_every());
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut take: Option<Take> = None;
        // Whether a recovery is due: it runs between two takes.
        let mut recovery_due = false;
        loop {
            if take.is_none() && !self.paused {
                if std::mem::take(&mut recovery_due)
                    && let Err(error) = self.recover(&mut conn).await
                {
                    return Ended::Lost(error);
                }
                let room = self.room();
                if room > 0 {
                    take = Some(self.take(reader.clone(), room));
                }
            }
            tokio::select! {
                biased;
                command = self.commands.recv() => match command {
                    Some(Command::Ack(handle)) => {
                        self.unsent.push(handle);
                        let mut next = None;
                        while let Ok(command) = self.commands.try_recv() {
                            match command {
                                Command::Ack(handle) => self.unsent.push(handle),
                                other => {
                                    next = Some(other);
                                    break;
                                }
                            }
                        }
                        if let Err(error) = self.flush_unsent(&mut conn).await {
                            return Ended::Lost(error);
                        }
                        if let Some(Command::Close(done)) = next {
                            self.close(&mut conn, take.take()).await;
                            if let Some(done) = done {
                                let _ = done.send(());
                            }
                            return Ended::Closed;
                        }
                        match next {
                            Some(Command::Pause) => self.paused = true,
                            Some(Command::Resume) => self.paused = false,
                            _ => {}
                        }
                    }
                    Some(Command::Pause) => self.paused = true,
                    Some(Command::Resume) => self.paused = false,
                    Some(Command::Close(done)) => {
                        self.close(&mut conn, take.take()).await;
                        if let Some(done) = done {
                            let _ = done.send(());
                        }
                        return Ended::Closed;
                    }
                    None => {
                        self.close(&mut conn, take.take()).await;
                        return Ended::Closed;
                    }
                },
                taken = async { take.as_mut().expect("a take in progress").await }, if take.is_some() => {
                    take = None;
                    match taken {
                        Ok(taken) => self.hand_over(taken),
                        Err(error) => return Ended::Lost(error),
                    }
                }
                _ = ticks.tick() => {
                    if let Err(error) = self.renew(&mut conn).await {
                        return Ended::Lost(error);
                    }
                    recovery_due = true;
                }
            }
        }
    }

    /// How many more messages the instance may hold.
    fn room(&self) -> usize {
        (self.config.prefetch as usize).saturating_sub(self.in_flight.len())
    }

    /// Starts a take of up to `count` messages on the reader.
    fn take(&self, reader: MultiplexedConnection, count: usize) -> Take {
        let block = self.config.block;
        match self.input.clone() {
            Input::Stream(stream) => Box::pin(async move {
                let mut reader = reader;
                let cmd = stream.read(count, block.as_millis() as u64);
                let reply = connection::query(&mut reader, "XREADGROUP", &cmd).await?;
                let entries = convert::read_reply(reply)?;
                Ok(Taken::Entries(
                    entries.into_iter().map(|e| (e, 1)).collect(),
                ))
            }),
            Input::List(list) => Box::pin(async move {
                let elements = list.take(reader, count, block.as_secs_f64()).await?;
                Ok(Taken::Elements(elements))
            }),
        }
    }

    /// Numbers what was taken, records it in flight and sends it to the runtime.
    fn hand_over(&mut self, taken: Taken) {
        let mut batch = Vec::new();
        match taken {
            Taken::Entries(entries) => {
                for (entry, deliveries) in entries {
                    let offset = self.next_offset();
                    self.in_flight
                        .insert(offset, Handle::Entry(entry.id.clone()));
                    batch.push(convert::entry_message(
                        &self.partition,
                        offset,
                        entry,
                        deliveries,
                    ));
                }
            }
            Taken::Elements(elements) => {
                for element in elements {
                    let offset = self.next_offset();
                    batch.push(convert::element_message(&self.partition, offset, &element));
                    self.in_flight.insert(offset, Handle::Element(element));
                }
            }
        }
        if !batch.is_empty() {
            let _ = self.events.send(SourceEvent::Messages(batch));
        }
    }

    fn next_offset(&mut self) -> i64 {
        let offset = self.next_offset;
        self.next_offset += 1;
        offset
    }

    /// Sends the acks waiting; on failure they wait for the next connection.
    async fn flush_unsent(&mut self, conn: &mut MultiplexedConnection) -> Result<(), RedisError> {
        if self.unsent.is_empty() {
            return Ok(());
        }
        let handles = std::mem::take(&mut self.unsent);
        let result = match &self.input {
            Input::Stream(stream) => {
                let ids: Vec<String> = handles
                    .iter()
                    .filter_map(|h| match h {
                        Handle::Entry(id) => Some(id.clone()),
                        Handle::Element(_) => None,
                    })
                    .collect();
                stream.ack(conn, &ids).await
            }
            Input::List(list) => {
                let elements: Vec<Vec<u8>> = handles
                    .iter()
                    .filter_map(|h| match h {
                        Handle::Element(e) => Some(e.clone()),
                        Handle::Entry(_) => None,
                    })
                    .collect();
                list.ack(conn, &elements).await
            }
        };
        if result.is_err() {
            self.unsent = handles;
        }
        result
    }

    /// Renews what this instance holds (its entries' idle time, or its
    /// heartbeat); in list mode also runs the reaper, which moves what dead
    /// instances held back onto the queue.
    async fn renew(&mut self, conn: &mut MultiplexedConnection) -> Result<(), RedisError> {
        match &self.input {
            Input::Stream(stream) => {
                let ids: Vec<String> = (self.in_flight.handles().into_iter())
                    .filter_map(|h| match h {
                        Handle::Entry(id) => Some(id),
                        Handle::Element(_) => None,
                    })
                    .collect();
                stream.renew(conn, &ids).await?;
                let forgotten = stream.forget_stopped_consumers(conn).await?;
                if forgotten > 0 {
                    tracing::info!(
                        forgotten,
                        "removed the consumers of stopped instances (nothing pending) from the group"
                    );
                }
                Ok(())
            }
            Input::List(list) => {
                list.renew(conn).await?;
                let (moved, dead) = list.reap(conn).await?;
                if moved + dead > 0 {
                    tracing::info!(
                        moved,
                        dead,
                        "moved the processing lists of instances without heartbeat back to the queue"
                    );
                }
                self.stats.recovered.fetch_add(moved, Ordering::Relaxed);
                self.stats.dead_lettered.fetch_add(dead, Ordering::Relaxed);
                Ok(())
            }
        }
    }

    /// Stream mode: claims what dead instances held, as much as there is
    /// room for, and hands it over. Run between takes, so that the instance
    /// never holds more than `redis.prefetch`.
    async fn recover(&mut self, conn: &mut MultiplexedConnection) -> Result<(), RedisError> {
        let room = self.room();
        let Input::Stream(stream) = &mut self.input else {
            return Ok(());
        };
        if room == 0 {
            return Ok(());
        }
        let claimed = stream.recover(conn, room).await?;
        self.stats
            .dead_lettered
            .fetch_add(claimed.dead_lettered, Ordering::Relaxed);
        if claimed.entries.is_empty() {
            return Ok(());
        }
        tracing::info!(
            claimed = claimed.entries.len(),
            "claimed entries idle for redis.claim_idle (their instance stopped)"
        );
        self.stats
            .recovered
            .fetch_add(claimed.entries.len() as u64, Ordering::Relaxed);
        self.hand_over(Taken::Entries(claimed.entries));
        Ok(())
    }

    /// Stops taking (waits for the take in progress), sends the acks
    /// remaining, and gives back what is left.
    async fn close(&mut self, conn: &mut MultiplexedConnection, take: Option<Take>) {
        if let Some(take) = take {
            // What it brings is given back below with the rest.
            let _ =
                tokio::time::timeout(self.config.block + self.config.command_timeout, take).await;
        }
        while let Ok(command) = self.commands.try_recv() {
            if let Command::Ack(handle) = command {
                self.unsent.push(handle);
            }
        }
        if let Err(error) = self.flush_unsent(conn).await {
            tracing::warn!(%error, "acks not sent at close: those messages will be delivered again");
        }
        let unfinished = self.in_flight.take_all().len();
        let given = match &self.input {
            Input::Stream(stream) => stream.give_back(conn).await,
            Input::List(list) => {
                let given = list.give_back(conn).await;
                if given.is_ok()
                    && let Err(error) = list.leave(conn).await
                {
                    tracing::debug!(%error, "heartbeat not removed");
                }
                given
            }
        };
        self.stats.connected.store(false, Ordering::Release);
        match given {
            Ok(given) => tracing::info!(
                unfinished,
                given,
                "stopped consuming; what was not acknowledged goes to the other instances"
            ),
            Err(error) => tracing::warn!(
                %error,
                unfinished,
                "stopped consuming; what was not acknowledged goes to the other instances after redis.claim_idle"
            ),
        }
    }
}
