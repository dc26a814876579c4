//! Delivery receipts: how a sink tells the runtime that an output reached the
//! broker, and how a lane learns of it.
//!
//! A lane hands each record to its sink with a [`Receipt`]. The sink settles
//! the receipt once the broker confirmed or refused the record, usually from
//! the client's delivery-report thread. Settled receipts collect in the lane's
//! ledger, which wakes the lane once per run of reports rather than once per
//! record; the lane then acknowledges every message whose records were all
//! delivered.

use std::collections::HashMap;
use std::ffi::c_void;
use std::future::Future;
use std::pin::Pin;
use std::ptr::NonNull;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};

use futures::task::AtomicWaker;
use tokio::sync::oneshot;

use crate::error::SinkError;

/// How a finished message counts in the metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Outcome {
    Processed,
    DeadLettered,
    /// Given up on without a dead letter (`worker.dead_letter.on_failure =
    /// "skip"`); never a receipt's.
    Skipped,
}

/// A promise to report one record's delivery.
///
/// [`Sink::send`](crate::connector::Sink::send) gets one with each record and calls
/// [`Receipt::settle`] when the broker has confirmed or refused the record. A
/// receipt dropped unsettled counts as a failed delivery
/// ([`SinkError::Dropped`]), so an input is never acknowledged on an output
/// that was lost on the way.
///
/// ```
/// # futures::executor::block_on(async {
/// use pythia_core::SinkError;
/// use pythia_core::connector::Receipt;
/// let (receipt, confirmation) = Receipt::channel();
/// receipt.settle(Ok(()));
/// assert!(confirmation.await.is_ok());
///
/// let (receipt, confirmation) = Receipt::channel();
/// drop(receipt);
/// assert!(matches!(confirmation.await, Err(SinkError::Dropped)));
/// # });
/// ```
#[must_use = "a receipt dropped unsettled reports its record as not delivered"]
pub struct Receipt {
    /// `None` once settled.
    slip: Option<Box<Slip>>,
}

/// A receipt's state, boxed so that a receipt is one pointer. A lane's slips
/// come back to its ledger when settled and are used again: a record costs
/// no allocation, and none is freed on the thread that settles it.
struct Slip {
    /// Whom to tell; `None` while the slip is pooled or settled.
    to: Option<To>,
    /// The message's offset, for a lane.
    offset: i64,
    outcome: Outcome,
    /// How many records the message has.
    parts: u32,
    /// What the sink reported, once settled; boxed, as failures are rare
    /// and the slip stays small.
    result: Result<(), Box<SinkError>>,
}

enum To {
    /// A record of the message at `offset`, one of its `parts`.
    Lane(Arc<Ledger>),
    Channel(oneshot::Sender<Result<(), SinkError>>),
}

impl Receipt {
    /// A receipt whose settlement resolves the returned [`Confirmation`]: for
    /// sending a record outside a worker, and for testing a [`Sink`](crate::connector::Sink).
    pub fn channel() -> (Self, Confirmation) {
        let (tx, rx) = oneshot::channel();
        let receipt = Self {
            slip: Some(Box::new(Slip {
                to: Some(To::Channel(tx)),
                offset: 0,
                outcome: Outcome::Processed,
                parts: 1,
                result: Ok(()),
            })),
        };
        (receipt, Confirmation(rx))
    }

    /// Reports the record as delivered (`Ok`) or not.
    pub fn settle(mut self, result: Result<(), SinkError>) {
        if let Some(slip) = self.slip.take() {
            slip.settle(result);
        }
    }

    /// The receipt as one pointer, for a client that carries one opaque
    /// pointer with each record (librdkafka's `msg_opaque`). The pointer owns
    /// the receipt: [`Receipt::from_raw`] takes it back, once. Connectors
    /// reach it as [`connector::receipt_into_raw`](crate::connector::receipt_into_raw).
    pub(crate) fn into_raw(self) -> NonNull<c_void> {
        let mut receipt = std::mem::ManuallyDrop::new(self);
        let slip = receipt
            .slip
            .take()
            .expect("an unsettled receipt has a slip");
        NonNull::from(Box::leak(slip)).cast()
    }

