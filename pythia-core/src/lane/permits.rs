//! Processing permits: the run's `max_in_flight`, shared by its lanes. A
//! message holds one while it is processed, until its outputs are handed to
//! the sink; a lane that waits for one settles its deliveries meanwhile.

use tokio::sync::OwnedSemaphorePermit;

use super::LaneTask;
use super::wait::DeliveryFailed;
use crate::sink::Sink;
use crate::source::Acker;
use crate::worker::Worker;

/// How a wait for a permit ended.
pub(super) enum Wait {
    Permit(OwnedSemaphorePermit),
    /// The lane was asked to stop.
    Stop,
    /// A delivery failed meanwhile, or the run is over.
    Fail,
}

impl<W: Worker, K: Sink, A: Acker> LaneTask<W, K, A> {
    /// Waits for a processing permit, settling this lane's deliveries meanwhile
    /// so that its delivered messages are acknowledged (and its partition
    /// resumes) while other partitions hold every permit.
    pub(super) async fn permit(&self) -> Wait {
        // A free permit is taken at once; waiting registers with the stop token.
        if let Ok(permit) = self.shared.permits.clone().try_acquire_owned() {
            return Wait::Permit(permit);
        }
        self.flush_acks();
        self.clock.break_chain();
        let acquire = self.shared.permits.clone().acquire_owned();
        match self.settling(self.unless_stopped(acquire)).await {
            // The semaphore closes only when the run is over.
            Ok(Some(permit)) => permit.map_or(Wait::Fail, Wait::Permit),
            Ok(None) => Wait::Stop,
            Err(DeliveryFailed) => Wait::Fail,
        }
    }

    /// `n` permits, one per message of a batch: in one step when they are
    /// free, else one at a time as they come free (as single messages wait).
    pub(super) async fn permits(&self, n: usize) -> Result<Vec<OwnedSemaphorePermit>, Wait> {
        let mut permits = Vec::with_capacity(n);
        let count = u32::try_from(n).unwrap_or(u32::MAX);
        if let Ok(mut all) = self.shared.permits.clone().try_acquire_many_owned(count) {
            while let Some(one) = all.split(1) {
                permits.push(one);
            }
            return Ok(permits);
        }
        while permits.len() < n {
            match self.permit().await {
                Wait::Permit(permit) => permits.push(permit),
                other => return Err(other),
            }
        }
        Ok(permits)
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::delivery::Outcome;
    use crate::lane::stub;

    fn free(stub: &stub::Stub) -> usize {
        stub.task.shared.permits.available_permits()
    }

    #[tokio::test]
    async fn a_free_permit_is_taken_and_given_back_when_dropped() {
        let stub = stub::lane(stub::policy());
        assert_eq!(free(&stub), stub::PERMITS);
        let Wait::Permit(permit) = stub.task.permit().await else {
            panic!("a permit is free");
        };
        assert_eq!(free(&stub), stub::PERMITS - 1);
        drop(permit);
        assert_eq!(free(&stub), stub::PERMITS);
    }

    #[tokio::test]
    async fn a_batch_takes_one_permit_per_message_and_waits_for_the_missing_ones() {
        let stub = stub::lane(stub::policy());
        let all = stub.task.permits(stub::PERMITS).await.ok().unwrap();
        assert_eq!(all.len(), stub::PERMITS);
        assert_eq!(free(&stub), 0);
        let mut all = all.into_iter();
        drop(all.next());
        // Two are missing: they are taken as others give theirs back.
        let freed = tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(5)).await;
            drop(all);
        });
        let two = stub.task.permits(2).await.ok().unwrap();
        assert_eq!(two.len(), 2);
        freed.await.unwrap();
        drop(two);
        assert_eq!(free(&stub), stub::PERMITS, "none lost, none made up");
    }

    #[tokio::test]
    async fn waiting_for_a_permit_settles_deliveries_and_ends_on_a_stop() {
        let stub = stub::lane(stub::policy());
        let held = stub.task.permits(stub::PERMITS).await.ok().unwrap();
        stub.task
            .state
            .held
            .store(1, std::sync::atomic::Ordering::Relaxed);
        let receipt = stub.task.ledger.receipt(4, Outcome::Processed, 1);
        let stop = stub.task.stop.clone();
        let acks = stub.acks.clone();
        tokio::spawn(async move {
            receipt.settle(Ok(()));
            while acks.offsets().is_empty() {
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
            stop.cancel();
        });
        assert!(matches!(stub.task.permit().await, Wait::Stop));
        assert_eq!(stub.acks.offsets(), [4], "settled while waiting");
        drop(held);
    }

    #[tokio::test]
    async fn a_closed_semaphore_fails_the_wait() {
        let stub = stub::lane(stub::policy());
        let _held = stub.task.permits(stub::PERMITS).await.ok().unwrap();
        stub.task.shared.permits.close();
        assert!(matches!(stub.task.permit().await, Wait::Fail));
    }
}
