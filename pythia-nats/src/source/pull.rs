//! The pull requests of the fetch task: the open one, when to ask again,
//! and when the consumer looks gone.
//!
//! One request is open at a time, for as many messages as the instance has
//! room for, expiring after `nats.fetch_wait`. A request that fails is
//! asked again after a backoff. The server answers an expired request at
//! once (408); a request the client had to give up on itself was not
//! answered at all, which is what a pull request to a consumer or stream
//! that no longer exists looks like (a server restarted without its
//! store): the task then sets them up again.

use std::time::Duration;

use async_nats::jetstream;
use async_nats::jetstream::consumer::PullConsumer;
use async_nats::jetstream::consumer::pull::Batch;
use futures::StreamExt;
use tokio::time::Instant;

use pythia_core::connector::Backoff;

/// Failed requests in a row before the stream and consumer are set up again.
const FAILURES_BEFORE_SETUP: u32 = 3;

/// A request still open this long after `fetch_wait` was not answered (the
/// client gives up 5 s after it).
const UNANSWERED_AFTER: Duration = Duration::from_secs(2);

/// How the open request ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Ended {
    /// The server answered: every message came, or it expired.
    Answered,
    /// The client gave up on it: the server never answered.
    Unanswered,
}

/// How a request that ended after `elapsed` ended (see the module's notes).
pub(crate) fn ended(elapsed: Duration, fetch_wait: Duration) -> Ended {
    match elapsed > fetch_wait + UNANSWERED_AFTER {
        true => Ended::Unanswered,
        false => Ended::Answered,
    }
}

/// The pull requests' state.
pub(crate) struct Requests {
    open: Option<Batch>,
    opened: Instant,
    retry_at: Option<Instant>,
    failures: u32,
    fetch_wait: Duration,
}

impl Requests {
    pub(crate) fn new(fetch_wait: Duration) -> Self {
        Self {
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

    /// Sends a request for `room` messages.
    pub(crate) async fn request(
        &mut self,
        consumer: &PullConsumer,
        room: usize,
        backoff: &mut Backoff,
    ) {
        let request = consumer
            .batch()
            .max_messages(room)
            .expires(self.fetch_wait)
            .messages();
        match request.await {
            Ok(batch) => {
                self.open = Some(batch);
                self.opened = Instant::now();
            }
            Err(error) => {
                tracing::debug!(%error, "pull request failed");
                self.failed(backoff);
            }
        }
    }

    /// The next message of the open request; pending without one.
    pub(crate) async fn next(&mut self) -> Option<Result<jetstream::Message, async_nats::Error>> {
        match &mut self.open {
            Some(batch) => batch.next().await,
            None => std::future::pending().await,
        }
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

    /// The open request ended; how.
    pub(crate) fn end(&mut self) -> Ended {
        self.open = None;
        let ended = ended(self.opened.elapsed(), self.fetch_wait);
        if ended == Ended::Unanswered {
            self.failures = FAILURES_BEFORE_SETUP;
        }
        ended
    }

    /// A message came, or a request was answered: returns whether requests
    /// had been failing.
    pub(crate) fn answered(&mut self) -> bool {
        std::mem::take(&mut self.failures) > 0
    }

    /// Takes the open request, to finish it.
    pub(crate) fn take(&mut self) -> Option<Batch> {
        self.open.take()
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

    #[test]
    fn a_request_ended_well_after_its_expiry_was_not_answered() {
        let s = Duration::from_secs;
        let ms = Duration::from_millis;
        let table = [
            (ms(10), s(1), Ended::Answered),
            (ms(1_050), s(1), Ended::Answered),
            (ms(2_900), s(1), Ended::Answered),
            (ms(3_100), s(1), Ended::Unanswered),
            (ms(6_000), s(1), Ended::Unanswered),
            (ms(6_000), s(5), Ended::Answered),
        ];
        for (elapsed, fetch_wait, expected) in table {
            assert_eq!(
                ended(elapsed, fetch_wait),
                expected,
                "{elapsed:?} of {fetch_wait:?}"
            );
        }
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