    /// Takes back a receipt made into a pointer by [`Receipt::into_raw`].
    ///
    /// # Safety
    ///
    /// `raw` must come from [`Receipt::into_raw`] and not have been taken
    /// back before.
    pub(crate) unsafe fn from_raw(raw: NonNull<c_void>) -> Self {
        // SAFETY: per the contract, `raw` is a leaked `Box<Slip>`, owned here.
        let slip = unsafe { Box::from_raw(raw.cast::<Slip>().as_ptr()) };
        Self { slip: Some(slip) }
    }
}

impl Drop for Receipt {
    fn drop(&mut self) {
        if let Some(slip) = self.slip.take() {
            slip.settle(Err(SinkError::Dropped));
        }
    }
}

impl std::fmt::Debug for Receipt {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut debug = f.debug_struct("Receipt");
        if let Some(slip) = &self.slip
            && let Some(To::Lane(_)) = slip.to
        {
            debug
                .field("offset", &slip.offset)
                .field("parts", &slip.parts);
        }
        debug.field("settled", &self.slip.is_none()).finish()
    }
}

impl Slip {
    fn settle(mut self: Box<Self>, result: Result<(), SinkError>) {
        match self.to.take() {
            Some(To::Lane(ledger)) => {
                self.result = result.map_err(Box::new);
                ledger.push(self);
            }
            Some(To::Channel(tx)) => {
                let _ = tx.send(result);
            }
            None => {}
        }
    }
}

/// Resolves when the [`Receipt`] made with it is settled.
#[derive(Debug)]
pub struct Confirmation(oneshot::Receiver<Result<(), SinkError>>);

impl Future for Confirmation {
    type Output = Result<(), SinkError>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        Pin::new(&mut self.0)
            .poll(cx)
            .map(|result| result.unwrap_or(Err(SinkError::Dropped)))
    }
}

/// A message whose records are all settled.
#[derive(Debug)]
pub(crate) struct Delivered {
    pub(crate) offset: i64,
    pub(crate) outcome: Outcome,
    /// `Err` with the first failure when any record was not delivered.
    pub(crate) result: Result<(), SinkError>,
}

/// A message of several records, some of them settled.
struct Partial {
    /// Records still to be settled.
    due: u32,
    /// `Err` with the first failure.
    result: Result<(), SinkError>,
}

/// Settled slips a ledger keeps for new receipts, at most (of 40 bytes
/// each): a lane's records awaiting delivery at full speed, without holding
/// on to all of a burst's.
const POOLED: usize = 4096;

/// Where a lane's receipts are settled.
#[derive(Default)]
#[expect(
    clippy::vec_box,
    reason = "the boxes are receipts' own, moved between the lists and reused"
)]
pub(crate) struct Ledger {
    /// Filled by the sinks' report threads.
    settled: Mutex<Vec<Box<Slip>>>,
    /// Taken by the lane: the last run of reports, kept for its capacity.
    drained: Mutex<Vec<Box<Slip>>>,
    /// Drained slips, for the lane's next receipts.
    pool: Mutex<Vec<Box<Slip>>>,
    /// Messages of several records with some settled, by offset.
    partial: Mutex<HashMap<i64, Partial>>,
    /// Receipts handed out and not yet drained.
    unsettled: AtomicUsize,
    /// Whether `settled` holds reports; set and cleared under its lock.
    any_settled: AtomicBool,
    /// The lane, waiting for reports.
    waker: AtomicWaker,
}

