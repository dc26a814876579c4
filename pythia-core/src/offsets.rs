//! The offset tracker: which offsets are safe to commit.
//!
//! Messages of a partition are received in offset order but may finish in any
//! order (outputs still in delivery, later parallel modes). The commit point of a
//! partition is the first offset not yet done — never past a message in flight —
//! or one past the last received offset when everything is done.
//!
//! The tracker also knows which commit point the broker has *accepted* and
//! which one is *sent* and awaiting the broker's reply: a point counts as
//! committed only once accepted, and a refused one is handed out again.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;

use crate::message::PartitionId;

/// The received-but-unfinished offsets of one partition.
#[derive(Debug, Default, Clone)]
pub(crate) struct PartitionOffsets {
    /// Received offsets in order, with whether each is done. The front is never done.
    pending: VecDeque<(i64, bool)>,
    /// One past the highest offset received.
    next: Option<i64>,
    /// The highest commit point the broker accepted.
    committed: Option<i64>,
    /// The commit point handed out by [`PartitionOffsets::take_commit`] and
    /// not yet accepted or refused.
    sent: Option<i64>,
}

impl PartitionOffsets {
    /// Records that `offset` was received. Offsets must arrive in increasing order;
    /// an offset at or below one already seen (a re-fetch after a seek) restarts
    /// tracking from it.
    pub(crate) fn received(&mut self, offset: i64) {
        if self.next.is_some_and(|next| offset < next) {
            self.pending.retain(|&(o, _)| o < offset);
        }
        self.pending.push_back((offset, false));
        self.next = Some(offset + 1);
    }

    /// Records that `offset` is done. Unknown offsets are ignored.
    pub(crate) fn done(&mut self, offset: i64) {
        // In-order lanes finish the oldest offset: no search for it.
        if self.pending.front().is_some_and(|&(o, _)| o == offset) {
            self.pending.pop_front();
        } else if let Ok(i) = self.pending.binary_search_by_key(&offset, |&(o, _)| o) {
            self.pending[i].1 = true;
        }
        while self.pending.front().is_some_and(|&(_, done)| done) {
            self.pending.pop_front();
        }
    }

    /// The offset to commit: the first one not done, or one past the last received.
    pub(crate) fn commit_point(&self) -> Option<i64> {
        match self.pending.front() {
            Some(&(offset, _)) => Some(offset),
            None => self.next,
        }
    }

    /// The commit point to send, if it is neither accepted nor already sent.
    pub(crate) fn take_commit(&mut self) -> Option<i64> {
        let point = self.uncommitted()?;
        if self.sent == Some(point) {
            return None;
        }
        self.sent = Some(point);
        Some(point)
    }

    /// The commit point unless the broker already accepted it (sent or not).
    pub(crate) fn uncommitted(&self) -> Option<i64> {
        let point = self.commit_point()?;
        (self.committed != Some(point)).then_some(point)
    }

    /// Records that the broker accepted a commit of `offset`.
    pub(crate) fn accepted(&mut self, offset: i64) {
        if self.committed.is_none_or(|c| offset > c) {
            self.committed = Some(offset);
        }
        if self.sent.is_some_and(|s| s <= offset) {
            self.sent = None;
        }
    }

    /// Records that the broker refused (or never answered) a commit of
    /// `offset`, so the next `take_commit` sends the commit point again.
    pub(crate) fn refused(&mut self, offset: i64) {
        if self.sent == Some(offset) {
            self.sent = None;
        }
    }

    /// Forgets the commit handed out, so the next `take_commit` repeats it.
    pub(crate) fn forget_commit(&mut self) {
        self.sent = None;
    }

    /// How many received offsets are not yet done (or are behind one that is not).
    pub(crate) fn in_flight(&self) -> usize {
        self.pending.len()
    }
}

/// Offset trackers for every partition a member holds, shared between the
/// lanes (which mark offsets done) and the source (which commits).
#[derive(Debug, Default)]
pub struct OffsetTracker {
    partitions: Mutex<HashMap<PartitionId, PartitionOffsets>>,
    /// Where accepted commits are reported, once a run sets it.
    events: std::sync::OnceLock<crate::events::Events>,
}

