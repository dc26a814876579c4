//! The runtime: routes a source's messages into per-partition lanes, applies
//! backpressure by pausing partitions, and drives rebalances and shutdown.

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use futures::StreamExt;
use futures::stream::FuturesUnordered;
use tokio::sync::{Notify, Semaphore, mpsc, watch};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::compute::CpuPool;
use crate::config::WorkerConfig;
use crate::context::Context;
use crate::error::Error;
use crate::events::{Events, WorkerEvent};
use crate::lane::{FailurePolicy, Lane, Shared, run_bytes};
use crate::message::PartitionId;
use crate::metrics::Metrics;
use crate::sink::Sink;
use crate::source::{Revocation, Source, SourceEvent};
use crate::worker::Worker;

pub use crate::context::Identity;
use crate::status::{Phase, Status};

/// What a finished run did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct RunSummary {
    /// Messages processed and acknowledged (outputs delivered).
    pub processed: u64,
    /// Messages still in flight when a drain deadline passed; they are not
    /// committed and will be delivered again.
    pub abandoned: usize,
}

/// A worker bound to a source and a sink.
///
/// Connectors build it (see `pythia_kafka::KafkaWorker::builder`); use it directly to run a
/// worker on a source of your own.
pub struct Runtime<W, S, K> {
    config: WorkerConfig,
    name: Arc<str>,
    worker: Arc<W>,
    source: S,
    sink: Arc<K>,
    status: watch::Sender<Status>,
    metrics: Option<Metrics>,
    identity: Identity,
    events: Events,
}

impl<W: Worker, S: Source, K: Sink> Runtime<W, S, K> {
    /// Binds `worker` to `source` and `sink`. `name` labels logs and metrics.
    pub fn new(config: WorkerConfig, name: &str, worker: W, source: S, sink: K) -> Self {
        Self::with_shared(config, name, Arc::new(worker), source, Arc::new(sink))
    }

    /// Like [`Runtime::new`] with a worker and sink shared by several runtimes.
    pub fn with_shared(
        config: WorkerConfig,
        name: &str,
        worker: Arc<W>,
        source: S,
        sink: Arc<K>,
    ) -> Self {
        Self {
            identity: Identity::new(&config.instance_name()),
            config,
            name: name.into(),
            worker,
            source,
            sink,
            status: watch::Sender::new(Status::default()),
            metrics: None,
            events: Events::new(),
        }
    }

    /// Records message counts, processing time and in-flight messages in
    /// `metrics` (see [`crate::metrics`]).
    ///
    /// ```
    /// # fn demo<W: pythia_core::Worker, S: pythia_core::connector::Source, K: pythia_core::connector::Sink>(runtime: pythia_core::connector::Runtime<W, S, K>) {
    /// let metrics = pythia_core::Metrics::new();
    /// let runtime = runtime.with_metrics(metrics.clone());
    /// # }
    /// ```
    pub fn with_metrics(mut self, metrics: Metrics) -> Self {
        self.metrics = Some(metrics);
        self
    }

    /// Runs as `identity` rather than as an identity named after
    /// `worker.instance`: a source holding a clone of it records there the
    /// member id its group gives, for [`Context::member_id`] and the
    /// assignment logs.
    ///
    /// ```
    /// use pythia_core::connector::{Identity, Runtime};
    /// # fn demo<W: pythia_core::Worker, S: pythia_core::connector::Source, K: pythia_core::connector::Sink>(runtime: Runtime<W, S, K>) {
    /// let identity = Identity::new("billing-eu-1");
    /// let runtime = runtime.with_identity(identity.clone());
    /// // The source, once it has joined: identity.set_member_id(...)
    /// # }
    /// ```
    pub fn with_identity(mut self, identity: Identity) -> Self {
        self.identity = identity;
        self
    }

    /// Sends the run's events to `events` (a source holding a clone of it
    /// reports commits there) rather than to events of its own.
    pub fn with_events(mut self, events: Events) -> Self {
        self.events = events;
        self
    }

