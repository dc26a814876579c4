//! A lane's inbox: the runs of the partition's messages the runtime hands
//! over, taken one message at a time, in offset order.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::mpsc;

use super::LaneState;
use crate::message::Message;

type Raw = Message<Option<Bytes>>;

/// The bytes a run of messages holds: payloads and keys.
pub(crate) fn run_bytes(run: &[Raw]) -> usize {
    run.iter()
        .map(|m| m.payload().as_ref().map_or(0, Bytes::len) + m.key().map_or(0, <[u8]>::len))
        .sum()
}

/// A lane's incoming messages.
pub(super) struct Inbox {
    rx: mpsc::UnboundedReceiver<Vec<Raw>>,
    /// What is left of the run being taken.
    run: std::vec::IntoIter<Raw>,
    /// Where the bytes of runs not yet taken are counted.
    waiting: Option<Arc<LaneState>>,
}

impl Inbox {
    pub(super) fn new(rx: mpsc::UnboundedReceiver<Vec<Raw>>) -> Self {
        Self {
            rx,
            run: Vec::new().into_iter(),
            waiting: None,
        }
    }

    /// An inbox that takes each run's bytes off `state`'s waiting bytes
    /// as it starts on the run.
    pub(super) fn counting(rx: mpsc::UnboundedReceiver<Vec<Raw>>, state: Arc<LaneState>) -> Self {
        Self {
            waiting: Some(state),
            ..Self::new(rx)
        }
    }

    /// Starts on `run`.
    fn take(&mut self, run: Vec<Raw>) {
        if let Some(state) = &self.waiting {
            state.taken(run_bytes(&run));
        }
        self.run = run.into_iter();
    }

    /// Whether the current run has messages left.
    pub(super) fn has_waiting(&self) -> bool {
        self.run.len() > 0
    }

    /// A message already waiting, without waiting for one.
    pub(super) fn try_next(&mut self) -> Option<Raw> {
        loop {
            if let Some(message) = self.run.next() {
                return Some(message);
            }
            let run = self.rx.try_recv().ok()?;
            self.take(run);
        }
    }

    /// The next message; `None` once the runtime dropped the lane. Safe to
    /// cancel: a message is taken only when it is returned.
    pub(super) async fn recv(&mut self) -> Option<Raw> {
        loop {
            if let Some(message) = self.run.next() {
                return Some(message);
            }
            let run = self.rx.recv().await?;
            self.take(run);
        }
    }

    /// The next message, or `None` once `stop` resolves (checked first) or
    /// the runtime dropped the lane. Safe to cancel.
    pub(super) async fn recv_until(&mut self, stop: impl Future<Output = ()>) -> Option<Raw> {
        tokio::select! {
            biased;
            () = stop => None,
            message = self.recv() => message,
        }
    }

