//! The consume task: the connection that deliveries come through, kept up
//! across losses, and the acks going back on it.
//!
//! One task owns the connection, so everything on it happens in one order:
//! acks are sent as the lanes report them, and a close sends every ack
//! reported before it, cancels the consumer (`basic.cancel`), then closes
//! the channel, which puts the deliveries not acknowledged back in the queue.
//!
//! When the connection is lost, readiness turns false, the deliveries in
//! flight are forgotten (the broker requeued them; their acks would have
//! nowhere to go), and the task reconnects after a backoff
//! ([`crate::reconnect`]), declares again and consumes again.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use futures::{FutureExt, StreamExt};
use lapin::options::{
    BasicAckOptions, BasicCancelOptions, BasicConsumeOptions, BasicNackOptions, BasicQosOptions,
};
use lapin::types::FieldTable;
use lapin::{Channel, Connection};
use pythia_core::PartitionId;
use pythia_core::connector::{Health, SourceEvent};
use tokio::sync::mpsc;

use super::ack::{Command, InFlight};
use super::convert;
use crate::config::{QueueMode, RabbitConfig};
use crate::error::RabbitError;
use crate::topology;
use pythia_core::connector::Backoff;

/// What the source's observers read of it.
#[derive(Debug, Default)]
pub(crate) struct Stats {
    /// Deliveries the broker marked redelivered.
    pub(crate) redeliveries: AtomicU64,
    /// Whether the consumer is connected and consuming.
    pub(crate) connected: AtomicBool,
}

/// How a session ended.
enum Ended {
    /// Closed on request.
    Closed,
    /// The connection failed or was lost.
    Lost(RabbitError),
}

/// The task's state.
pub(crate) struct Consume {
    pub(crate) config: RabbitConfig,
    /// Queues to have before consuming: the dead-letter and output queues.
    pub(crate) other_queues: Vec<String>,
    /// The connection's name.
    pub(crate) name: String,
    pub(crate) queue: PartitionId,
    pub(crate) in_flight: Arc<InFlight>,
    pub(crate) stats: Arc<Stats>,
    pub(crate) health: Health,
    pub(crate) events: mpsc::UnboundedSender<SourceEvent>,
    pub(crate) commands: mpsc::UnboundedReceiver<Command>,
    /// The offset of the next delivery.
    pub(crate) next_offset: i64,
    /// Whether the queue was reported assigned.
    pub(crate) assigned: bool,
    /// Whether the runtime asked to stop fetching (backpressure, or a drain).
    pub(crate) paused: bool,
}

/// The consumer of a session: stopped with `basic.cancel` while the runtime
/// pauses the queue, so that the broker sends its messages to the other
/// instances meanwhile; started again on resume.
struct Subscription {
    /// `None` while stopped.
    consumer: Option<lapin::Consumer>,
    /// Whether a cancel was sent and the consumer is handing over what it
    /// had received before it.
    cancelling: bool,
}

impl Subscription {
    /// The next delivery; pending while stopped.
    async fn next(&mut self) -> Option<lapin::Result<lapin::message::Delivery>> {
        match &mut self.consumer {
            Some(consumer) => consumer.next().await,
            None => std::future::pending().await,
        }
    }