impl Ledger {
    /// A receipt for one of the `parts` records of the message at `offset`.
    pub(crate) fn receipt(self: &Arc<Self>, offset: i64, outcome: Outcome, parts: u32) -> Receipt {
        self.unsettled.fetch_add(1, Ordering::Relaxed);
        let to = Some(To::Lane(self.clone()));
        let slip = match lock(&self.pool).pop() {
            Some(mut slip) => {
                slip.to = to;
                slip.offset = offset;
                slip.outcome = outcome;
                slip.parts = parts;
                slip
            }
            None => Box::new(Slip {
                to,
                offset,
                outcome,
                parts,
                result: Ok(()),
            }),
        };
        Receipt { slip: Some(slip) }
    }

    /// Whether every receipt handed out has been settled and drained.
    pub(crate) fn is_idle(&self) -> bool {
        self.unsettled.load(Ordering::Relaxed) == 0
    }

    fn push(&self, settled: Box<Slip>) {
        let first = {
            let mut all = lock(&self.settled);
            all.push(settled);
            self.any_settled.store(true, Ordering::Release);
            all.len() == 1
        };
        // Later reports find the lane woken already: it drains them all at once.
        if first {
            self.waker.wake();
        }
    }

    /// Whether there are settled receipts to drain, without a lock.
    pub(crate) fn has_settled(&self) -> bool {
        self.any_settled.load(Ordering::Acquire)
    }

    /// Resolves once there are settled receipts to drain.
    pub(crate) async fn ready(&self) {
        std::future::poll_fn(|cx| {
            self.waker.register(cx.waker());
            if lock(&self.settled).is_empty() {
                Poll::Pending
            } else {
                Poll::Ready(())
            }
        })
        .await;
    }

    /// Calls `each` with every message whose records are now all settled, in
    /// the order their last records were settled, until it returns false.
    /// Returns whether it went through all of them.
    pub(crate) fn drain(&self, mut each: impl FnMut(Delivered) -> bool) -> bool {
        let mut drained = lock(&self.drained);
        {
            let mut settled = lock(&self.settled);
            std::mem::swap(&mut *drained, &mut *settled);
            self.any_settled.store(false, Ordering::Release);
        }
        self.unsettled.fetch_sub(drained.len(), Ordering::Relaxed);
        let mut completed = true;
        for settled in drained.iter_mut() {
            if !completed {
                continue;
            }
            let result = std::mem::replace(&mut settled.result, Ok(())).map_err(|e| *e);
            let delivered = if settled.parts <= 1 {
                Delivered {
                    offset: settled.offset,
                    outcome: settled.outcome,
                    result,
                }
            } else {
                let mut partial = lock(&self.partial);
                let entry = partial.entry(settled.offset).or_insert(Partial {
                    due: settled.parts,
                    result: Ok(()),
                });
                entry.due -= 1;
                if entry.result.is_ok() {
                    entry.result = result;
                }
                if entry.due > 0 {
                    continue;
                }
                let Partial { result, .. } =
                    partial.remove(&settled.offset).expect("entry just seen");
                Delivered {
                    offset: settled.offset,
                    outcome: settled.outcome,
                    result,
                }
            };
            completed = each(delivered);
        }
        let mut pool = lock(&self.pool);
        let room = POOLED.saturating_sub(pool.len());
        if drained.len() <= room {
            pool.append(&mut drained);
        } else {
            pool.extend(drained.drain(..room));
            drained.clear();
        }
        completed
    }
}

/// Locks `mutex`; a thread that panicked while holding it left a valid vector
/// or map behind, so its poisoning is ignored.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

const _: () = assert!(std::mem::size_of::<Slip>() <= 40);

#[cfg(test)]
mod tests {
    use super::*;

    fn drained(ledger: &Ledger) -> Vec<(i64, bool)> {
        let mut out = Vec::new();
        ledger.drain(|d| {
            out.push((d.offset, d.result.is_ok()));
            true
        });
        out
    }

