//! The pull requests of the fetch task: the open one, the messages it
//! brings, when to ask again, and when the consumer looks gone.
//!
//! The task subscribes once to an inbox of its own and names it as the
//! reply subject of every pull request (`CONSUMER.MSG.NEXT`), so a request
//! costs one publish, not a subscription of its own. One request is open at
//! a time, for as many messages as the instance has room for, expiring
//! after `nats.fetch_wait`; it ends when all its messages came, or when the
//! server says it expired (408) or refuses it (409 and the like). A request
//! that fails is asked again after a backoff. A request the server does not
//! answer by `UNANSWERED_AFTER` past its expiry is what a pull request to a
//! consumer or stream that no longer exists looks like (a server restarted
//! without its store): the task then sets them up again.

use std::time::Duration;

use async_nats::jetstream::consumer::PullConsumer;
use async_nats::jetstream::consumer::pull::BatchConfig;
use async_nats::{Client, StatusCode, Subject, Subscriber};
use futures::StreamExt;
use tokio::time::Instant;

use pythia_core::connector::Backoff;

/// Failed requests in a row before the stream and consumer are set up again.
const FAILURES_BEFORE_SETUP: u32 = 3;

/// A request still open this long after `fetch_wait` was not answered.
const UNANSWERED_AFTER: Duration = Duration::from_secs(2);

/// What came on the inbox.
#[derive(Debug)]
pub(crate) enum Pulled {
    /// A message.
    Message(async_nats::Message),
    /// The server ended the open request: it expired, or there was nothing.
    Expired,
    /// The server refused or ended the open request, saying why.
    Refused(String),
}

/// The pull requests' state.
pub(crate) struct Requests {
    inbox: Option<(Subject, Subscriber)>,
    /// The messages the open request may still bring, if one is open.
    open: Option<usize>,
    /// When the open request was sent.
    opened: Instant,
    retry_at: Option<Instant>,
    failures: u32,
    fetch_wait: Duration,
}

impl Requests {
    pub(crate) fn new(fetch_wait: Duration) -> Self {
        Self {
            inbox: None,
            open: None,
            opened: Instant::now(),
            retry_at: None,
            failures: 0,
            fetch_wait,
        }
    }

    /// Whether the stream and consumer should be set up again now.
    pub(crate) fn needs_setup(&self) -> bool {
        self.failures >= FAILURES_BEFORE_SETUP && self.retry_at.is_none()
    }

    /// They were set up again.
    pub(crate) fn set_up(&mut self) {
        self.failures = 0;
    }

    /// Whether a request may be sent now.
    pub(crate) fn idle(&self) -> bool {
        self.open.is_none() && self.retry_at.is_none()
    }

    /// Whether a request is open.
    pub(crate) fn is_open(&self) -> bool {
        self.open.is_some()
    }

    /// Sends a request for `room` messages, subscribing to the inbox first
    /// if not yet subscribed.
    pub(crate) async fn request(
        &mut self,
        client: &Client,
        consumer: &PullConsumer,
        room: usize,
        backoff: &mut Backoff,
    ) {
        if self.inbox.is_none() {
            let inbox = Subject::from(client.new_inbox());
            match client.subscribe(inbox.clone()).await {
                Ok(subscriber) => self.inbox = Some((inbox, subscriber)),
                Err(error) => {
                    tracing::debug!(%error, "cannot subscribe to the pull inbox");
                    return self.failed(backoff);
                }
            }
        }
        let Some((inbox, _)) = &self.inbox else {
            return;
        };
        let request = BatchConfig {
            batch: room,
            expires: Some(self.fetch_wait),
            ..Default::default()
        };
        match consumer.request_batch(request, inbox.clone()).await {
            Ok(()) => {
                self.open = Some(room);
                self.opened = Instant::now();
            }
            Err(error) => {
                tracing::debug!(%error, "pull request failed");
                self.failed(backoff);
            }
        }
    }

    /// The next message or answer on the inbox; pending without one. A
    /// message that comes when no request is open (of a request given up
    /// on) is handed out too: the server counts it as delivered.
    pub(crate) async fn next(&mut self) -> Pulled {
        loop {
            let message = match &mut self.inbox {
                Some((_, subscriber)) => subscriber.next().await,
                None => None,
            };
            // The subscription ends only with the connection's close.
            let Some(message) = message else {
                return std::future::pending().await;
            };
            match message.status {
                None | Some(StatusCode::OK) => {
                    if let Some(left) = &mut self.open {
                        *left = left.saturating_sub(1);
                        if *left == 0 {
                            self.open = None;
                        }
                    }
                    return Pulled::Message(message);
                }
                Some(StatusCode::IDLE_HEARTBEAT) => {}
                // The answer to a request given up on: not this one's.
                Some(_) if self.open.is_none() => {}
                Some(StatusCode::TIMEOUT | StatusCode::NOT_FOUND) => {
                    self.open = None;
                    return Pulled::Expired;
                }
                Some(status) => {
                    self.open = None;
                    let description = message.description.unwrap_or_default();
                    return Pulled::Refused(format!("{status} {description}"));
                }
            }
        }
    }

