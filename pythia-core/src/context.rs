//! What the runtime tells a worker about its run: the [`Context`] that
//! `process` gets, and the [`Identity`] of the copy of the worker it is.

use std::sync::{Arc, RwLock};

use tokio_util::sync::CancellationToken;

use crate::compute::CpuPool;
use crate::error::ProcessError;

/// What the runtime tells a worker about the run it is part of: the worker's
/// name, which copy of it this is, the CPU pool, and whether it is shutting
/// down.
///
/// Every copy of a worker has the same [`worker`](Context::worker) name; the
/// [`instance`](Context::instance) name tells them apart, and once the source
/// joined its consumer group, so does the group's [`member_id`](Context::member_id).
///
/// ```
/// use pythia_core::{Context, Message, Outputs, Process, ProcessError};
///
/// struct Audit;
///
/// impl Process for Audit {
///     type Input = String;
///     type Output = String;
///
///     async fn process(&self, msg: Message<String>, ctx: &Context) -> Result<Outputs<String>, ProcessError> {
///         // Which copy handled the message: "audit on billing-7d9f8-x2k4q-1".
///         let seen_by = format!("{} on {}", ctx.worker(), ctx.instance());
///         Ok(Outputs::one(format!("{}: {seen_by}", msg.payload())))
///     }
/// }
/// ```
#[derive(Clone, Debug)]
pub struct Context {
    worker: Arc<str>,
    identity: Identity,
    shutdown: CancellationToken,
    cpu: CpuPool,
}

impl Context {
    pub(crate) fn new(
        worker: Arc<str>,
        identity: Identity,
        shutdown: CancellationToken,
        cpu: CpuPool,
    ) -> Self {
        Self {
            worker,
            identity,
            shutdown,
            cpu,
        }
    }

    /// A context for calling `process` directly, e.g. in a unit test of a
    /// worker. Its instance is named as a run's would be by default
    /// (`<host>-<pid>`), and it has no member id.
    ///
    /// ```
    /// let ctx = pythia_core::Context::detached("billing");
    /// assert_eq!(ctx.worker(), "billing");
    /// assert!(ctx.member_id().is_none());
    /// assert!(!ctx.is_shutting_down());
    /// ```
    pub fn detached(worker: &str) -> Self {
        Self::new(
            worker.into(),
            Identity::new(&crate::config::default_instance_name()),
            CancellationToken::new(),
            CpuPool::shared(),
        )
    }

    /// Runs CPU-heavy `work` on the runtime's rayon pool (`worker.cpu_threads`
    /// threads, one per core by default) and waits for its result without
    /// blocking the tokio threads that poll the broker and answer health
    /// checks.
    ///
    /// A panic in `work` does not kill the worker: it comes back as a
    /// *permanent* [`ProcessError`] (`CPU work panicked: <message>`), since
    /// the same input would panic again. Returned from `process` (with `?`),
    /// it is not retried: the message goes to the dead-letter topic at once
    /// (`pythia.dlq.kind = permanent`), or, with
    /// `worker.dead_letter.enabled = false`, the worker stops on it with its
    /// offset uncommitted.
    ///
    /// While the pool is saturated, `process` calls wait here, the partitions'
    /// buffers fill and their fetching pauses; the consumer keeps polling.
    ///
    /// Work that has been cheaper than `worker.compute_inline_below` (10 µs by
    /// default) runs inline instead, since handing it to the pool would cost
    /// more than it saves; the estimate is kept per closure type, so per call
    /// site, and follows the work as it grows or shrinks. To spread one
    /// partition's cheap work over the cores, use batches
    /// (`worker.batch_size`, [`Process::process_batch`](crate::Process::process_batch)) with
    /// [`Context::compute_parallel`].
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), pythia_core::ProcessError> {
    /// let ctx = pythia_core::Context::detached("hasher");
    /// let data = vec![7u8; 1 << 20];
    /// let sum = ctx.compute(move || data.iter().map(|b| *b as u64).sum::<u64>()).await?;
    /// assert_eq!(sum, 7 << 20);
    /// # Ok(()) }
    /// ```
    pub async fn compute<T, F>(&self, work: F) -> Result<T, ProcessError>
    where
        F: FnOnce() -> T + Send + 'static,
        T: Send + 'static,
    {
        self.cpu.run(work).await
    }

    /// Like [`Context::compute`], with `work` running inside the pool, so rayon's
    /// parallel iterators in it (`par_iter` over a batch, say) use the
    /// runtime's threads. Always on the pool, never inline; a panic in `work`
    /// is a permanent error, as with `compute`.
    pub async fn compute_parallel<T, F>(&self, work: F) -> Result<T, ProcessError>
    where
        F: FnOnce() -> T + Send + 'static,
        T: Send + 'static,
    {
        self.cpu.install(work).await
    }

    /// The number of threads of the CPU pool.
    pub fn cpu_threads(&self) -> usize {
        self.cpu.threads()
    }

    /// The worker's name, as in logs and metrics: the same in every copy of
    /// the worker.
    pub fn worker(&self) -> &str {
        &self.worker
    }

    /// The name of this copy of the worker: `worker.instance`
    /// (`PYTHIA_WORKER__INSTANCE`) if set, else the host name and the
    /// process id, `<host>-<pid>` (in Kubernetes the host name is the pod's).
    /// Logs and the `pythia_worker_info` metric carry it too.
    ///
    /// ```
    /// let ctx = pythia_core::Context::detached("billing");
    /// assert!(ctx.instance().ends_with(&format!("-{}", std::process::id())));
    /// ```
    pub fn instance(&self) -> &str {
        self.identity.instance()
    }

    /// The id the consumer group knows this member by, once the source has
    /// joined it (`None` before, and for sources without groups). The group
    /// may give a new one when the member joins again, e.g. after it was
    /// expelled; each assignment is logged with the id of the moment.
    ///
    /// ```
    /// let ctx = pythia_core::Context::detached("billing");
    /// // In a run: Some("billing-web-1-4711-0f5c…") with the classic group
    /// // protocol (client id, then the broker's suffix), an opaque id with KIP-848.
    /// let member = ctx.member_id();
    /// assert_eq!(member, None); // a detached context joined no group
    /// ```
    pub fn member_id(&self) -> Option<Arc<str>> {
        self.identity.member_id()
    }

    /// Whether a shutdown has begun. A long handler may check this to finish early;
    /// the message being processed still completes and commits normally.
    pub fn is_shutting_down(&self) -> bool {
        self.shutdown.is_cancelled()
    }

    /// Resolves when a shutdown begins.
    pub async fn shutdown_requested(&self) {
        self.shutdown.cancelled().await
    }
}