    /// The run's events ([`WorkerEvent`]): subscribe
    /// before running to see them all.
    ///
    /// ```
    /// # fn demo<W: pythia_core::Worker, S: pythia_core::connector::Source, K: pythia_core::connector::Sink>(runtime: pythia_core::connector::Runtime<W, S, K>) {
    /// let mut events = runtime.events().subscribe();
    /// tokio::spawn(async move {
    ///     while let Ok(event) = events.recv().await {
    ///         println!("{event:?}");
    ///     }
    /// });
    /// # }
    /// ```
    pub fn events(&self) -> &Events {
        &self.events
    }

    /// Watches the run's phase and assignment, e.g. for readiness checks.
    ///
    /// ```
    /// use pythia_core::Phase;
    /// use pythia_core::connector::Runtime;
    /// # fn demo<W: pythia_core::Worker, S: pythia_core::connector::Source, K: pythia_core::connector::Sink>(runtime: &Runtime<W, S, K>) {
    /// let status = runtime.status();
    /// assert_eq!(status.borrow().phase, Phase::Starting);
    /// # }
    /// ```
    pub fn status(&self) -> watch::Receiver<Status> {
        self.status.subscribe()
    }

    /// Runs until `shutdown` resolves, the source ends, or a message fails.
    ///
    /// Then it stops fetching, lets in-flight messages finish (up to
    /// `shutdown_timeout`), commits, and leaves. A failed message is returned as
    /// the error; nothing at or after it in its partition is committed.
    pub async fn run(self, shutdown: impl Future<Output = ()> + Send) -> Result<RunSummary, Error> {
        self.config.validate()?;
        let Self {
            config,
            name,
            worker,
            mut source,
            sink,
            status,
            metrics,
            identity,
            events,
        } = self;
        let stopping = CancellationToken::new();
        let cpu = CpuPool::new(config.cpu_threads, &name, config.compute_inline_below)
            .unwrap_or_else(|error| {
                tracing::warn!(%error, "cannot start the CPU pool; using the shared one");
                CpuPool::shared()
            });
        let (failures, mut failed) = mpsc::unbounded_channel();
        let shared = Arc::new(Shared {
            worker,
            sink,
            acker: source.acker(),
            permits: Arc::new(Semaphore::new(config.max_in_flight)),
            ctx: Context::new(name.clone(), identity.clone(), stopping.clone(), cpu),
            wake: Arc::new(Notify::new()),
            resume_at: config.partition_buffer / 2,
            resume_bytes: config.partition_buffer_bytes / 2,
            failures,
            processed: Default::default(),
            policy: FailurePolicy {
                retry: config.retry.clone(),
                dead_letter: config
                    .dead_letter
                    .enabled
                    .then(|| config.dead_letter.clone()),
                max_message_bytes: config.max_message_bytes,
                ordering: config.ordering,
                batch_size: config.batch_size,
                batch_timeout: config.batch_timeout,
            },
            metrics,
            events: events.clone(),
        });
        if let Some(metrics) = &shared.metrics {
            metrics.worker_started(&name, identity.instance());
            metrics.watch_in_flight(&name, &shared.permits, config.max_in_flight);
        }
        let mut lanes: HashMap<PartitionId, Lane> = HashMap::new();
        let mut failure = None;
        let mut abandoned = 0;
        tracing::info!(
            worker = %name,
            instance = %identity.instance(),
            max_in_flight = config.max_in_flight,
            "worker started"
        );
        let update = |f: &dyn Fn(&mut Status)| status.send_modify(|s| f(s));
        tokio::pin!(shutdown);

        loop {
            tokio::select! {
                biased;
                Some(error) = failed.recv() => {
                    failure = Some(error);
                    break;
                }
                () = &mut shutdown => break,
                () = shared.wake.notified() => resume_drained(&mut source, &lanes, &shared),
                event = source.next() => match event {
                    None => {
                        tracing::info!("source closed");
                        break;
                    }
                    Some(SourceEvent::Messages(batch)) => {
                        let to_pause = dispatch(&mut lanes, batch, &shared, (config.partition_buffer, config.partition_buffer_bytes));
                        if !to_pause.is_empty() {
                            tracing::debug!(partitions = ?to_pause, "partition buffers full, pausing fetch");
                            source.pause(&to_pause);
                        }
                    }
                    Some(SourceEvent::Assigned(partitions)) if partitions.is_empty() => {
                        // In the group with nothing new: the first time, the
                        // member stands by (more members than partitions).
                        if status.borrow().phase == Phase::Starting {
                            match identity.member_id() {
                                Some(member_id) => tracing::info!(%member_id, "joined the group with no partitions assigned; standing by"),
                                None => tracing::info!("joined the group with no partitions assigned; standing by"),
                            }
                            update(&|s| s.phase = Phase::Running);
                        }
                    }
                    Some(SourceEvent::Assigned(partitions)) => {
                        // The source records the member id before it reports the assignment.
                        match identity.member_id() {
                            Some(member_id) => tracing::info!(?partitions, %member_id, "partitions assigned"),
                            None => tracing::info!(?partitions, "partitions assigned"),
                        }
                        events.emit(|| WorkerEvent::Assigned { partitions: partitions.clone() });
                        update(&|s| {
                            s.phase = Phase::Running;
                            s.assigned.extend(partitions.iter().cloned());
                            s.assigned.sort();
                            s.assigned.dedup();
                        });
                    }
                    Some(SourceEvent::Revoked(revocation)) => {
                        events.emit(|| WorkerEvent::Revoked { partitions: revocation.partitions().to_vec() });
                        update(&|s| s.assigned.retain(|p| !revocation.partitions().contains(p)));
                        abandoned += revoke(&mut lanes, revocation, config.revoke_timeout).await;
                    }
                    Some(SourceEvent::Lost(partitions)) => {
                        tracing::warn!(?partitions, "partitions lost; abandoning their in-flight messages");
                        events.emit(|| WorkerEvent::Revoked { partitions: partitions.clone() });
                        update(&|s| s.assigned.retain(|p| !partitions.contains(p)));
                        for p in &partitions {
                            if let Some(lane) = lanes.remove(p) {
                                lane.abort().await;
                            }
                        }
                    }
                },
            }
        }

        // Drain: stop fetching, let lanes finish what they started, commit, leave.
        // One deadline covers it all; the last part of it is kept for the commit.
        update(&|s| s.phase = Phase::Draining);
        stopping.cancel();
        let started = Instant::now();
        let end = started + config.shutdown_timeout;
        let reserve = (config.shutdown_timeout / 5).min(Duration::from_secs(5));
        let partitions: Vec<PartitionId> = lanes.keys().cloned().collect();
        source.pause(&partitions);
        let in_flight: usize = lanes.values().map(|l| l.state.held()).sum();
        tracing::info!(in_flight, timeout = ?config.shutdown_timeout, "draining");
        abandoned += drain(&mut source, lanes, end - reserve).await;
        if let Some(error) = &failure {
            tracing::error!(%error, "worker stopped by a failed message");
        }
        let closed = source
            .close(end.saturating_duration_since(Instant::now()).max(reserve))
            .await;
        let summary = RunSummary {
            processed: shared.processed.load(Ordering::Relaxed),
            abandoned,
        };
        tracing::info!(processed = summary.processed, abandoned, "worker stopped");
        update(&|s| {
            s.phase = Phase::Stopped;
            s.assigned.clear();
        });
        let result = match (failure, closed) {
            (Some(error), _) => Err(error),
            (None, Err(error)) => Err(error),
            (None, Ok(())) => Ok(summary),
        };
        if let Err(error) = &result {
            events.emit(|| WorkerEvent::Failed {
                error: error.to_string(),
            });
        }
        result
    }
}

