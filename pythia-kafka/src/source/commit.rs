//! Offset commits whose answers come back.
//!
//! librdkafka's asynchronous `rd_kafka_commit` reports its result only to an
//! `offset_commit_cb`, which rust-rdkafka does not install, and its
//! synchronous form waits without a bound. So a commit here is sent with
//! `rd_kafka_commit_queue` on a queue of the source's own and its answer read
//! from that queue by the poller: a refused commit (a stale generation or
//! member epoch, a rebalance in progress, no coordinator) is known, counted,
//! and sent again; and a commit that must finish before something else (a
//! revoke, leaving the group) is waited for with a deadline.
//!
//! This module holds the `unsafe` code of commits: the queue handle and the
//! reading of its answers.

use std::collections::HashMap;
use std::ffi::{CStr, c_void};
use std::ptr::NonNull;
use std::time::{Duration, Instant};

use pythia_core::PartitionId;
use pythia_core::connector::OffsetTracker;
use rdkafka::bindings as rd;
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext};
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::{Offset, TopicPartitionList};

/// The broker's answer to one commit request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Answer {
    /// The number the request was sent with.
    pub(crate) id: u64,
    /// The error of the request as a whole, if any.
    pub(crate) overall: Option<RDKafkaErrorCode>,
    /// The partitions the answer names, each with the error that refused it.
    pub(crate) partitions: Vec<(PartitionId, Option<RDKafkaErrorCode>)>,
}

impl Answer {
    /// What refused `partition`: its own error, else the request's.
    pub(crate) fn error_of(&self, partition: &PartitionId) -> Option<RDKafkaErrorCode> {
        self.partitions
            .iter()
            .find(|(p, _)| p == partition)
            .and_then(|(_, error)| *error)
            .or(self.overall)
    }
}

/// Whether a refused commit may succeed if sent again later, after the
/// member caught up with its group: a decision kept apart from the loops
/// that act on it.
pub(crate) fn worth_repeating(error: RDKafkaErrorCode) -> bool {
    use RDKafkaErrorCode as Code;
    matches!(
        error,
        Code::StaleMemberEpoch
            | Code::IllegalGeneration
            | Code::RebalanceInProgress
            | Code::NotCoordinator
            | Code::CoordinatorLoadInProgress
            | Code::CoordinatorNotAvailable
            | Code::RequestTimedOut
            | Code::OperationTimedOut
            | Code::WaitingForCoordinator
            | Code::BrokerTransportFailure
            | Code::AllBrokersDown
            | Code::UnknownMemberId
    )
}

/// A queue that commit answers arrive on.
///
/// It must be dropped before the consumer that made it is destroyed.
pub(crate) struct CommitQueue {
    queue: NonNull<rd::rd_kafka_queue_t>,
    next_id: u64,
}

// SAFETY: librdkafka queues are thread-safe; the handle is only used under
// the `Mutex` of the source's context.
unsafe impl Send for CommitQueue {}

impl CommitQueue {
    /// A queue of `consumer`'s, forwarded nowhere.
    pub(crate) fn new<C: ConsumerContext>(consumer: &BaseConsumer<C>) -> Option<Self> {
        let rk = consumer.client().native_ptr();
        // SAFETY: `rk` is a live client handle.
        let queue = NonNull::new(unsafe { rd::rd_kafka_queue_new(rk) })?;
        Some(Self { queue, next_id: 1 })
    }