    /// When the open request counts as unanswered; `None` without one.
    pub(crate) fn unanswered_at(&self) -> Option<Instant> {
        self.open
            .map(|_| self.opened + self.fetch_wait + UNANSWERED_AFTER)
    }

    /// The open request was not answered: the stream and consumer are set
    /// up again.
    pub(crate) fn unanswered(&mut self) {
        self.open = None;
        self.failures = FAILURES_BEFORE_SETUP;
    }

    /// When a request may be sent again, if not now.
    pub(crate) fn retry_at(&self) -> Option<Instant> {
        self.retry_at
    }

    /// The wait is over.
    pub(crate) fn retry_now(&mut self) {
        self.retry_at = None;
    }

    /// The request or a setup failed: ask again after a backoff.
    pub(crate) fn failed(&mut self, backoff: &mut Backoff) {
        self.open = None;
        self.failures += 1;
        self.retry_at = Some(Instant::now() + backoff.next_wait());
    }

    /// A message came, or a request was answered: returns whether requests
    /// had been failing.
    pub(crate) fn answered(&mut self) -> bool {
        std::mem::take(&mut self.failures) > 0
    }
}

/// Sleeps until `at`; pending without one.
pub(crate) async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn an_open_request_is_unanswered_well_after_its_expiry() {
        let mut requests = Requests::new(Duration::from_secs(1));
        assert_eq!(requests.unanswered_at(), None, "nothing open");
        requests.open = Some(4);
        requests.opened = Instant::now();
        assert_eq!(
            requests.unanswered_at(),
            Some(Instant::now() + Duration::from_secs(3))
        );
        requests.unanswered();
        assert!(!requests.is_open());
        assert!(requests.needs_setup(), "set up again");
    }

    /// The messages and answers that come within `wait`.
    async fn pulled_within(requests: &mut Requests, wait: Duration) -> Vec<String> {
        let mut seen = Vec::new();
        while let Ok(pulled) = tokio::time::timeout(wait, requests.next()).await {
            seen.push(match pulled {
                Pulled::Message(message) => String::from_utf8_lossy(&message.payload).into_owned(),
                Pulled::Expired => "expired".to_owned(),
                Pulled::Refused(error) => format!("refused: {error}"),
            });
        }
        seen
    }

    #[tokio::test]
    async fn a_request_ends_with_its_last_message_or_its_expiry_on_one_inbox() {
        use pythia_core::{ConfigLoader, WorkerSpec};

        use crate::config::Config;
        use crate::topology;

        let subject = format!("pythia-pull-test-{}", std::process::id());
        let config = Config::from_loader(Config::spec_defaults(
            ConfigLoader::new()
                .no_file()
                .env([("PYTHIA_NATS__SUBJECT", subject.as_str())]),
            &WorkerSpec::UNNAMED,
        ))
        .unwrap();
        let client = topology::connect(&config.nats, "pythia-pull-test", None)
            .await
            .expect(
                "NATS with JetStream must answer on 127.0.0.1:4222 (start it: nats-server -js)",
            );
        let js = topology::jetstream(client.clone());
        let consumer = topology::consumer(&js, &config).await.unwrap();
        for i in 0..5 {
            js.publish(subject.clone(), i.to_string().into())
                .await
                .unwrap()
                .await
                .unwrap();
        }
        let fetch_wait = Duration::from_millis(300);
        let mut requests = Requests::new(fetch_wait);
        let mut backoff = Backoff::new(Duration::from_millis(1), Duration::from_millis(2));

        // Filled: it ends with its last message, and nothing more comes.
        requests.request(&client, &consumer, 3, &mut backoff).await;
        assert!(requests.is_open());
        let seen = pulled_within(&mut requests, fetch_wait * 3).await;
        assert_eq!(seen, ["0", "1", "2"]);
        assert!(!requests.is_open(), "ended with its last message");

        // Not filled: the server says it expired, on the same inbox.
        requests.request(&client, &consumer, 5, &mut backoff).await;
        let seen = pulled_within(&mut requests, fetch_wait * 3).await;
        assert_eq!(seen, ["3", "4", "expired"]);
        assert!(requests.idle() && !requests.answered(), "a good answer");

        js.delete_stream(config.nats.stream_name()).await.unwrap();
        let _ = js
            .delete_stream(config.nats.dead_letter_stream_name())
            .await;
    }

    #[test]
    fn failures_lead_to_a_setup_after_a_backoff() {
        let mut requests = Requests::new(Duration::from_secs(1));
        let mut backoff = Backoff::new(Duration::from_millis(1), Duration::from_millis(2));
        assert!(requests.idle());
        for _ in 0..FAILURES_BEFORE_SETUP {
            assert!(!requests.needs_setup());
            requests.failed(&mut backoff);
            assert!(!requests.idle(), "waits before asking again");
            requests.retry_now();
        }
        assert!(requests.needs_setup());
        requests.set_up();
        assert!(!requests.needs_setup());
        requests.failed(&mut backoff);
        assert!(requests.answered(), "it had been failing");
        assert!(!requests.answered());
    }
}