/// Routes messages to their partition's lane, starting lanes as needed, one
/// run of a partition's messages at a time. Returns the partitions whose
/// buffers just filled up, in messages or in bytes (`buffer`).
fn dispatch<W: Worker, K: Sink, A: crate::source::Acker>(
    lanes: &mut HashMap<PartitionId, Lane>,
    batch: Vec<crate::message::Message<Option<bytes::Bytes>>>,
    shared: &Arc<Shared<W, K, A>>,
    (buffer, buffer_bytes): (usize, usize),
) -> Vec<PartitionId> {
    let mut to_pause = Vec::new();
    for run in runs(batch) {
        let partition = run[0].partition_id().clone();
        let lane = lanes
            .entry(partition.clone())
            .or_insert_with(|| Lane::spawn(partition.clone(), shared.clone()));
        let bytes = run_bytes(&run);
        if lane
            .state
            .would_fill(run.len(), bytes, (buffer, buffer_bytes))
            && !lane.state.is_paused()
        {
            lane.state.set_paused(true);
            to_pause.push(partition);
        }
        lane.push(run, bytes);
    }
    to_pause
}

/// The batch's runs of one partition's messages, in order, each split off
/// the batch in place: a batch of one partition, as a queue's always is,
/// is one run in the batch's own allocation.
fn runs<T>(
    mut rest: Vec<crate::message::Message<T>>,
) -> impl Iterator<Item = Vec<crate::message::Message<T>>> {
    std::iter::from_fn(move || {
        let partition = rest.first()?.partition_id();
        let end = rest
            .iter()
            .position(|m| m.partition_id() != partition)
            .unwrap_or(rest.len());
        let after = rest.split_off(end);
        Some(std::mem::replace(&mut rest, after))
    })
}

