//! Concurrent scheduling: messages of different keys (`ordering = "key"`),
//! or all messages (`ordering = "none"`), handled at the same time; one key's
//! messages stay in offset order.

use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::pin::Pin;

use bytes::Bytes;
use futures::stream::FuturesUnordered;
use futures::{FutureExt, StreamExt};

use super::LaneTask;
use super::handle::{Handled, Step};
use super::inbox::Inbox;
use crate::error::Error;
use crate::message::Message;
use crate::sink::Sink;
use crate::source::Acker;
use crate::spec::MessageOrder;
use crate::worker::Worker;

/// A message of the concurrent mode being handled, with its key slot.
type Started<'a> =
    Pin<Box<dyn Future<Output = (Option<Bytes>, Result<Handled, Error>)> + Send + 'a>>;

/// What the concurrent loop waited for.
enum Event {
    /// A message was handled.
    Done((Option<Bytes>, Result<Handled, Error>)),
    /// A message arrived; `None` once the lane is stopped or dropped.
    Arrived(Option<Message<Option<Bytes>>>),
}

impl<W: Worker, K: Sink, A: Acker> LaneTask<W, K, A> {
    /// Acknowledgements may come out of order: the offset tracker commits
    /// only up to the first unfinished offset.
    pub(super) async fn run_concurrent(&self, mut inbox: Inbox) {
        let by_key = self.shared.policy.ordering == MessageOrder::Key;
        let mut active: FuturesUnordered<Started<'_>> = FuturesUnordered::new();
        // Messages waiting for an earlier message of their key to finish.
        let mut waiting: HashMap<Option<Bytes>, VecDeque<Message<Option<Bytes>>>> = HashMap::new();
        let mut stopping = false;
        let stopped = self.stop.clone().cancelled_owned();
        tokio::pin!(stopped);
        loop {
            if !inbox.has_waiting() {
                self.flush_acks();
            }
            if stopping && active.is_empty() {
                // Queued messages are dropped unacknowledged and redelivered
                // to the partition's next owner.
                let _ = self.settle_pending().await;
                return;
            }
            let next = async {
                tokio::select! {
                    biased;
                    Some(done) = active.next(), if !active.is_empty() => Event::Done(done),
                    message = inbox.recv_until(&mut stopped), if !stopping => Event::Arrived(message),
                }
            };
            let Ok(event) = self.settling(next).await else {
                return;
            };
            match event {
                Event::Done((key, result)) => {
                    match self.absorb(result).0 {
                        Step::Next => {}
                        Step::Stop => stopping = true,
                        Step::End => return,
                    }
                    if by_key {
                        let next = waiting.get_mut(&key).and_then(VecDeque::pop_front);
                        match next {
                            Some(message) if !stopping => active.push(self.start(key, message)),
                            _ => {
                                waiting.remove(&key);
                            }
                        }
                    }
                }
                Event::Arrived(None) => stopping = true,
                Event::Arrived(Some(message)) if !by_key => active.push(self.start(None, message)),
                Event::Arrived(Some(message)) => {
                    let key = message.key.clone();
                    match waiting.get_mut(&key) {
                        // A message of this key is in flight: wait behind it.
                        Some(queue) => queue.push_back(message),
                        None => {
                            waiting.insert(key.clone(), VecDeque::new());
                            active.push(self.start(key, message));
                        }
                    }
                }
            }
        }
    }

    /// Handles one message of the concurrent mode once a permit is free.
    ///
    /// With a permit free now, as is usual, the message's future is made at
    /// once and holds the message only once (an `async` block would keep its
    /// own copy beside the handler's).
    fn start(&self, key: Option<Bytes>, message: Message<Option<Bytes>>) -> Started<'_> {
        if self.stop.is_cancelled() {
            return Box::pin(std::future::ready((key, Ok(Handled::Stopped))));
        }
        if let Ok(permit) = self.shared.permits.clone().try_acquire_owned() {
            return Box::pin(
                self.handle(message, permit)
                    .map(move |result| (key, result)),
            );
        }
        Box::pin(async move {
            // Deliveries are settled by the lane's loop meanwhile.
            let permit = match self
                .unless_stopped(self.shared.permits.clone().acquire_owned())
                .await
            {
                Some(Ok(permit)) => permit,
                Some(Err(_)) => return (key, Ok(Handled::Failed)),
                None => return (key, Ok(Handled::Stopped)),
            };
            let result = self.handle(message, permit).await;
            (key, result)
        })
    }
}

