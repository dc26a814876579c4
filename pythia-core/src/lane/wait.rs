//! How a lane waits — for a message, a permit, a retry's backoff, a stop —
//! without holding anything back: delivery reports that arrive meanwhile are
//! settled, so delivered messages are acknowledged and a paused partition
//! resumes, and a stop ends the wait.

use std::future::Future;
use std::task::Poll;

use super::LaneTask;
use crate::sink::Sink;
use crate::source::Acker;
use crate::worker::Worker;

/// A delivery failed while the lane waited; the run is stopping (the error
/// is reported already).
#[derive(Debug, PartialEq, Eq)]
pub(super) struct DeliveryFailed;

impl<W: Worker, K: Sink, A: Acker> LaneTask<W, K, A> {
    /// Awaits `wait`, settling the lane's delivery reports as they arrive.
    /// Reports come first: a wait that is over is seen after them.
    pub(super) async fn settling<F: Future>(&self, wait: F) -> Result<F::Output, DeliveryFailed> {
        let mut wait = std::pin::pin!(wait);
        loop {
            tokio::select! {
                biased;
                () = self.ledger.ready(), if !self.ledger.is_idle() => {
                    // Not back to back: the next handler reads the clock.
                    self.clock.break_chain();
                    if !self.settle() {
                        return Err(DeliveryFailed);
                    }
                }
                output = &mut wait => return Ok(output),
            }
        }
    }

    /// Settles delivery reports until every receipt the lane handed out is
    /// settled: how a stopping lane ends.
    pub(super) async fn settle_pending(&self) -> Result<(), DeliveryFailed> {
        let idle = std::future::poll_fn(|_| {
            // Woken by the reports `settling` waits for.
            if self.ledger.is_idle() {
                Poll::Ready(())
            } else {
                Poll::Pending
            }
        });
        self.settling(idle).await
    }

    /// Awaits `wait`, or `None` once the lane is asked to stop (checked first).
    pub(super) async fn unless_stopped<F: Future>(&self, wait: F) -> Option<F::Output> {
        tokio::select! {
            biased;
            () = self.stop.cancelled() => None,
            output = wait => Some(output),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::delivery::Outcome;
    use crate::error::Error;
    use crate::lane::stub;
    use crate::sink::SinkError;

    #[tokio::test]
    async fn reports_are_settled_while_the_lane_waits_for_something_else() {
        let stub = stub::lane(stub::policy());
        stub.task
            .state
            .held
            .store(2, std::sync::atomic::Ordering::Relaxed);
        let first = stub.task.ledger.receipt(0, Outcome::Processed, 1);
        let second = stub.task.ledger.receipt(1, Outcome::Processed, 1);
        let (tx, rx) = tokio::sync::oneshot::channel();
        let acks = stub.acks.clone();
        tokio::spawn(async move {
            first.settle(Ok(()));
            // The lane acknowledges 0 before what it waits for comes.
            while acks.offsets().is_empty() {
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
            second.settle(Ok(()));
            tx.send("done").unwrap();
        });
        let waited = stub.task.settling(rx).await;
        assert_eq!(waited, Ok(Ok("done")));
        stub.task.settle_pending().await.unwrap();
        assert_eq!(stub.acks.offsets(), [0, 1]);
        assert!(stub.task.ledger.is_idle());
    }

    #[tokio::test]
    async fn a_failed_delivery_ends_the_wait_and_is_reported() {
        let mut stub = stub::lane(stub::policy());
        let receipt = stub.task.ledger.receipt(7, Outcome::Processed, 1);
        receipt.settle(Err(SinkError::NoTopic));
        let waited = stub.task.settling(std::future::pending::<()>()).await;
        assert_eq!(waited, Err(DeliveryFailed));
        assert!(matches!(
            stub.failures.try_recv(),
            Ok(Error::Delivery { offset: 7, .. })
        ));
        assert!(stub.acks.offsets().is_empty(), "not acknowledged");
    }

    #[tokio::test]
    async fn settling_what_is_pending_ends_once_nothing_is() {
        let stub = stub::lane(stub::policy());
        assert_eq!(stub.task.settle_pending().await, Ok(()), "idle already");
        let receipt = stub.task.ledger.receipt(3, Outcome::Processed, 1);
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(5)).await;
            receipt.settle(Ok(()));
        });
        stub.task
            .state
            .held
            .store(1, std::sync::atomic::Ordering::Relaxed);
        stub.task.settle_pending().await.unwrap();
        assert_eq!(stub.acks.offsets(), [3]);
    }

    #[tokio::test]
    async fn a_stop_ends_a_wait_that_is_not_over() {
        let stub = stub::lane(stub::policy());
        assert_eq!(stub.task.unless_stopped(async { 1 }).await, Some(1));
        stub.task.stop.cancel();
        let never = std::future::pending::<()>();
        assert_eq!(stub.task.unless_stopped(never).await, None);
        let ready = std::future::ready(());
        assert_eq!(stub.task.unless_stopped(ready).await, None, "stop first");
    }
}