    /// Fills `batch` up to `size` messages: what is already here joins at
    /// once; only a batch that is still short waits for more, until `timeout`
    /// has passed or `stop` resolves.
    pub(super) async fn fill(
        &mut self,
        batch: &mut Vec<Raw>,
        size: usize,
        timeout: Duration,
        mut stop: impl Future<Output = ()> + Unpin,
    ) {
        let room = size.saturating_sub(batch.len());
        batch.extend(std::iter::from_fn(|| self.try_next()).take(room));
        if batch.len() >= size {
            return;
        }
        let deadline = tokio::time::sleep(timeout);
        tokio::pin!(deadline);
        while batch.len() < size {
            tokio::select! {
                biased;
                () = &mut stop => break,
                next = self.recv() => match next {
                    Some(message) => batch.push(message),
                    None => break,
                },
                () = &mut deadline => break,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::message::PartitionId;

    fn run(offsets: std::ops::Range<i64>) -> Vec<Raw> {
        let partition = PartitionId::new("t", 0);
        offsets
            .map(|offset| Message::new(partition.clone(), offset, None))
            .collect()
    }

    fn offsets(messages: &[Raw]) -> Vec<i64> {
        messages.iter().map(Message::offset).collect()
    }

    #[tokio::test]
    async fn a_counting_inbox_takes_a_runs_bytes_off_as_it_starts_on_it() {
        let (tx, rx) = mpsc::unbounded_channel();
        let state = Arc::new(LaneState::default());
        let mut inbox = Inbox::counting(rx, state.clone());
        let partition = PartitionId::new("t", 0);
        let first: Vec<Raw> = (0..2)
            .map(|offset| {
                Message::new(
                    partition.clone(),
                    offset,
                    Some(Bytes::from_static(b"12345")),
                )
            })
            .collect();
        let bytes = run_bytes(&first);
        assert_eq!(bytes, 10);
        state.pushed(bytes + run_bytes(&run(2..3)));
        tx.send(first).unwrap();
        tx.send(run(2..3)).unwrap();
        assert_eq!(inbox.recv().await.map(|m| m.offset()), Some(0));
        assert_eq!(
            state.waiting_bytes(),
            run_bytes(&run(2..3)),
            "the first run is taken"
        );
        assert_eq!(inbox.try_next().map(|m| m.offset()), Some(1));
        assert_eq!(inbox.try_next().map(|m| m.offset()), Some(2));
        assert_eq!(state.waiting_bytes(), 0);
    }

    #[tokio::test]
    async fn runs_are_taken_one_message_at_a_time_in_order() {
        let (tx, rx) = mpsc::unbounded_channel();
        let mut inbox = Inbox::new(rx);
        assert!(inbox.try_next().is_none(), "nothing yet");
        tx.send(run(0..2)).unwrap();
        tx.send(run(2..3)).unwrap();
        assert!(!inbox.has_waiting(), "runs are taken only when asked");
        assert_eq!(inbox.try_next().map(|m| m.offset()), Some(0));
        assert!(inbox.has_waiting(), "1 is left of the first run");
        assert_eq!(inbox.recv().await.map(|m| m.offset()), Some(1));
        assert!(!inbox.has_waiting());
        assert_eq!(inbox.recv().await.map(|m| m.offset()), Some(2));
        drop(tx);
        assert!(inbox.recv().await.is_none(), "the runtime dropped the lane");
    }

    #[tokio::test]
    async fn a_stop_ends_the_wait_before_a_waiting_message_is_taken() {
        let (tx, rx) = mpsc::unbounded_channel();
        let mut inbox = Inbox::new(rx);
        tx.send(run(0..1)).unwrap();
        assert!(inbox.recv_until(std::future::ready(())).await.is_none());
        let next = inbox.recv_until(std::future::pending()).await;
        assert_eq!(next.map(|m| m.offset()), Some(0), "still there");
    }

    #[tokio::test(start_paused = true)]
    async fn a_batch_takes_what_is_here_then_waits_until_full_or_the_timeout() {
        let (tx, rx) = mpsc::unbounded_channel();
        let mut inbox = Inbox::new(rx);
        let timeout = Duration::from_millis(50);
        tx.send(run(0..5)).unwrap();
        let mut batch = Vec::new();
        inbox
            .fill(&mut batch, 3, timeout, std::future::pending())
            .await;
        assert_eq!(offsets(&batch), [0, 1, 2], "full at once");

        let started = tokio::time::Instant::now();
        let mut batch = Vec::new();
        let late = tx.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(10)).await;
            late.send(run(5..6)).unwrap();
        });
        inbox
            .fill(&mut batch, 4, timeout, std::future::pending())
            .await;
        assert_eq!(offsets(&batch), [3, 4, 5], "joined by a late message");
        assert_eq!(started.elapsed(), timeout, "short: waited the timeout");

        let mut batch = Vec::new();
        tx.send(run(6..7)).unwrap();
        inbox
            .fill(&mut batch, 4, timeout, std::future::ready(()))
            .await;
        assert_eq!(offsets(&batch), [6], "a stop ends the wait, not the batch");
    }
}