#[cfg(test)]
mod tests {
    use crate::lane::stub;
    use crate::message::Message;

    fn keyed(offset: i64, key: &str, payload: &str) -> Message<Option<bytes::Bytes>> {
        stub::message(offset, payload).with_key(key.to_owned())
    }

    fn position(sent: &[String], payload: &str) -> usize {
        let quoted = format!("\"{payload}\"");
        sent.iter().position(|p| *p == quoted).unwrap()
    }

    #[tokio::test]
    async fn one_keys_messages_stay_in_order_while_other_keys_go_past() {
        let mut policy = stub::policy();
        policy.ordering = crate::MessageOrder::Key;
        let stub = stub::lane(policy);
        stub.hold(4);
        let (_runtime, inbox) = stub::inbox([vec![
            keyed(0, "a", "sleep a0"),
            keyed(1, "b", "b1"),
            keyed(2, "a", "a2"),
            keyed(3, "b", "b3"),
        ]]);
        let all_acked = stub::until(|| stub.acks.offsets().len() == 4);
        tokio::select! {
            () = stub.task.run_concurrent(inbox) => panic!("the lane ended"),
            () = all_acked => {}
        }
        let sent = stub::payloads(&stub.sink.sent());
        assert!(
            position(&sent, "b3") < position(&sent, "sleep a0"),
            "b did not wait for a: {sent:?}"
        );
        assert!(position(&sent, "b1") < position(&sent, "b3"), "{sent:?}");
        assert!(
            position(&sent, "sleep a0") < position(&sent, "a2"),
            "a in order: {sent:?}"
        );
    }

    #[tokio::test]
    async fn without_ordering_every_message_goes_at_once_up_to_the_permits() {
        let mut policy = stub::policy();
        policy.ordering = crate::MessageOrder::None;
        let stub = stub::lane(policy);
        stub.hold(3);
        let (_runtime, inbox) = stub::inbox([vec![
            stub::message(0, "sleep 0"),
            stub::message(1, "sleep 1"),
            stub::message(2, "two"),
        ]]);
        let all_acked = stub::until(|| stub.acks.offsets().len() == 3);
        tokio::select! {
            () = stub.task.run_concurrent(inbox) => panic!("the lane ended"),
            () = all_acked => {}
        }
        let sent = stub::payloads(&stub.sink.sent());
        assert_eq!(position(&sent, "two"), 0, "{sent:?}");
        assert_eq!(stub.task.shared.permits.available_permits(), stub::PERMITS);
    }

    #[tokio::test]
    async fn a_messages_future_fits_a_small_allocation() {
        // Boxed once per message: allocators serve blocks up to about a KiB
        // from their fast per-thread caches.
        let stub = stub::lane(stub::policy());
        let started = stub.task.start(None, stub::message(0, "x"));
        let size = std::mem::size_of_val(&*started);
        assert!(size <= 1024, "a message's future is {size} bytes");
    }

    #[tokio::test]
    async fn a_stop_drops_the_messages_queued_behind_their_key() {
        let mut policy = stub::policy();
        policy.ordering = crate::MessageOrder::Key;
        let stub = stub::lane(policy);
        stub.hold(3);
        let (_runtime, inbox) = stub::inbox([vec![
            keyed(0, "a", "sleep a0"),
            keyed(1, "a", "a1"),
            keyed(2, "a", "a2"),
        ]]);
        let stop = async {
            stub::until(|| stub.worker.attempts(0) == 1).await;
            stub.stop();
        };
        tokio::join!(stub.task.run_concurrent(inbox), stop);
        assert_eq!(stub.acks.offsets(), [0], "the one in flight finishes");
        assert_eq!(stub.worker.attempts(1) + stub.worker.attempts(2), 0);
    }
}
