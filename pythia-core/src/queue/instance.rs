//! A queue connector's run once set up: the runtime, the observer, the
//! event listeners and the publisher the run made.

use std::future::Future;
use std::time::Duration;

use tokio::sync::{broadcast, watch};

use super::observe::Observer;
use crate::error::Error;
use crate::events::{Events, Listener, WorkerEvent, call_listeners};
use crate::metrics::Metrics;
use crate::runtime::{RunSummary, Runtime};
use crate::sink::Sink;
use crate::source::Source;
use crate::status::Status;
use crate::worker::Worker;

/// How long the listeners may take, after the run, to see its last events.
const LISTENERS_GRACE: Duration = Duration::from_secs(5);

/// A sink a run made from its configuration, closed at the run's end (a
/// sink given by the caller is the caller's to close).
pub trait Publisher: Send + Sync + 'static {
    /// Sends what is pending and closes the connection.
    fn close(&self) -> impl Future<Output = ()> + Send;
}

/// A worker set up on a queue connector's source `S` and sink `K`, not yet
/// running; `P` is the connector's own publisher, closed after the run when
/// the run made it.
///
/// A connector's worker type (`RabbitWorker`, say) wraps one and names its
/// source and publisher.
///
/// ```
/// use pythia_core::connector::{NoSink, Publisher, QueueInstance, Runtime, Source};
/// # fn demo<W: pythia_core::Worker, S: Source>(runtime: Runtime<W, S, NoSink>) {
/// /// A publisher with nothing to close.
/// struct Nothing;
/// impl Publisher for Nothing {
///     async fn close(&self) {}
/// }
/// let instance = QueueInstance::<W, S, NoSink, Nothing>::new(runtime, None, None);
/// let run = instance.run(std::future::pending());
/// # }
/// ```
pub struct QueueInstance<W, S, K, P> {
    runtime: Runtime<W, S, K>,
    /// The publisher the run made; `None` for a sink given by the caller.
    publisher: Option<P>,
    observer: Option<Observer>,
    listeners: Option<(broadcast::Receiver<WorkerEvent>, Vec<Listener>)>,
}

impl<W: Worker, S: Source, K: Sink, P: Publisher> QueueInstance<W, S, K, P> {
    /// Runs `runtime` with events of its own, recorded in the metrics of
    /// `observer` if there is one; closes `publisher` after the run.
    pub fn new(
        runtime: Runtime<W, S, K>,
        publisher: Option<P>,
        observer: Option<Observer>,
    ) -> Self {
        let mut runtime = runtime.with_events(Events::new());
        if let Some(observer) = &observer {
            runtime = runtime.with_metrics(observer.metrics().clone());
        }
        Self {
            runtime,
            publisher,
            observer,
            listeners: None,
        }
    }

    /// Calls `listeners` with each event of the run (subscribed now, so
    /// none is missed); none given, nothing is subscribed.
    pub fn listen(&mut self, listeners: Vec<Listener>) {
        if !listeners.is_empty() {
            self.listeners = Some((self.runtime.events().subscribe(), listeners));
        }
    }

    /// The metrics the run exports when `metrics.address` is set.
    pub fn metrics(&self) -> Option<&Metrics> {
        self.observer.as_ref().map(Observer::metrics)
    }

    /// Watches the phase and the assigned input.
    pub fn status(&self) -> watch::Receiver<Status> {
        self.runtime.status()
    }

    /// The run's events.
    pub fn events(&self) -> &Events {
        self.runtime.events()
    }