    /// Sends a commit of `commits` and returns the number its answer will
    /// carry. An `Err` means the request was not even sent.
    pub(crate) fn send<C: ConsumerContext>(
        &mut self,
        consumer: &BaseConsumer<C>,
        commits: &[(PartitionId, i64)],
    ) -> Result<u64, RDKafkaErrorCode> {
        let mut tpl = TopicPartitionList::with_capacity(commits.len());
        for (p, offset) in commits {
            tpl.add_partition_offset(p.topic(), p.index(), Offset::Offset(*offset))
                .map_err(|e| e.rdkafka_error_code().unwrap_or(RDKafkaErrorCode::Fail))?;
        }
        let id = self.next_id;
        self.next_id += 1;
        let rk = consumer.client().native_ptr();
        // SAFETY: `rk`, the list and the queue are live; librdkafka copies the
        // list. Without a callback, the answer is enqueued as an event that
        // carries `id` as its opaque value.
        let error = unsafe {
            rd::rd_kafka_commit_queue(
                rk,
                tpl.ptr(),
                self.queue.as_ptr(),
                None,
                id as usize as *mut c_void,
            )
        };
        match RDKafkaErrorCode::from(error) {
            RDKafkaErrorCode::NoError => Ok(id),
            code => Err(code),
        }
    }

    /// The next answer, waiting up to `timeout` for one.
    pub(crate) fn next_answer(&self, timeout: Duration) -> Option<Answer> {
        let ms = i32::try_from(timeout.as_millis()).unwrap_or(i32::MAX);
        loop {
            // SAFETY: the queue is live.
            let event = NonNull::new(unsafe { rd::rd_kafka_queue_poll(self.queue.as_ptr(), ms) })?;
            let event = Event(event);
            // SAFETY: `event` is live until dropped.
            if unsafe { rd::rd_kafka_event_type(event.0.as_ptr()) }
                != rd::RD_KAFKA_EVENT_OFFSET_COMMIT
            {
                // Nothing else is sent here; skip whatever it is.
                continue;
            }
            return Some(event.answer());
        }
    }
}

impl Drop for CommitQueue {
    fn drop(&mut self) {
        // SAFETY: releases our handle; answers still on their way keep the
        // queue itself alive until they are delivered and freed.
        unsafe { rd::rd_kafka_queue_destroy(self.queue.as_ptr()) }
    }
}

/// An event taken from the queue, destroyed when dropped.
struct Event(NonNull<rd::rd_kafka_event_t>);

impl Event {
    fn answer(&self) -> Answer {
        let event = self.0.as_ptr();
        // SAFETY: `event` is a live offset-commit event; its partition list
        // (possibly null) lives as long as the event.
        let (id, overall, list) = unsafe {
            (
                rd::rd_kafka_event_opaque(event) as usize as u64,
                RDKafkaErrorCode::from(rd::rd_kafka_event_error(event)),
                rd::rd_kafka_event_topic_partition_list(event),
            )
        };
        let mut partitions = Vec::new();
        if !list.is_null() {
            // SAFETY: `list` is a live partition list of `cnt` elements.
            let elements = unsafe {
                let list = &*list;
                let count = usize::try_from(list.cnt).unwrap_or(0);
                if list.elems.is_null() || count == 0 {
                    &[][..]
                } else {
                    std::slice::from_raw_parts(list.elems, count)
                }
            };
            for element in elements {
                if element.topic.is_null() {
                    continue;
                }
                // SAFETY: a partition's topic is a C string owned by the list.
                let topic = unsafe { CStr::from_ptr(element.topic) }.to_string_lossy();
                let error = match RDKafkaErrorCode::from(element.err) {
                    RDKafkaErrorCode::NoError => None,
                    code => Some(code),
                };
                partitions.push((PartitionId::new(&*topic, element.partition), error));
            }
        }
        Answer {
            id,
            overall: (overall != RDKafkaErrorCode::NoError).then_some(overall),
            partitions,
        }
    }
}

impl Drop for Event {
    fn drop(&mut self) {
        // SAFETY: the event is ours and destroyed once.
        unsafe { rd::rd_kafka_event_destroy(self.0.as_ptr()) }
    }
}

/// Sends the tracker's commits and applies the broker's answers to it:
/// an accepted point counts as committed, a refused one is sent again on a
/// later round. Failures are logged once per run of failures and counted.
pub(crate) struct Committer {
    queue: CommitQueue,
    /// Failed commit requests since the last accepted one.
    failing: u32,
    /// Requests sent and not yet answered: when, and what they commit.
    awaiting: HashMap<u64, (Instant, Vec<(PartitionId, i64)>)>,
    on_failure: Box<dyn Fn() + Send>,
}

