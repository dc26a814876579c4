//! The handler clock: when each handler starts and ends, for the duration
//! histogram, with as few clock reads as it can.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// Times handlers with one clock read each where it can: in an in-order
/// lane, a handler that starts right after the previous one ended (no wait
/// between them) starts at that end. The lane's own work in between, well
/// under a microsecond, is a rounding error next to the histogram's smallest
/// bucket (0.5 ms), while a clock read is a few percent of a pass-through
/// message's cost.
pub(super) struct HandlerClock {
    /// Whether one handler's end may be the next one's start.
    chained: bool,
    epoch: Instant,
    /// The last handler's end, in nanoseconds since `epoch`; `UNSET` after a
    /// wait.
    last_end: AtomicU64,
}

impl HandlerClock {
    const UNSET: u64 = u64::MAX;

    pub(super) fn new(chained: bool) -> Self {
        Self {
            chained,
            epoch: Instant::now(),
            last_end: AtomicU64::new(Self::UNSET),
        }
    }

    /// When the handler about to run starts.
    pub(super) fn start(&self) -> Instant {
        // Only the lane's task uses its clock: a load and a store, rather
        // than a locked swap, take the last end.
        let last_end = self.last_end.load(Ordering::Relaxed);
        self.last_end.store(Self::UNSET, Ordering::Relaxed);
        match last_end {
            Self::UNSET => Instant::now(),
            nanos => self.epoch + Duration::from_nanos(nanos),
        }
    }

    /// A handler ended at `end`.
    pub(super) fn ended(&self, end: Instant) {
        if self.chained {
            let nanos = u64::try_from((end - self.epoch).as_nanos()).unwrap_or(Self::UNSET);
            self.last_end.store(nanos, Ordering::Relaxed);
        }
    }

    /// The lane waits or does other work: the next handler reads the clock.
    pub(super) fn break_chain(&self) {
        self.last_end.store(Self::UNSET, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_chained_handler_starts_where_the_last_one_ended_unless_the_lane_waited() {
        let clock = HandlerClock::new(true);
        let end = Instant::now() + Duration::from_millis(3);
        clock.ended(end);
        assert_eq!(clock.start(), end, "back to back: no clock read");
        // Taken once: the start after it reads the clock.
        assert!(clock.start() < end);

        clock.ended(end);
        clock.break_chain();
        assert!(clock.start() < end, "after a wait the clock is read");
    }

    #[test]
    fn an_unchained_handler_always_reads_the_clock() {
        let clock = HandlerClock::new(false);
        let end = Instant::now() + Duration::from_millis(3);
        clock.ended(end);
        assert!(clock.start() < end);
    }
}