    #[test]
    fn a_message_is_delivered_once_all_its_records_are() {
        let ledger = Arc::new(Ledger::default());
        let a = ledger.receipt(7, Outcome::Processed, 2);
        let b = ledger.receipt(7, Outcome::Processed, 2);
        let single = ledger.receipt(8, Outcome::DeadLettered, 1);
        assert!(!ledger.is_idle());
        a.settle(Ok(()));
        single.settle(Ok(()));
        assert_eq!(drained(&ledger), [(8, true)]);
        assert!(!ledger.is_idle());
        b.settle(Ok(()));
        assert_eq!(drained(&ledger), [(7, true)]);
        assert!(ledger.is_idle());
    }

    #[test]
    fn one_failed_record_fails_its_message_and_a_dropped_receipt_fails() {
        let ledger = Arc::new(Ledger::default());
        let a = ledger.receipt(1, Outcome::Processed, 2);
        let b = ledger.receipt(1, Outcome::Processed, 2);
        a.settle(Err(SinkError::NoTopic));
        b.settle(Ok(()));
        drop(ledger.receipt(2, Outcome::Processed, 1));
        assert_eq!(drained(&ledger), [(1, false), (2, false)]);
        assert!(ledger.is_idle());
    }

    #[test]
    fn settled_slips_are_reused_without_holding_the_ledger_or_their_results() {
        let ledger = Arc::new(Ledger::default());
        let first: Vec<_> = (0..3)
            .map(|offset| ledger.receipt(offset, Outcome::Processed, 1))
            .collect();
        let slips: Vec<*const Slip> = first
            .iter()
            .map(|r| &**r.slip.as_ref().unwrap() as *const Slip)
            .collect();
        for receipt in first {
            receipt.settle(Err(SinkError::NoTopic));
        }
        assert_eq!(drained(&ledger), [(0, false), (1, false), (2, false)]);
        assert_eq!(lock(&ledger.pool).len(), 3);
        assert_eq!(Arc::strong_count(&ledger), 1, "pooled slips hold no ledger");

        // Through a pointer, as a client carries it.
        let again = ledger.receipt(9, Outcome::DeadLettered, 1);
        assert!(slips.contains(&(&**again.slip.as_ref().unwrap() as *const Slip)));
        // SAFETY: made by `into_raw` just here and taken back once.
        let again = unsafe { Receipt::from_raw(again.into_raw()) };
        again.settle(Ok(()));
        assert_eq!(drained(&ledger), [(9, true)], "the earlier failure is gone");
        assert!(ledger.is_idle());
    }

    #[test]
    fn the_pool_keeps_at_most_its_bound() {
        let ledger = Arc::new(Ledger::default());
        let receipts: Vec<_> = (0..POOLED as i64 + 10)
            .map(|offset| ledger.receipt(offset, Outcome::Processed, 1))
            .collect();
        for receipt in receipts {
            receipt.settle(Ok(()));
        }
        assert_eq!(drained(&ledger).len(), POOLED + 10);
        assert_eq!(lock(&ledger.pool).len(), POOLED);
    }

    #[tokio::test]
    async fn the_lane_wakes_when_a_report_arrives_from_another_thread() {
        let ledger = Arc::new(Ledger::default());
        let receipts: Vec<_> = (0..100)
            .map(|offset| ledger.receipt(offset, Outcome::Processed, 1))
            .collect();
        let reporter = std::thread::spawn(move || {
            for receipt in receipts {
                receipt.settle(Ok(()));
            }
        });
        let mut seen = Vec::new();
        while seen.len() < 100 {
            tokio::time::timeout(std::time::Duration::from_secs(5), ledger.ready())
                .await
                .expect("woken by the reports");
            ledger.drain(|d| {
                seen.push(d.offset);
                true
            });
        }
        reporter.join().unwrap();
        assert_eq!(seen, (0..100).collect::<Vec<_>>());
        assert!(ledger.is_idle());
    }
}