/// How long an answer may take before the commit is sent again.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(30);

/// What a commit that must finish came to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Settled {
    /// The broker accepted every partition.
    Accepted,
    /// Refused or not answered by the deadline, with the last error.
    Failed(Option<RDKafkaErrorCode>),
}

impl Committer {
    /// A committer on its own queue of `consumer`'s; `on_failure` counts a
    /// failed commit request.
    pub(crate) fn new<C: ConsumerContext>(
        consumer: &BaseConsumer<C>,
        on_failure: impl Fn() + Send + 'static,
    ) -> Option<Self> {
        Some(Self {
            queue: CommitQueue::new(consumer)?,
            failing: 0,
            awaiting: HashMap::new(),
            on_failure: Box::new(on_failure),
        })
    }

    /// Applies every answer that has arrived, without waiting.
    pub(crate) fn serve(&mut self, tracker: &OffsetTracker) {
        // The poller calls this every pass: skip the queue when nothing is
        // awaited (an answer left from a request given up on is ignored
        // whenever it is read).
        if self.awaiting.is_empty() {
            return;
        }
        while let Some(answer) = self.queue.next_answer(Duration::ZERO) {
            self.apply(tracker, &answer, "interval");
        }
        // Never answered (librdkafka always answers, but this must not
        // depend on it): send the points again.
        let late: Vec<u64> = (self.awaiting.iter())
            .filter(|(_, (sent, _))| sent.elapsed() > ANSWER_TIMEOUT)
            .map(|(id, _)| *id)
            .collect();
        for id in late {
            if let Some((_, commits)) = self.awaiting.remove(&id) {
                tracing::warn!(after = ?ANSWER_TIMEOUT, ?commits, "offset commit not answered; sending it again");
                for (p, offset) in &commits {
                    tracker.commit_answered(p, *offset, false);
                }
            }
        }
    }

    /// Sends the commit points that are neither accepted nor awaiting an answer.
    pub(crate) fn commit_due<C: ConsumerContext>(
        &mut self,
        consumer: &BaseConsumer<C>,
        tracker: &OffsetTracker,
    ) {
        let commits = tracker.take_commits();
        if commits.is_empty() {
            return;
        }
        match self.queue.send(consumer, &commits) {
            Ok(id) => {
                tracing::debug!(?commits, "offsets commit sent");
                self.awaiting.insert(id, (Instant::now(), commits));
            }
            Err(error) => {
                for (p, offset) in &commits {
                    tracker.commit_answered(p, *offset, false);
                }
                self.failed(error, "interval", &commits);
            }
        }
    }

    /// Commits `commits` and waits for the answer until `deadline`, applying
    /// other answers that arrive meanwhile. `retry` is called after a refusal
    /// worth repeating, before sending again; without it, one refusal ends it.
    pub(crate) fn commit_and_wait<C: ConsumerContext>(
        &mut self,
        consumer: &BaseConsumer<C>,
        tracker: &OffsetTracker,
        commits: &[(PartitionId, i64)],
        deadline: Instant,
        reason: &str,
        mut retry: Option<&mut dyn FnMut()>,
    ) -> Settled {
        if commits.is_empty() {
            return Settled::Accepted;
        }
        let mut last_error = None;
        loop {
            let id = match self.queue.send(consumer, commits) {
                Ok(id) => {
                    self.awaiting.insert(id, (Instant::now(), commits.to_vec()));
                    id
                }
                Err(error) => {
                    self.failed(error, reason, commits);
                    return Settled::Failed(Some(error));
                }
            };
            let answer = loop {
                let left = deadline.saturating_duration_since(Instant::now());
                match self.queue.next_answer(left.min(Duration::from_millis(100))) {
                    Some(answer) if answer.id == id => break Some(answer),
                    Some(other) => {
                        self.apply(tracker, &other, "interval");
                    }
                    None if left.is_zero() => break None,
                    None => {}
                }
            };
            let Some(answer) = answer else {
                self.awaiting.remove(&id);
                tracing::warn!(
                    reason,
                    ?commits,
                    "offset commit not answered before the deadline"
                );
                return Settled::Failed(last_error);
            };
            let error = self.apply(tracker, &answer, reason);
            let Some(error) = error else {
                tracing::info!(reason, ?commits, "offsets committed");
                return Settled::Accepted;
            };
            last_error = Some(error);
            match retry.as_mut() {
                Some(retry) if worth_repeating(error) && Instant::now() < deadline => retry(),
                _ => return Settled::Failed(last_error),
            }
        }
    }

