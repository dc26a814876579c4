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
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};

use futures::task::AtomicWaker;
use tokio::sync::oneshot;

use crate::sink::SinkError;

/// How a finished message counts in the metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Outcome {
    Processed,
    DeadLettered,
}

/// A promise to report one record's delivery.
///
/// [`Sink::send`](crate::Sink::send) gets one with each record and calls
/// [`Receipt::settle`] when the broker has confirmed or refused the record. A
/// receipt dropped unsettled counts as a failed delivery
/// ([`SinkError::Dropped`]), so an input is never acknowledged on an output
/// that was lost on the way.
///
/// ```
/// # futures::executor::block_on(async {
/// use pythia_core::{Receipt, SinkError};
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
    to: Option<To>,
}

enum To {
    /// A record of the message at `offset`, one of its `parts`.
    Lane {
        ledger: Arc<Ledger>,
        offset: i64,
        outcome: Outcome,
        parts: u32,
    },
    Channel(oneshot::Sender<Result<(), SinkError>>),
}

impl Receipt {
    /// A receipt whose settlement resolves the returned [`Confirmation`]: for
    /// sending a record outside a worker, and for testing a [`Sink`](crate::Sink).
    pub fn channel() -> (Self, Confirmation) {
        let (tx, rx) = oneshot::channel();
        let receipt = Self {
            to: Some(To::Channel(tx)),
        };
        (receipt, Confirmation(rx))
    }

    /// Reports the record as delivered (`Ok`) or not.
    pub fn settle(mut self, result: Result<(), SinkError>) {
        if let Some(to) = self.to.take() {
            to.settle(result);
        }
    }
}

impl Drop for Receipt {
    fn drop(&mut self) {
        if let Some(to) = self.to.take() {
            to.settle(Err(SinkError::Dropped));
        }
    }
}

impl std::fmt::Debug for Receipt {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut debug = f.debug_struct("Receipt");
        if let Some(To::Lane { offset, parts, .. }) = &self.to {
            debug.field("offset", offset).field("parts", parts);
        }
        debug.field("settled", &self.to.is_none()).finish()
    }
}

impl To {
    fn settle(self, result: Result<(), SinkError>) {
        match self {
            Self::Lane {
                ledger,
                offset,
                outcome,
                parts,
            } => ledger.push(Settled {
                offset,
                outcome,
                parts,
                result,
            }),
            Self::Channel(tx) => {
                let _ = tx.send(result);
            }
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

/// One settled receipt of a lane.
struct Settled {
    offset: i64,
    outcome: Outcome,
    parts: u32,
    result: Result<(), SinkError>,
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

/// Where a lane's receipts are settled.
#[derive(Default)]
pub(crate) struct Ledger {
    /// Filled by the sinks' report threads.
    settled: Mutex<Vec<Settled>>,
    /// Taken by the lane: the last run of reports, kept for its capacity.
    drained: Mutex<Vec<Settled>>,
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
        Receipt {
            to: Some(To::Lane {
                ledger: self.clone(),
                offset,
                outcome,
                parts,
            }),
        }
    }

    /// Whether every receipt handed out has been settled and drained.
    pub(crate) fn is_idle(&self) -> bool {
        self.unsettled.load(Ordering::Relaxed) == 0
    }

    fn push(&self, settled: Settled) {
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
        for settled in drained.drain(..) {
            if !completed {
                continue;
            }
            let delivered = if settled.parts <= 1 {
                Delivered {
                    offset: settled.offset,
                    outcome: settled.outcome,
                    result: settled.result,
                }
            } else {
                let mut partial = lock(&self.partial);
                let entry = partial.entry(settled.offset).or_insert(Partial {
                    due: settled.parts,
                    result: Ok(()),
                });
                entry.due -= 1;
                if entry.result.is_ok() {
                    entry.result = settled.result;
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
