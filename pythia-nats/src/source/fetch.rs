//! The fetch task: pull requests to the durable consumer, the messages
//! they bring, and the acks going back.
//!
//! One task owns the consumer, so everything happens in one order: acks are
//! sent as the lanes report them, a close sends every ack reported before
//! it, and progress acks (`+WPI`) go out every `nats.progress_interval` for
//! each message still held, so the server does not hand a long job to
//! another instance after `ack_wait`.
//!
//! The task asks for at most `nats.concurrency` messages minus those it
//! holds, so an instance never holds more; each pull request waits up to
//! `nats.fetch_wait`. When the runtime pauses (its buffer is full, or it
//! drains for a shutdown) no new request is sent, but what the current one
//! brings is taken, so nothing is left stranded on the server until
//! `ack_wait`.
//!
//! The client reconnects by itself; while the connection is down readiness
//! is false (see [`crate::topology::connect`]), requests fail or expire, and
//! the task asks again after a backoff. Acks of messages received before a
//! loss stay valid after it, as long as `ack_wait` has not run out.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use async_nats::Client;
use async_nats::jetstream::consumer::PullConsumer;
use async_nats::jetstream::{self, AckKind};
use futures::FutureExt;
use pythia_core::connector::{Health, SourceEvent};
use pythia_core::{Message, PartitionId};
use tokio::sync::mpsc;

use super::ack::{self, Command, InFlight};
use super::convert::{self, Delivery};
use super::pull::{Pulled, Requests, sleep_until};
use super::verdict::{Verdict, verdict};
use crate::config::Config;
use crate::error::NatsError;
use crate::topology;
use pythia_core::connector::Backoff;

/// What the source's observers read of it.
#[derive(Debug, Default)]
pub(crate) struct Stats {
    /// Deliveries the server had made before (delivery count above 1).
    pub(crate) redeliveries: AtomicU64,
    /// Messages dead-lettered by the source after `max_deliver` deliveries.
    pub(crate) given_up: AtomicU64,
}

/// The task's state.
pub(crate) struct Fetch {
    pub(crate) config: Config,
    /// The connection's name.
    pub(crate) name: String,
    pub(crate) subject: PartitionId,
    /// Where given-up messages go (`config.dead_letter_subject()`, made
    /// once), if dead letters are on.
    pub(crate) dead_letter: Option<String>,
    pub(crate) in_flight: Arc<InFlight>,
    pub(crate) stats: Arc<Stats>,
    pub(crate) health: Health,
    pub(crate) events: mpsc::UnboundedSender<SourceEvent>,
    pub(crate) commands: mpsc::UnboundedReceiver<Command>,
    /// The offset of the next delivery.
    pub(crate) next_offset: i64,
    /// The offsets and reply subjects of the messages taken for the next
    /// batch to the runtime, held once it is sent.
    pub(crate) arrived: Vec<(i64, async_nats::Subject)>,
    /// Whether the runtime asked to stop fetching.
    pub(crate) paused: bool,
}

/// What a wait for the server ended with.
enum Waited<T> {
    Ready(T),
    Closed(Option<tokio::sync::oneshot::Sender<()>>),
}

impl Fetch {
    /// Connects, sets up, fetches until closed.
    pub(crate) async fn run(mut self) {
        let nats = self.config.nats.clone();
        let mut backoff = Backoff::new(nats.reconnect_min, nats.reconnect_max);
        let client = match self
            .until_ok(&mut backoff, "connect to NATS", |this| {
                let nats = nats.clone();
                let name = this.name.clone();
                let health = this.health.clone();
                async move { topology::connect(&nats, &name, Some(health)).await }
            })
            .await
        {
            Waited::Ready(client) => client,
            Waited::Closed(done) => return answer(done),
        };
        let js = topology::jetstream(client.clone());
        let config = self.config.clone();
        let consumer = match self
            .until_ok(&mut backoff, "set up the stream and consumer", |_| {
                let js = js.clone();
                let config = config.clone();
                async move { topology::consumer(&js, &config).await }
            })
            .await
        {
            Waited::Ready(consumer) => consumer,
            Waited::Closed(done) => return answer(done),
        };
        backoff.reset();
        self.health.set_broker(Ok(()));
        tracing::info!(
            subject = self.subject.topic(),
            stream = %nats.stream_name(),
            consumer = %self.config.consumer_name(),
            concurrency = nats.concurrency,
            url = %nats.url,
            "consuming"
        );
        let _ = self
            .events
            .send(SourceEvent::Assigned(vec![self.subject.clone()]));
        let mut requests = Requests::new(nats.fetch_wait);
        let done = self
            .consume(&js, &client, &mut requests, consumer, &mut backoff)
            .await;
        self.finish(&client, &mut requests).await;
        drop(requests);
        self.close(&client).await;
        answer(done);
    }