impl OffsetTracker {
    /// An empty tracker.
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<PartitionId, PartitionOffsets>> {
        // A panic while holding the lock leaves the map consistent (each method
        // is a single update), so a poisoned lock is safe to reuse.
        self.partitions
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Records received offsets of one partition.
    pub fn received(&self, partition: &PartitionId, offsets: impl IntoIterator<Item = i64>) {
        let mut map = self.lock();
        let entry = match map.get_mut(partition) {
            Some(entry) => entry,
            None => map.entry(partition.clone()).or_default(),
        };
        for offset in offsets {
            entry.received(offset);
        }
    }

    /// Marks one offset done.
    pub fn done(&self, partition: &PartitionId, offset: i64) {
        if let Some(entry) = self.lock().get_mut(partition) {
            entry.done(offset);
        }
    }

    /// Marks several offsets of one partition done, under one lock.
    pub fn done_many(&self, partition: &PartitionId, offsets: &[i64]) {
        if let Some(entry) = self.lock().get_mut(partition) {
            for &offset in offsets {
                entry.done(offset);
            }
        }
    }

    /// How many of one partition's received offsets are not done yet (or
    /// are behind one that is not): what the source has handed out of it.
    pub fn in_flight(&self, partition: &PartitionId) -> usize {
        self.lock()
            .get(partition)
            .map_or(0, PartitionOffsets::in_flight)
    }

    /// The commit point of one partition.
    pub fn commit_point(&self, partition: &PartitionId) -> Option<i64> {
        self.lock().get(partition).and_then(|p| p.commit_point())
    }

    /// The commit points to send: those neither accepted by the broker nor
    /// sent and awaiting its reply, for every partition.
    pub fn take_commits(&self) -> Vec<(PartitionId, i64)> {
        self.lock()
            .iter_mut()
            .filter_map(|(p, offsets)| offsets.take_commit().map(|o| (p.clone(), o)))
            .collect()
    }

    /// Makes the next `take_commits` repeat these partitions' commit points.
    pub fn forget_commits(&self, partitions: impl IntoIterator<Item = PartitionId>) {
        let mut map = self.lock();
        for p in partitions {
            if let Some(entry) = map.get_mut(&p) {
                entry.forget_commit();
            }
        }
    }

    /// Records the broker's answer to a commit of `offset` for `partition`.
    /// Partitions no longer tracked are ignored.
    pub fn commit_answered(&self, partition: &PartitionId, offset: i64, accepted: bool) {
        if let Some(entry) = self.lock().get_mut(partition) {
            if accepted {
                entry.accepted(offset);
            } else {
                entry.refused(offset);
            }
        }
        if accepted && let Some(events) = self.events.get() {
            events.emit(|| crate::events::WorkerEvent::Committed {
                partition: partition.clone(),
                offset,
            });
        }
    }

    /// Reports each accepted commit to `events` from now on (the first call
    /// wins).
    pub fn report_to(&self, events: crate::events::Events) {
        let _ = self.events.set(events);
    }

    /// Whether any partition has a commit point the broker has not accepted.
    pub fn has_uncommitted(&self) -> bool {
        self.lock().values().any(|p| p.uncommitted().is_some())
    }

    /// Stops tracking these partitions, returning the commit points the
    /// broker has not accepted yet: what is left to commit before handing
    /// them over.
    ///
    /// Points sent and not yet answered are returned too: that commit may
    /// still fail, and this is the last chance.
    pub fn remove(&self, partitions: &[PartitionId]) -> Vec<(PartitionId, i64)> {
        let mut map = self.lock();
        partitions
            .iter()
            .filter_map(|p| Some((p.clone(), map.remove(p)?.uncommitted()?)))
            .collect()
    }

    /// Stops tracking every partition, returning the commit points the broker
    /// has not accepted yet (sent or not): for the last commit before leaving.
    pub fn remove_all(&self) -> Vec<(PartitionId, i64)> {
        self.lock()
            .drain()
            .filter_map(|(p, offsets)| Some((p, offsets.uncommitted()?)))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn commit_point_waits_for_the_first_unfinished_offset() {
        let mut p = PartitionOffsets::default();
        assert_eq!(p.commit_point(), None);
        for o in [10, 11, 12, 14] {
            p.received(o);
        }
        assert_eq!(p.commit_point(), Some(10));
        p.done(11);
        p.done(14);
        assert_eq!(p.commit_point(), Some(10));
        p.done(10);
        assert_eq!(p.commit_point(), Some(12));
        p.done(12);
        assert_eq!(p.commit_point(), Some(15), "one past the last received");
        assert_eq!(p.take_commit(), Some(15));
        assert_eq!(
            p.take_commit(),
            None,
            "a commit awaiting its answer is not repeated"
        );
        p.forget_commit();
        assert_eq!(p.take_commit(), Some(15));
    }

    #[test]
    fn a_refused_commit_is_sent_again_until_accepted() {
        let mut p = PartitionOffsets::default();
        p.received(0);
        p.done(0);
        assert_eq!(p.take_commit(), Some(1));
        assert_eq!(p.take_commit(), None, "awaiting the broker's answer");
        p.refused(1);
        assert_eq!(p.uncommitted(), Some(1), "refused is not committed");
        assert_eq!(p.take_commit(), Some(1), "refused: sent again");
        p.accepted(1);
        assert_eq!(p.uncommitted(), None);
        assert_eq!(p.take_commit(), None, "accepted: nothing to send");
    }

    #[test]
    fn answers_to_older_commits_do_not_undo_newer_ones() {
        let mut p = PartitionOffsets::default();
        p.received(0);
        p.received(1);
        p.done(0);
        assert_eq!(p.take_commit(), Some(1));
        p.done(1);
        assert_eq!(p.take_commit(), Some(2), "the point moved: send it");
        p.refused(1);
        assert_eq!(p.take_commit(), None, "2 is still awaiting its answer");
        p.accepted(2);
        p.accepted(1);
        assert_eq!(
            p.uncommitted(),
            None,
            "a late answer for 1 does not move back"
        );
    }

    #[test]
    fn refetch_from_an_earlier_offset_restarts_tracking() {
        let mut p = PartitionOffsets::default();
        for o in 0..5 {
            p.received(o);
        }
        p.done(0);
        p.received(2); // seek back to 2
        assert_eq!(p.commit_point(), Some(1));
        p.done(1);
        assert_eq!(p.commit_point(), Some(2));
        p.done(2);
        assert_eq!(p.commit_point(), Some(3));
    }

    #[test]
    fn removing_a_partition_returns_what_the_broker_has_not_accepted() {
        let tracker = OffsetTracker::new();
        let a = PartitionId::new("t", 0);
        let b = PartitionId::new("t", 1);
        let c = PartitionId::new("t", 2);
        for p in [&a, &b, &c] {
            tracker.received(p, 0..3);
            tracker.done(p, 0);
        }
        assert_eq!(tracker.take_commits().len(), 3);
        tracker.done(&a, 1);
        assert_eq!(
            tracker.take_commits(),
            vec![(a.clone(), 2)],
            "b and c did not move"
        );
        tracker.commit_answered(&c, 1, true);
        tracker.commit_answered(&b, 1, false);
        assert!(tracker.has_uncommitted());
        // A sent commit may still fail in flight: the final commit repeats
        // it; an accepted one (c) is not sent again.
        let mut removed = tracker.remove(&[a.clone(), b.clone(), c.clone()]);
        removed.sort();
        assert_eq!(removed, vec![(a.clone(), 2), (b, 1)]);
        assert!(tracker.remove_all().is_empty());
        assert_eq!(tracker.commit_point(&a), None);
        assert!(!tracker.has_uncommitted());
    }

    #[test]
    fn a_member_with_everything_committed_has_nothing_to_commit() {
        let tracker = OffsetTracker::new();
        let a = PartitionId::new("t", 0);
        tracker.received(&a, 0..2);
        tracker.done_many(&a, &[0, 1]);
        assert_eq!(tracker.take_commits(), vec![(a.clone(), 2)]);
        tracker.commit_answered(&a, 2, true);
        assert!(tracker.take_commits().is_empty());
        assert!(!tracker.has_uncommitted());
        assert!(tracker.remove_all().is_empty(), "nothing changed since");
    }

    /// Offsets received in order with gaps, and completions in any order.
    fn scenario() -> impl Strategy<Value = (Vec<i64>, Vec<usize>)> {
        prop::collection::vec(1i64..4, 1..200).prop_flat_map(|gaps| {
            let offsets: Vec<i64> = gaps
                .iter()
                .scan(0i64, |acc, g| {
                    *acc += g;
                    Some(*acc)
                })
                .collect();
            let order = Just((0..offsets.len()).collect::<Vec<_>>()).prop_shuffle();
            (Just(offsets), order)
        })
    }

    proptest! {
        #[test]
        fn commit_point_never_passes_an_unfinished_offset((offsets, order) in scenario()) {
            let mut p = PartitionOffsets::default();
            for &o in &offsets {
                p.received(o);
            }
            let mut done = vec![false; offsets.len()];
            let mut last_point = p.commit_point().unwrap();
            for &i in &order {
                p.done(offsets[i]);
                done[i] = true;
                let point = p.commit_point().unwrap();
                let first_unfinished = offsets
                    .iter()
                    .zip(&done)
                    .find(|(_, d)| !**d)
                    .map(|(o, _)| *o);
                match first_unfinished {
                    // Everything before the first unfinished offset is done, so the
                    // commit point is exactly that offset: never past it, never stuck before it.
                    Some(unfinished) => prop_assert_eq!(point, unfinished),
                    None => prop_assert_eq!(point, offsets.last().unwrap() + 1),
                }
                prop_assert!(point >= last_point, "commit point went backwards");
                last_point = point;
            }
            prop_assert_eq!(p.in_flight(), 0);
        }

        #[test]
        fn interleaved_receive_and_done_never_commit_unfinished(
            ops in prop::collection::vec((any::<bool>(), any::<prop::sample::Index>()), 1..300)
        ) {
            let mut p = PartitionOffsets::default();
            let mut next = 0i64;
            let mut unfinished: Vec<i64> = Vec::new();
            for (receive, pick) in ops {
                if receive || unfinished.is_empty() {
                    p.received(next);
                    unfinished.push(next);
                    next += 1;
                } else {
                    let o = unfinished.remove(pick.index(unfinished.len()));
                    p.done(o);
                }
                let point = p.commit_point().unwrap();
                let bound = unfinished.iter().min().copied().unwrap_or(next);
                prop_assert_eq!(point, bound);
            }
        }
    }
}