/// Which copy of a worker a run is: its instance name and, once its source
/// joined a consumer group, the member id the group gave it.
///
/// The runtime makes one from `worker.instance`; a connector makes it
/// instead when its source reports the member id
/// ([`Runtime::with_identity`](crate::connector::Runtime::with_identity)). Cheap to
/// clone; clones share the member id.
///
/// ```
/// use pythia_core::connector::Identity;
/// let identity = Identity::new("billing-eu-1");
/// let seen_by_worker = identity.clone();
/// identity.set_member_id("billing-eu-1-0f5c");
/// assert_eq!(seen_by_worker.instance(), "billing-eu-1");
/// assert_eq!(seen_by_worker.member_id().as_deref(), Some("billing-eu-1-0f5c"));
/// ```
#[derive(Clone, Debug)]
pub struct Identity {
    instance: Arc<str>,
    member_id: Arc<RwLock<Option<Arc<str>>>>,
}

impl Identity {
    /// The identity of instance `instance`, with no member id yet.
    pub fn new(instance: &str) -> Self {
        Self {
            instance: instance.into(),
            member_id: Arc::default(),
        }
    }

    /// The instance name.
    pub fn instance(&self) -> &str {
        &self.instance
    }

    /// The member id, once set.
    pub fn member_id(&self) -> Option<Arc<str>> {
        // A panic while the lock was held cannot leave a torn Option.
        self.member_id
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Records the member id the group gave; returns whether it changed.
    pub fn set_member_id(&self, member_id: &str) -> bool {
        let mut current = self.member_id.write().unwrap_or_else(|p| p.into_inner());
        if current.as_deref() == Some(member_id) {
            return false;
        }
        *current = Some(member_id.into());
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clones_of_an_identity_share_the_member_id() {
        let identity = Identity::new("web-3-4711");
        let ctx = Context::new(
            "billing".into(),
            identity.clone(),
            CancellationToken::new(),
            CpuPool::shared(),
        );
        assert_eq!(ctx.instance(), "web-3-4711");
        assert_eq!(ctx.member_id(), None);
        assert!(identity.set_member_id("m-1"));
        assert!(!identity.set_member_id("m-1"), "unchanged");
        assert_eq!(ctx.member_id().as_deref(), Some("m-1"));
        assert!(identity.set_member_id("m-2"), "a rejoin gives a new id");
        assert_eq!(ctx.clone().member_id().as_deref(), Some("m-2"));
    }

    #[test]
    fn copies_of_a_worker_share_the_name_not_the_instance() {
        let ctx = Context::detached("billing");
        assert_eq!(ctx.worker(), "billing");
        assert_eq!(ctx.instance(), crate::config::default_instance_name());
    }

    #[tokio::test]
    async fn a_panic_in_compute_is_a_permanent_error() {
        let ctx = Context::detached("panics");
        let error = ctx
            .compute(|| -> u32 { panic!("bad input") })
            .await
            .unwrap_err();
        assert!(error.is_permanent(), "{error:?}");
        assert_eq!(error.to_string(), "CPU work panicked: bad input");
        let error = ctx
            .compute_parallel(|| -> u32 { panic!("bad batch") })
            .await
            .unwrap_err();
        assert!(error.is_permanent(), "{error:?}");
        // The pool survives its panics.
        assert_eq!(ctx.compute(|| 2 + 2).await.unwrap(), 4);
    }
}