    /// Calls `attempt` until it succeeds, with backoff; not ready meanwhile.
    async fn until_ok<T, F, Fut>(
        &mut self,
        backoff: &mut Backoff,
        what: &str,
        attempt: F,
    ) -> Waited<T>
    where
        F: Fn(&Self) -> Fut,
        Fut: std::future::Future<Output = Result<T, NatsError>>,
    {
        loop {
            let error = tokio::select! {
                result = attempt(self) => match result {
                    Ok(value) => return Waited::Ready(value),
                    Err(error) => error,
                },
                done = self.closed() => return Waited::Closed(done),
            };
            self.health.set_broker(Err(error.to_string()));
            let wait = backoff.next_wait();
            tracing::warn!(%error, ?wait, "cannot {what}: not ready; trying again");
            tokio::select! {
                () = tokio::time::sleep(wait) => {}
                done = self.closed() => return Waited::Closed(done),
            }
        }
    }

    /// Waits for a close, taking the other commands meanwhile (there are
    /// no messages to ack before the first fetch).
    async fn closed(&mut self) -> Option<tokio::sync::oneshot::Sender<()>> {
        loop {
            match self.commands.recv().await {
                Some(Command::Close(done)) => return done,
                None => return None,
                Some(Command::Pause) => self.paused = true,
                Some(Command::Resume) => self.paused = false,
                Some(Command::Ack(_)) => {}
            }
        }
    }

    /// Fetches and acks until closed.
    async fn consume(
        &mut self,
        js: &jetstream::Context,
        client: &Client,
        requests: &mut Requests,
        mut consumer: PullConsumer,
        backoff: &mut Backoff,
    ) -> Option<tokio::sync::oneshot::Sender<()>> {
        let nats = self.config.nats.clone();
        let mut progress = tokio::time::interval(nats.progress_interval());
        progress.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // One timer for the open request, set again only for a new one.
        let unanswered = tokio::time::sleep(Duration::ZERO);
        tokio::pin!(unanswered);
        let mut unanswered_at = None;
        loop {
            if requests.needs_setup() {
                match topology::consumer(js, &self.config).await {
                    Ok(found) => {
                        consumer = found;
                        requests.set_up();
                        self.connected_again(js);
                        tracing::info!("stream and consumer set up again");
                    }
                    Err(error) => {
                        self.health.set_broker(Err(error.to_string()));
                        tracing::warn!(%error, "cannot set up the stream and consumer: not ready");
                        requests.failed(backoff);
                    }
                }
            }
            let room = nats.concurrency.saturating_sub(self.in_flight.len());
            if requests.idle() && !self.paused && room > 0 {
                requests.request(client, &consumer, room, backoff).await;
            }
            let retry_at = requests.retry_at();
            if requests.unanswered_at() != unanswered_at {
                unanswered_at = requests.unanswered_at();
                if let Some(at) = unanswered_at {
                    unanswered.as_mut().reset(at);
                }
            }
            tokio::select! {
                biased;
                command = self.commands.recv() => {
                    // Every command already waiting, before the next request:
                    // acks that came together make room for one larger
                    // request rather than many of one message.
                    let mut command = command;
                    loop {
                        match command {
                            Some(Command::Ack(reply)) => ack::send(client, reply, AckKind::Ack).await,
                            Some(Command::Pause) => self.paused = true,
                            Some(Command::Resume) => self.paused = false,
                            Some(Command::Close(done)) => return done,
                            None => return None,
                        }
                        match self.commands.try_recv() {
                            Ok(next) => command = Some(next),
                            // Empty; or closed, which the next receive says.
                            Err(_) => break,
                        }
                    }
                }
                _ = progress.tick() => {
                    super::progress::report(client, &self.in_flight).await;
                }
                pulled = requests.next() => {
                    let mut messages = Vec::new();
                    let mut pulled = Some(pulled);
                    // What else arrived already goes in the same batch.
                    while let Some(next) = pulled {
                        self.pulled(next, js, client, requests, backoff, &mut messages);
                        pulled = requests.next().now_or_never();
                    }
                    if !messages.is_empty() {
                        // Held before the runtime has them, under one lock.
                        self.in_flight.extend(self.arrived.drain(..));
                        let _ = self.events.send(SourceEvent::Messages(messages));
                    }
                }
                () = &mut unanswered, if unanswered_at.is_some() => {
                    tracing::debug!("pull request unanswered; checking the consumer");
                    requests.unanswered();
                }
                () = sleep_until(retry_at) => requests.retry_now(),
            }
        }
    }

