//! The source's side of a queue connector's consume task: the task starts
//! on the first `next`, and pausing, resuming and closing are commands to it.

use std::time::Duration;

use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

use crate::source::SourceEvent;

/// The commands every consume task takes, besides its own (acks, say).
pub trait TaskCommand: Send + 'static {
    /// Stop taking messages from the broker.
    fn pause() -> Self;
    /// Take messages again.
    fn resume() -> Self;
    /// Stop, send the acks queued before this command, give back what is
    /// not done, close the connection; then send on `done`.
    fn close(done: oneshot::Sender<()>) -> Self;
}

/// A consume task `T` not started yet, then running: the events it sends,
/// the commands it takes and whether it is paused.
///
/// A connector's [`Source`](crate::connector::Source) holds one and forwards
/// `next`, `pause`, `resume` and `close` to it; the task is spawned (with
/// the `spawn` given to [`ConsumeTask::new`]) by the first
/// [`next`](ConsumeTask::next), so nothing connects before the run starts.
///
/// ```
/// # tokio::runtime::Runtime::new().unwrap().block_on(async {
/// use std::time::Duration;
/// use pythia_core::connector::{ConsumeTask, SourceEvent, TaskCommand};
/// use tokio::sync::{mpsc, oneshot};
///
/// enum Command { Pause, Resume, Close(oneshot::Sender<()>) }
/// impl TaskCommand for Command {
///     fn pause() -> Self { Self::Pause }
///     fn resume() -> Self { Self::Resume }
///     fn close(done: oneshot::Sender<()>) -> Self { Self::Close(done) }
/// }
///
/// let (events_tx, events) = mpsc::unbounded_channel();
/// let (commands, mut commands_rx) = mpsc::unbounded_channel::<Command>();
/// let run = async move {
///     let _ = events_tx.send(SourceEvent::Assigned(Vec::new()));
///     while let Some(command) = commands_rx.recv().await {
///         if let Command::Close(done) = command {
///             let _ = done.send(());
///         }
///     }
/// };
/// let mut task = ConsumeTask::new(run, |run| tokio::spawn(run), events, commands);
/// assert!(matches!(task.next().await, Some(SourceEvent::Assigned(_))));
/// assert!(task.close(Duration::from_secs(1)).await, "closed in time");
/// # });
/// ```
pub struct ConsumeTask<T, C> {
    events: mpsc::UnboundedReceiver<SourceEvent>,
    commands: mpsc::UnboundedSender<C>,
    paused: bool,
    /// The task, until the first `next` spawns it.
    start: Option<T>,
    spawn: fn(T) -> JoinHandle<()>,
    running: Option<JoinHandle<()>>,
}

impl<T, C: TaskCommand> ConsumeTask<T, C> {
    /// `task`, to be started with `spawn`; it sends on the other end of
    /// `events` and takes from the other end of `commands`.
    pub fn new(
        task: T,
        spawn: fn(T) -> JoinHandle<()>,
        events: mpsc::UnboundedReceiver<SourceEvent>,
        commands: mpsc::UnboundedSender<C>,
    ) -> Self {
        Self {
            events,
            commands,
            paused: false,
            start: Some(task),
            spawn,
            running: None,
        }
    }

    /// The task while it is not started, to change how it will start.
    pub fn unstarted_mut(&mut self) -> Option<&mut T> {
        self.start.as_mut()
    }

    /// Where the task's commands go (an acker sends its acks there).
    pub fn commands(&self) -> &mpsc::UnboundedSender<C> {
        &self.commands
    }

    /// Whether the runtime paused the source.
    pub fn is_paused(&self) -> bool {
        self.paused
    }

    /// Starts the task if not yet started, then the next event it sends;
    /// while paused, none (the events wait in the channel, bounded by the
    /// broker's prefetch or the task's own limit).
    pub async fn next(&mut self) -> Option<SourceEvent> {
        if let Some(task) = self.start.take() {
            self.running = Some((self.spawn)(task));
        }
        if self.paused {
            std::future::pending::<()>().await;
        }
        self.events.recv().await
    }