/// Resumes paused partitions whose lanes have drained to the resume mark.
fn resume_drained<S: Source, W, K, A>(
    source: &mut S,
    lanes: &HashMap<PartitionId, Lane>,
    shared: &Shared<W, K, A>,
) {
    let ready: Vec<PartitionId> = lanes
        .iter()
        .filter(|(_, lane)| {
            lane.state.is_paused() && lane.state.may_resume(shared.resume_at, shared.resume_bytes)
        })
        .map(|(p, lane)| {
            lane.state.set_paused(false);
            p.clone()
        })
        .collect();
    if !ready.is_empty() {
        tracing::debug!(partitions = ?ready, "resuming fetch");
        source.resume(&ready);
    }
}

/// Stops the revoked partitions' lanes, waits for them, then lets the source go on.
async fn revoke(
    lanes: &mut HashMap<PartitionId, Lane>,
    revocation: Revocation,
    timeout: Duration,
) -> usize {
    let revoked: Vec<Lane> = revocation
        .partitions()
        .iter()
        .filter_map(|p| lanes.remove(p))
        .collect();
    tracing::info!(partitions = ?revocation.partitions(), "partitions revoked, draining");
    let abandoned = finish_lanes(revoked.into_iter(), timeout).await;
    revocation.drained();
    abandoned
}