    /// Takes what came on the inbox.
    fn pulled(
        &mut self,
        pulled: Pulled,
        js: &jetstream::Context,
        client: &Client,
        requests: &mut Requests,
        backoff: &mut Backoff,
        messages: &mut Vec<Message<Option<bytes::Bytes>>>,
    ) {
        match pulled {
            Pulled::Message(message) => {
                self.answered(js, requests, backoff);
                self.accept(message, js, client, messages);
            }
            Pulled::Expired => self.answered(js, requests, backoff),
            Pulled::Refused(error) => {
                tracing::debug!(%error, "pull request ended with an error; asking again");
                requests.failed(backoff);
            }
        }
    }

    /// The server answered a request: the backoff starts over, and after
    /// failures the consumer is back.
    fn answered(&self, js: &jetstream::Context, requests: &mut Requests, backoff: &mut Backoff) {
        backoff.reset();
        if requests.answered() {
            self.connected_again(js);
        }
    }

    /// Ready again, if the client is connected (a request also ends by the
    /// client's own timeout while it is not).
    fn connected_again(&self, js: &jetstream::Context) {
        if js.client().connection_state() == async_nats::connection::State::Connected {
            self.health.set_broker(Ok(()));
        }
    }

    /// Takes a delivery: hands it to the runtime, or gives it up (see
    /// [`super::verdict`]).
    fn accept(
        &mut self,
        message: async_nats::Message,
        js: &jetstream::Context,
        client: &Client,
        messages: &mut Vec<Message<Option<bytes::Bytes>>>,
    ) {
        let (Some(reply), Some(metadata)) = (
            message.reply.clone(),
            message.reply.as_deref().and_then(convert::metadata),
        ) else {
            tracing::warn!(
                subject = %message.subject,
                "a message without JetStream metadata: skipped"
            );
            return;
        };
        let (delivered, sequence) = (metadata.delivered, metadata.sequence);
        if delivered > 1 {
            self.stats.redeliveries.fetch_add(1, Ordering::Relaxed);
        }
        let offset = self.next_offset;
        self.next_offset += 1;
        let delivery = Delivery {
            payload: message.payload,
            headers: message.headers.as_ref(),
            delivered,
            sequence,
            published_ms: metadata.published_ms,
        };
        match verdict(
            delivered,
            self.config.nats.max_deliver,
            self.dead_letter.is_some(),
        ) {
            Verdict::Process => {
                self.arrived.push((offset, reply));
                messages.push(convert::message(&self.subject, offset, delivery));
            }
            Verdict::DeadLetter(reason) => {
                self.stats.given_up.fetch_add(1, Ordering::Relaxed);
                let letter = super::give_up::letter(
                    &self.config,
                    &convert::message(&self.subject, offset, delivery),
                    &reason,
                    delivered,
                );
                let js = js.clone();
                let subject = self.dead_letter.clone().unwrap_or_default();
                tokio::spawn(super::give_up::dead_letter(
                    js, subject, letter, reply, reason,
                ));
            }
            Verdict::Terminate(reason) => {
                self.stats.given_up.fetch_add(1, Ordering::Relaxed);
                tracing::error!(%reason, sequence, "message terminated (dead letters are off)");
                let client = client.clone();
                tokio::spawn(async move { ack::send(&client, reply, AckKind::Term).await });
            }
        }
    }

    /// Takes what the open pull request still brings (it ends by
    /// `fetch_wait`) and gives it back (`-NAK`) at once, so nothing requested
    /// is left on the server until `ack_wait`.
    async fn finish(&mut self, client: &Client, requests: &mut Requests) {
        let deadline = self.config.nats.fetch_wait + Duration::from_secs(1);
        let _ = tokio::time::timeout(deadline, async {
            while requests.is_open() {
                if let Pulled::Message(message) = requests.next().await
                    && let Some(reply) = message.reply
                {
                    ack::send(client, reply, AckKind::Nak(None)).await;
                }
            }
        })
        .await;
    }

    /// Sends the acks reported before the close, gives back (`-NAK`) what
    /// is not done, flushes, and closes.
    async fn close(&mut self, client: &Client) {
        while let Ok(command) = self.commands.try_recv() {
            if let Command::Ack(reply) = command {
                ack::send(client, reply, AckKind::Ack).await;
            }
        }
        let unfinished = self.in_flight.take_all();
        let given_back = unfinished.len();
        for reply in unfinished {
            ack::send(client, reply, AckKind::Nak(None)).await;
        }
        if let Err(error) = client.flush().await {
            tracing::warn!(%error, "acks not flushed; the server redelivers what it did not get");
        }
        tracing::info!(
            given_back,
            "stopped fetching; unfinished messages go back to the consumer"
        );
        let _ = client.drain().await;
    }
}

/// Answers a close.
fn answer(done: Option<tokio::sync::oneshot::Sender<()>>) {
    if let Some(done) = done {
        let _ = done.send(());
    }
}
