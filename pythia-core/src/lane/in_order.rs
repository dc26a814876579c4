//! In-order scheduling (`ordering = "partition"`): one message at a time, in
//! offset order, each handled to the end before the next starts.

use tokio::sync::OwnedSemaphorePermit;

use super::LaneTask;
use super::handle::Step;
use super::inbox::Inbox;
use super::permits::Wait;
use crate::sink::Sink;
use crate::source::Acker;
use crate::worker::Worker;

impl<W: Worker, K: Sink, A: Acker> LaneTask<W, K, A> {
    /// One message at a time, in offset order.
    pub(super) async fn run_in_order(&self, mut inbox: Inbox) {
        let mut stopping = false;
        // One wait for the whole loop: a fresh one per message would register
        // with the token (a lock shared by every lane) each time.
        let stopped = self.stop.clone().cancelled_owned();
        tokio::pin!(stopped);
        // The last message's permit, kept for the next (see below).
        let mut kept: Option<OwnedSemaphorePermit> = None;
        loop {
            if !inbox.has_waiting() {
                self.flush_acks();
                self.clock.break_chain();
                // About to wait: the kept permit goes back.
                kept = None;
            }
            // The next message of a run already here is taken at once; the
            // wait is for when the lane has something to wait for or to
            // settle first.
            let ready = !stopping
                && inbox.has_waiting()
                && !self.ledger.has_settled()
                && !self.state.is_stopping();
            let next = if ready { inbox.try_next() } else { None };
            let message = match next {
                Some(message) => message,
                None if stopping => {
                    let _ = self.settle_pending().await;
                    return;
                }
                None => match self.settling(inbox.recv_until(&mut stopped)).await {
                    Ok(Some(message)) => message,
                    Ok(None) => {
                        stopping = true;
                        continue;
                    }
                    Err(_) => return,
                },
            };
            let permit = match kept.take() {
                Some(permit) => permit,
                None => match self.permit().await {
                    Wait::Permit(permit) => permit,
                    Wait::Stop => {
                        stopping = true;
                        continue;
                    }
                    Wait::Fail => return,
                },
            };
            let handled = self.handle(message, permit).await;
            let (step, permit) = self.absorb(handled);
            // Kept for the next message when it is already here and permits
            // are free, so that no other lane waits for this one: a release
            // and an acquire each touch the semaphore every lane shares.
            kept = permit
                .filter(|_| inbox.has_waiting() && self.shared.permits.available_permits() > 0);
            match step {
                Step::Next => {}
                Step::Stop => stopping = true,
                Step::End => return,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::Ordering;

    use crate::error::Error;
    use crate::lane::stub;

    #[tokio::test]
    async fn messages_go_one_at_a_time_in_offset_order_and_a_stop_waits_for_their_deliveries() {
        let stub = stub::lane(stub::policy());
        stub.sink.hold.store(true, Ordering::Relaxed);
        stub.hold(4);
        let (_runtime, inbox) = stub::inbox([
            vec![stub::message(0, "sleep 0"), stub::message(1, "one")],
            vec![stub::message(2, "none"), stub::message(3, "three")],
        ]);
        let drive = async {
            stub::until(|| stub.sink.sent().len() == 3).await;
            stub.stop();
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
            // Processed, not delivered: only the message without outputs.
            assert_eq!(stub.acks.offsets(), [2]);
            stub.sink.settle_held(|| Ok(()));
        };
        tokio::join!(stub.task.run_in_order(inbox), drive);
        let sent = stub::payloads(&stub.sink.sent());
        assert_eq!(sent, [r#""sleep 0""#, r#""one""#, r#""three""#]);
        let mut acks = stub.acks.offsets();
        acks.sort();
        assert_eq!(acks, [0, 1, 2, 3]);
        let permits = stub.task.shared.permits.available_permits();
        assert_eq!(permits, stub::PERMITS, "every permit given back");
    }

    #[tokio::test]
    async fn a_stopped_lane_finishes_its_message_and_drops_the_rest_unacknowledged() {
        let stub = stub::lane(stub::policy());
        stub.hold(3);
        let (_runtime, inbox) = stub::inbox([vec![
            stub::message(0, "sleep 0"),
            stub::message(1, "one"),
            stub::message(2, "two"),
        ]]);
        let stop = async {
            stub::until(|| stub.worker.attempts(0) == 1).await;
            stub.stop();
        };
        tokio::join!(stub.task.run_in_order(inbox), stop);
        assert_eq!(stub::payloads(&stub.sink.sent()), [r#""sleep 0""#]);
        assert_eq!(stub.acks.offsets(), [0]);
        assert_eq!(stub.worker.attempts(1), 0);
    }

    #[tokio::test]
    async fn a_failure_that_stops_the_run_ends_the_lane_where_it_is() {
        let mut policy = stub::policy();
        policy.dead_letter = None;
        let mut stub = stub::lane(policy);
        stub.hold(3);
        let (_runtime, inbox) = stub::inbox([vec![
            stub::message(0, "zero"),
            stub::message(1, "permanent"),
            stub::message(2, "two"),
        ]]);
        stub.task.run_in_order(inbox).await;
        assert!(matches!(
            stub.failures.try_recv(),
            Ok(Error::Process { offset: 1, .. })
        ));
        assert_eq!(stub.worker.attempts(2), 0, "nothing after it is processed");
        assert!(!stub.acks.offsets().contains(&1));
    }
}
