//! A message's span: one per message, with its worker, topic, partition,
//! offset and trace id, entered around each poll of the work done for the
//! message — never held across an `.await`.

use std::borrow::Borrow;
use std::future::Future;

use tracing::Span;

use super::LaneTask;
use crate::sink::Sink;
use crate::source::Acker;
use crate::worker::Worker;

impl<W: Worker, K: Sink, A: Acker> LaneTask<W, K, A> {
    /// The span of the message at `offset`; `trace_id` is recorded by
    /// `continue_trace`.
    pub(super) fn message_span(&self, offset: i64) -> Span {
        tracing::debug_span!(
            "message",
            worker = %self.shared.ctx.worker(),
            topic = %self.partition.topic(),
            partition = self.partition.index(),
            offset,
            trace_id = tracing::field::Empty,
        )
    }
}

/// Awaits `future` with `span` entered around each poll, as tracing's
/// `Instrumented` does. The span may be borrowed (`&Span`), so that a
/// message's future needs no clone of it, or owned by a boxed future.
pub(super) async fn within<S: Borrow<Span>, F: Future>(span: S, future: F) -> F::Output {
    let mut future = std::pin::pin!(future);
    std::future::poll_fn(|cx| span.borrow().in_scope(|| future.as_mut().poll(cx))).await
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;
    use std::sync::atomic::{AtomicU64, Ordering};

    use tracing::span::{Attributes, Id, Record};
    use tracing::subscriber::Subscriber;
    use tracing::{Event, Metadata};

    use super::*;

    /// Knows which span is entered, and nothing else.
    #[derive(Default)]
    struct Entered {
        next: AtomicU64,
        stack: Mutex<Vec<Id>>,
    }

    impl Subscriber for Entered {
        fn enabled(&self, _: &Metadata<'_>) -> bool {
            true
        }
        fn new_span(&self, _: &Attributes<'_>) -> Id {
            Id::from_u64(self.next.fetch_add(1, Ordering::Relaxed) + 1)
        }
        fn record(&self, _: &Id, _: &Record<'_>) {}
        fn record_follows_from(&self, _: &Id, _: &Id) {}
        fn event(&self, _: &Event<'_>) {}
        fn enter(&self, span: &Id) {
            self.stack.lock().unwrap().push(span.clone());
        }
        fn exit(&self, _: &Id) {
            self.stack.lock().unwrap().pop();
        }
    }

    fn entered(subscriber: &Entered) -> Option<u64> {
        subscriber.stack.lock().unwrap().last().map(Id::into_u64)
    }

    #[test]
    fn the_span_is_entered_around_each_poll_and_only_then() {
        let subscriber = std::sync::Arc::new(Entered::default());
        let dispatch = tracing::Dispatch::new(subscriber.clone());
        tracing::dispatcher::with_default(&dispatch, || {
            let span = tracing::info_span!("message");
            let id = span.id().map(|id| id.into_u64());
            let mut seen = Vec::new();
            let mut polls = 0;
            let work = std::future::poll_fn(|cx| {
                seen.push(entered(&subscriber));
                polls += 1;
                if polls < 3 {
                    cx.waker().wake_by_ref();
                    std::task::Poll::Pending
                } else {
                    std::task::Poll::Ready(polls)
                }
            });
            // Borrowed, then owned: the same behaviour.
            let polled = futures::executor::block_on(within(&span, work));
            assert_eq!(polled, 3);
            assert_eq!(seen, [id; 3], "entered on every poll");
            assert_eq!(entered(&subscriber), None, "and left after each");
            let owned =
                futures::executor::block_on(within(span.clone(), async { entered(&subscriber) }));
            assert_eq!(owned, id);
        });
    }
}