    /// Applies one answer to what its request committed; returns the first
    /// error that refused a partition, if any.
    fn apply(
        &mut self,
        tracker: &OffsetTracker,
        answer: &Answer,
        reason: &str,
    ) -> Option<RDKafkaErrorCode> {
        let (_, commits) = self.awaiting.remove(&answer.id)?;
        let mut error = None;
        for (p, offset) in &commits {
            let refused = answer.error_of(p);
            tracker.commit_answered(p, *offset, refused.is_none());
            error = error.or(refused);
        }
        match error {
            None => {
                if self.failing > 0 {
                    tracing::info!(
                        failed = self.failing,
                        "offset commits accepted again after failures"
                    );
                    self.failing = 0;
                }
            }
            Some(error) => self.failed(error, reason, &commits),
        }
        error
    }

    fn failed(&mut self, error: RDKafkaErrorCode, reason: &str, commits: &[(PartitionId, i64)]) {
        (self.on_failure)();
        self.failing += 1;
        let retried = if worth_repeating(error) {
            "will retry"
        } else {
            "will retry; this error is unlikely to pass by itself"
        };
        // A failed revoke or final commit means duplicates for the next
        // owner: always worth a warning. Interval commits are retried, so a
        // run of their failures is logged once.
        if self.failing == 1 || reason != "interval" {
            tracing::warn!(
                code = ?error,
                %error,
                reason,
                ?commits,
                "offset commit failed; {retried}"
            );
        } else {
            tracing::debug!(code = ?error, reason, failing = self.failing, "offset commit failed again");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refusals_of_a_moving_group_are_worth_repeating_others_are_not() {
        use RDKafkaErrorCode as Code;
        let table = [
            (Code::IllegalGeneration, true),
            (Code::StaleMemberEpoch, true),
            (Code::RebalanceInProgress, true),
            (Code::NotCoordinator, true),
            (Code::CoordinatorNotAvailable, true),
            (Code::RequestTimedOut, true),
            (Code::UnknownMemberId, true),
            (Code::BrokerTransportFailure, true),
            (Code::GroupAuthorizationFailed, false),
            (Code::TopicAuthorizationFailed, false),
            (Code::OffsetMetadataTooLarge, false),
            (Code::InvalidCommitOffsetSize, false),
        ];
        for (code, expected) in table {
            assert_eq!(worth_repeating(code), expected, "{code:?}");
        }
    }

    #[test]
    fn a_partition_is_refused_by_its_own_error_or_the_requests() {
        let (a, b, c) = (
            PartitionId::new("t", 0),
            PartitionId::new("t", 1),
            PartitionId::new("t", 2),
        );
        let partial = Answer {
            id: 1,
            overall: None,
            partitions: vec![
                (a.clone(), None),
                (b.clone(), Some(RDKafkaErrorCode::IllegalGeneration)),
            ],
        };
        assert_eq!(partial.error_of(&a), None);
        assert_eq!(
            partial.error_of(&b),
            Some(RDKafkaErrorCode::IllegalGeneration)
        );
        assert_eq!(partial.error_of(&c), None, "not named, not refused");
        let whole = Answer {
            id: 2,
            overall: Some(RDKafkaErrorCode::RebalanceInProgress),
            partitions: Vec::new(),
        };
        assert_eq!(
            whole.error_of(&c),
            Some(RDKafkaErrorCode::RebalanceInProgress),
            "a refused request refuses every partition it sent"
        );
    }
}