/// Finishes every lane by `deadline` while still answering the source: a
/// rebalance during the drain gets its revocation released as soon as the
/// revoked partitions' lanes are done, so no partition is handed over while its
/// lane still runs. Messages arriving meanwhile are not started (and so not
/// committed). Returns the number of messages abandoned at the deadline.
async fn drain<S: Source>(
    source: &mut S,
    lanes: HashMap<PartitionId, Lane>,
    deadline: Instant,
) -> usize {
    for lane in lanes.values() {
        lane.stop();
    }
    let mut running: HashSet<PartitionId> = lanes.keys().cloned().collect();
    let mut finishing: FuturesUnordered<_> = lanes
        .into_iter()
        .map(|(partition, lane)| async move {
            let state = lane.state.clone();
            let in_time = lane.finish(deadline).await;
            (partition, if in_time { 0 } else { state.held() })
        })
        .collect();
    let mut revocations: Vec<Revocation> = Vec::new();
    let mut abandoned = 0;
    let mut source_open = true;
    while !finishing.is_empty() {
        tokio::select! {
            Some((partition, lost)) = finishing.next() => {
                running.remove(&partition);
                abandoned += lost;
                let (ready, waiting): (Vec<_>, Vec<_>) = revocations
                    .into_iter()
                    .partition(|r| r.partitions().iter().all(|p| !running.contains(p)));
                ready.into_iter().for_each(Revocation::drained);
                revocations = waiting;
            }
            event = source.next(), if source_open => match event {
                None => source_open = false,
                Some(SourceEvent::Revoked(revocation)) => {
                    tracing::info!(
                        partitions = ?revocation.partitions(),
                        "partitions revoked while draining; handing them over once their lanes finish"
                    );
                    if revocation.partitions().iter().any(|p| running.contains(p)) {
                        revocations.push(revocation);
                    } else {
                        revocation.drained();
                    }
                }
                Some(_) => {}
            },
        }
    }
    revocations.into_iter().for_each(Revocation::drained);
    if abandoned > 0 {
        tracing::warn!(
            abandoned,
            "in-flight messages did not finish before the shutdown deadline; they are not committed and will be redelivered"
        );
    }
    abandoned
}

/// Stops lanes and waits for all of them up to `timeout`. Returns the number
/// of messages abandoned in lanes that did not finish.
async fn finish_lanes(lanes: impl Iterator<Item = Lane>, timeout: Duration) -> usize {
    let deadline = Instant::now() + timeout;
    let lanes: Vec<Lane> = lanes.collect();
    for lane in &lanes {
        lane.stop();
    }
    let mut abandoned = 0;
    for lane in lanes {
        let state = lane.state.clone();
        if !lane.finish(deadline).await {
            abandoned += state.held();
        }
    }
    if abandoned > 0 {
        tracing::warn!(
            abandoned,
            "in-flight messages did not finish before the deadline; they are not committed and will be redelivered"
        );
    }
    abandoned
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::message::Message;

    fn at(topic: &str, index: i32, offset: i64) -> Message<()> {
        Message::new(PartitionId::new(topic, index), offset, ())
    }

    #[test]
    fn a_batch_splits_into_runs_of_one_partition_in_order() {
        let batch = vec![
            at("a", 0, 0),
            at("a", 0, 1),
            at("b", 0, 7),
            at("a", 1, 2),
            at("a", 0, 3),
        ];
        let runs: Vec<Vec<(String, i32, i64)>> = runs(batch)
            .map(|run| {
                run.iter()
                    .map(|m| {
                        (
                            m.partition_id().topic().to_owned(),
                            m.partition_id().index(),
                            m.offset(),
                        )
                    })
                    .collect()
            })
            .collect();
        let run = |topic: &str, index, offsets: &[i64]| {
            offsets
                .iter()
                .map(|&o| (topic.to_owned(), index, o))
                .collect::<Vec<_>>()
        };
        assert_eq!(
            runs,
            [
                run("a", 0, &[0, 1]),
                run("b", 0, &[7]),
                run("a", 1, &[2]),
                run("a", 0, &[3])
            ]
        );
        assert_eq!(super::runs(Vec::<Message<()>>::new()).count(), 0);
    }

    #[test]
    fn a_batch_of_one_partition_is_one_run_in_its_own_allocation() {
        let batch: Vec<_> = (0..10).map(|offset| at("jobs", 0, offset)).collect();
        let buffer = batch.as_ptr();
        let mut all = runs(batch);
        let run = all.next().unwrap();
        assert_eq!(run.len(), 10);
        assert_eq!(run.as_ptr(), buffer, "not copied");
        assert!(all.next().is_none());
    }
}