    /// Sends `basic.cancel`, once; the consumer then ends after the
    /// deliveries it holds.
    async fn cancel(&mut self, channel: &Channel) -> Result<(), RabbitError> {
        let Some(consumer) = &self.consumer else {
            return Ok(());
        };
        if self.cancelling {
            return Ok(());
        }
        self.cancelling = true;
        channel
            .basic_cancel(consumer.tag(), BasicCancelOptions::default())
            .await
            .map_err(|e| RabbitError::amqp("basic.cancel", e))
    }
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
            let requeued = self.in_flight.forget_all();
            let wait = backoff.next_wait();
            tracing::warn!(%error, requeued, ?wait, "RabbitMQ connection lost or refused: not ready; reconnecting");
            let sleep = tokio::time::sleep(wait);
            tokio::pin!(sleep);
            loop {
                tokio::select! {
                    () = &mut sleep => break,
                    command = self.commands.recv() => match command {
                        // Its channel is gone: the broker requeued it.
                        Some(Command::Ack(_)) => {}
                        Some(Command::Pause) => self.paused = true,
                        Some(Command::Resume) => self.paused = false,
                        Some(Command::Close(done)) => {
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

    /// One connection: set up, consume until lost or closed.
    async fn session(&mut self, backoff: &mut Backoff) -> Ended {
        let connection = match topology::connect(&self.config, &self.name).await {
            Ok(connection) => connection,
            Err(error) => return Ended::Lost(error),
        };
        let setup = async {
            let channel = self.prepare(&connection).await?;
            let consumer = match self.paused {
                true => None,
                false => Some(self.consume(&channel).await?),
            };
            Ok::<_, RabbitError>((channel, consumer))
        };
        let (channel, consumer) = match setup.await {
            Ok(subscribed) => subscribed,
            Err(error) => {
                let _ = connection.close(200, "setup failed".into()).await;
                return Ended::Lost(error);
            }
        };
        let mut subscription = Subscription {
            consumer,
            cancelling: false,
        };
        backoff.reset();
        self.stats.connected.store(true, Ordering::Release);
        self.health.set_broker(Ok(()));
        tracing::info!(
            queue = self.queue.topic(),
            prefetch = self.config.prefetch,
            url = %self.config.url,
            "consuming"
        );
        if !self.assigned {
            self.assigned = true;
            let _ = self
                .events
                .send(SourceEvent::Assigned(vec![self.queue.clone()]));
        }
        loop {
            tokio::select! {
                biased;
                command = self.commands.recv() => {
                    let command = match command {
                        Some(Command::Ack(acker)) => match self.ack(acker).await {
                            Ok(Some(next)) => next,
                            Ok(None) => continue,
                            Err(error) => return Ended::Lost(error),
                        },
                        Some(command) => command,
                        None => Command::Close(None),
                    };
                    match command {
                        Command::Ack(_) => {}
                        Command::Pause => {
                            self.paused = true;
                            if let Err(error) = subscription.cancel(&channel).await {
                                return Ended::Lost(error);
                            }
                        }
                        Command::Resume => {
                            self.paused = false;
                            if subscription.consumer.is_none() {
                                match self.consume(&channel).await {
                                    Ok(consumer) => subscription.consumer = Some(consumer),
                                    Err(error) => return Ended::Lost(error),
                                }
                            }
                        }
                        Command::Close(done) => {
                            self.close(&connection, &channel, &mut subscription).await;
                            if let Some(done) = done {
                                let _ = done.send(());
                            }
                            return Ended::Closed;
                        }
                    }
                }
                delivery = subscription.next() => match delivery {
                    Some(Ok(delivery)) => {
                        let mut batch = vec![self.accept(delivery)];
                        let mut lost = None;
                        // What else arrived already goes in the same batch.
                        while batch.len() < usize::from(self.config.prefetch) {
                            match subscription.next().now_or_never() {
                                Some(Some(Ok(delivery))) => batch.push(self.accept(delivery)),
                                Some(Some(Err(error))) => {
                                    lost = Some(RabbitError::amqp("basic.consume", error));
                                    break;
                                }
                                _ => break,
                            }
                        }
                        let _ = self.events.send(SourceEvent::Messages(batch));
                        if let Some(error) = lost {
                            return Ended::Lost(error);
                        }
                    }
                    Some(Err(error)) => return Ended::Lost(RabbitError::amqp("basic.consume", error)),
                    None if subscription.cancelling => {
                        // Our cancel is done: every delivery it had is handed over.
                        subscription.consumer = None;
                        subscription.cancelling = false;
                        if !self.paused {
                            match self.consume(&channel).await {
                                Ok(consumer) => subscription.consumer = Some(consumer),
                                Err(error) => return Ended::Lost(error),
                            }
                        }
                    }
                    None => {
                        return Ended::Lost(RabbitError::amqp(
                            "basic.consume",
                            "the broker cancelled the consumer (was the queue deleted?)",
                        ));
                    }
                },
            }
        }
    }

    /// Declares or checks the queues and opens the channel with the prefetch set.
    async fn prepare(&self, connection: &Connection) -> Result<Channel, RabbitError> {
        let mode = self.config.queues;
        topology::ensure_queue(connection, self.queue.topic(), mode).await?;
        for queue in &self.other_queues {
            // Outputs and dead letters are declared when missing whatever
            // the mode: a publish to a missing queue would be lost.
            topology::ensure_queue(connection, queue, QueueMode::Declare).await?;
        }
        let channel = connection
            .create_channel()
            .await
            .map_err(|e| RabbitError::amqp("channel.open", e))?;
        channel
            .basic_qos(self.config.prefetch, BasicQosOptions::default())
            .await
            .map_err(|e| RabbitError::amqp("basic.qos", e))?;
        Ok(channel)
    }

    /// Starts consuming the queue (`basic.consume`, manual acks).
    async fn consume(&self, channel: &Channel) -> Result<lapin::Consumer, RabbitError> {
        channel
            .basic_consume(
                self.queue.topic().into(),
                "".into(),
                BasicConsumeOptions::default(),
                FieldTable::default(),
            )
            .await
            .map_err(|e| RabbitError::amqp("basic.consume", e))
    }

    /// Numbers a delivery and records it in flight.
    fn accept(
        &mut self,
        mut delivery: lapin::message::Delivery,
    ) -> pythia_core::Message<Option<bytes::Bytes>> {
        let offset = self.next_offset;
        self.next_offset += 1;
        if delivery.redelivered {
            self.stats.redeliveries.fetch_add(1, Ordering::Relaxed);
        }
        let message = convert::message(&self.queue, offset, &mut delivery);
        self.in_flight.insert(offset, delivery.acker);
        message
    }

    /// Sends this ack and every other one waiting, together; returns the
    /// command found behind them, if any.
    async fn ack(&mut self, first: lapin::Acker) -> Result<Option<Command>, RabbitError> {
        let mut ackers = vec![first];
        let mut next = None;
        while let Ok(command) = self.commands.try_recv() {
            match command {
                Command::Ack(acker) => ackers.push(acker),
                other => {
                    next = Some(other);
                    break;
                }
            }
        }
        let acks =
            futures::future::join_all(ackers.iter().map(|a| a.ack(BasicAckOptions::default())));
        // An ack sent as the connection dies may never be answered: past
        // `rabbitmq.broker_timeout` the connection is taken as lost (the
        // broker redelivers what it did not get).
        let Ok(results) = tokio::time::timeout(self.config.broker_timeout, acks).await else {
            return Err(RabbitError::amqp(
                "basic.ack",
                format!(
                    "unanswered within rabbitmq.broker_timeout ({:?})",
                    self.config.broker_timeout
                ),
            ));
        };
        if let Some(error) = results.into_iter().find_map(Result::err) {
            // The connection is going; the consumer reports it next.
            tracing::debug!(%error, "ack not sent; the broker will redeliver");
        }
        Ok(next)
    }

    /// Stops consuming (if not stopped already), sends what acks remain,
    /// and closes.
    async fn close(
        &mut self,
        connection: &Connection,
        channel: &Channel,
        subscription: &mut Subscription,
    ) {
        if let Err(error) = subscription.cancel(channel).await {
            tracing::debug!(%error, "basic.cancel failed");
        }
        let mut ackers = Vec::new();
        while let Ok(command) = self.commands.try_recv() {
            if let Command::Ack(acker) = command {
                ackers.push(acker);
            }
        }
        let _ = futures::future::join_all(ackers.iter().map(|a| a.ack(BasicAckOptions::default())))
            .await;
        // What was received and not finished goes back to the queue now,
        // for the other instances (closing the channel would do it too).
        let unfinished = self.in_flight.take_all();
        let requeued = unfinished.len();
        let requeue = BasicNackOptions {
            requeue: true,
            ..BasicNackOptions::default()
        };
        let _ = futures::future::join_all(unfinished.iter().map(|a| a.nack(requeue))).await;
        let _ = channel.close(200, "worker shutting down".into()).await;
        let _ = connection.close(200, "worker shutting down".into()).await;
        self.stats.connected.store(false, Ordering::Release);
        tracing::info!(
            requeued,
            "stopped consuming; unacknowledged deliveries go back to the queue"
        );
    }
}