    /// Tells the task to stop taking messages, once.
    pub fn pause(&mut self) {
        if !self.paused {
            self.paused = true;
            let _ = self.commands.send(C::pause());
        }
    }

    /// Tells a paused task to take messages again.
    pub fn resume(&mut self) {
        if self.paused {
            self.paused = false;
            let _ = self.commands.send(C::resume());
        }
    }

    /// Asks the task to close and waits for it, at most `timeout`, then
    /// stops it. `false` when the task did not answer in time (what it held
    /// is left to the broker's redelivery); `true` otherwise, and when it
    /// never started.
    pub async fn close(mut self, timeout: Duration) -> bool {
        let Some(task) = self.running.take() else {
            return true;
        };
        let (done, closed) = oneshot::channel();
        let in_time = self.commands.send(C::close(done)).is_err()
            || tokio::time::timeout(timeout, closed).await.is_ok();
        task.abort();
        in_time
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug)]
    enum Command {
        Pause,
        Resume,
        Close(oneshot::Sender<()>),
    }

    impl TaskCommand for Command {
        fn pause() -> Self {
            Self::Pause
        }
        fn resume() -> Self {
            Self::Resume
        }
        fn close(done: oneshot::Sender<()>) -> Self {
            Self::Close(done)
        }
    }

    type Parts = (
        ConsumeTask<std::future::Ready<()>, Command>,
        mpsc::UnboundedSender<SourceEvent>,
        mpsc::UnboundedReceiver<Command>,
    );

    fn idle_task() -> Parts {
        let (events_tx, events) = mpsc::unbounded_channel();
        let (commands, commands_rx) = mpsc::unbounded_channel();
        let task = ConsumeTask::new(std::future::ready(()), tokio::spawn, events, commands);
        (task, events_tx, commands_rx)
    }

    #[tokio::test]
    async fn pause_and_resume_are_sent_once_each() {
        let (mut task, _events, mut commands) = idle_task();
        task.pause();
        task.pause();
        assert!(task.is_paused());
        task.resume();
        task.resume();
        assert!(!task.is_paused());
        drop(task);
        let mut sent = Vec::new();
        while let Some(command) = commands.recv().await {
            sent.push(format!("{command:?}"));
        }
        assert_eq!(sent, ["Pause", "Resume"]);
    }

    #[tokio::test]
    async fn a_paused_task_hands_out_nothing_until_resumed() {
        let (mut task, events, _commands) = idle_task();
        events.send(SourceEvent::Assigned(Vec::new())).unwrap();
        task.pause();
        let waited = tokio::time::timeout(Duration::from_millis(50), task.next()).await;
        assert!(waited.is_err(), "nothing while paused");
        task.resume();
        assert!(matches!(task.next().await, Some(SourceEvent::Assigned(_))));
    }

    #[tokio::test]
    async fn close_of_an_unstarted_task_is_at_once() {
        let (task, _events, mut commands) = idle_task();
        assert!(task.close(Duration::from_secs(1)).await);
        assert!(commands.recv().await.is_none(), "no close sent");
    }

    #[tokio::test]
    async fn close_reports_a_task_that_does_not_answer() {
        let (mut task, _events, _commands) = idle_task();
        task.pause(); // so that `next` starts the task and then waits
        let _ = tokio::time::timeout(Duration::from_millis(10), task.next()).await;
        // `_commands` is kept and never read: the close is not answered.
        assert!(!task.close(Duration::from_millis(20)).await);
    }

    #[tokio::test]
    async fn close_waits_for_the_answer() {
        let (mut task, _events, mut commands) = idle_task();
        task.pause();
        let _ = tokio::time::timeout(Duration::from_millis(10), task.next()).await;
        tokio::spawn(async move {
            while let Some(command) = commands.recv().await {
                if let Command::Close(done) = command {
                    let _ = done.send(());
                }
            }
        });
        assert!(task.close(Duration::from_secs(5)).await);
    }
}