    /// Serves and monitors (with an observer), calls the listeners, runs
    /// until `shutdown` resolves or a message fails, then closes the
    /// publisher the run made and gives the listeners a moment to finish.
    ///
    /// # Errors
    ///
    /// The run's error ([`Runtime::run`]).
    pub async fn run(self, shutdown: impl Future<Output = ()> + Send) -> Result<RunSummary, Error> {
        let _observing = self.observer.map(|o| o.start(self.runtime.status()));
        let listening = self
            .listeners
            .map(|(events, listeners)| tokio::spawn(call_listeners(events, listeners)));
        let result = self.runtime.run(shutdown).await;
        if let Some(publisher) = &self.publisher {
            publisher.close().await;
        }
        if let Some(listening) = listening {
            let _ = tokio::time::timeout(LISTENERS_GRACE, listening).await;
        }
        result
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
    use std::sync::{Arc, Mutex};

    use super::*;
    use crate::config::WorkerConfig;
    use crate::sink::NoSink;
    use crate::source::{Acker, SourceEvent};
    use crate::{Context, Message, Outputs, PartitionId, Process, ProcessError};

    /// A worker that does nothing with its messages.
    struct Idle;

    impl Worker for Idle {
        const SPEC: crate::WorkerSpec = crate::WorkerSpec::UNNAMED;
        type Codec = crate::Raw;
    }

    impl Process for Idle {
        type Input = bytes::Bytes;
        type Output = ();
        async fn process(
            &self,
            _: Message<bytes::Bytes>,
            _: &Context,
        ) -> Result<Outputs<()>, ProcessError> {
            Ok(Outputs::none())
        }
    }

    /// A source assigning one partition and sending nothing more.
    struct OnePartition {
        assigned: bool,
    }

    #[derive(Clone)]
    struct NoAcks;

    impl Acker for NoAcks {
        fn ack(&self, _: &PartitionId, _: i64) {}
    }

    impl Source for OnePartition {
        type Acker = NoAcks;
        fn acker(&self) -> NoAcks {
            NoAcks
        }
        async fn next(&mut self) -> Option<SourceEvent> {
            if std::mem::replace(&mut self.assigned, true) {
                std::future::pending::<()>().await;
            }
            Some(SourceEvent::Assigned(vec![PartitionId::new("jobs", 0)]))
        }
        fn pause(&mut self, _: &[PartitionId]) {}
        fn resume(&mut self, _: &[PartitionId]) {}
        async fn close(self, _: Duration) -> Result<(), Error> {
            Ok(())
        }
    }

    #[derive(Default)]
    struct Closes(AtomicBool);

    impl Publisher for Arc<Closes> {
        async fn close(&self) {
            self.0.store(true, Ordering::SeqCst);
        }
    }

    fn instance(
        publisher: Option<Arc<Closes>>,
    ) -> QueueInstance<Idle, OnePartition, NoSink, Arc<Closes>> {
        let config = WorkerConfig::default();
        let source = OnePartition { assigned: false };
        let runtime = Runtime::new(config, "jobs", Idle, source, NoSink);
        QueueInstance::new(runtime, publisher, None)
    }

    #[tokio::test]
    async fn the_publisher_it_made_is_closed_after_the_run() {
        let closes = Arc::new(Closes::default());
        let instance = instance(Some(closes.clone()));
        assert!(instance.metrics().is_none(), "no observer, no metrics");
        instance.run(std::future::ready(())).await.unwrap();
        assert!(closes.0.load(Ordering::SeqCst));
    }

    #[tokio::test]
    async fn listeners_see_the_run_events() {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let calls = Arc::new(AtomicUsize::new(0));
        let mut instance = instance(None);
        let (log, count) = (seen.clone(), calls.clone());
        instance.listen(vec![Box::new(move |event: &WorkerEvent| {
            count.fetch_add(1, Ordering::SeqCst);
            log.lock().unwrap().push(format!("{event:?}"));
        })]);
        let mut status = instance.status();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let run = tokio::spawn(instance.run(async move {
            let _ = stopped.await;
        }));
        status
            .wait_for(|s| !s.assigned.is_empty())
            .await
            .expect("assigned");
        stop.send(()).unwrap();
        run.await.unwrap().unwrap();
        assert!(
            calls.load(Ordering::SeqCst) > 0,
            "events: {:?}",
            seen.lock().unwrap()
        );
    }
}
