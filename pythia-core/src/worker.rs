//! The `Worker` trait: the one function a user writes, and what it returns.

use std::future::Future;
use std::sync::{Arc, RwLock};

use bytes::Bytes;
use tokio_util::sync::CancellationToken;

use crate::codec::{Decode, Encode};
use crate::compute::CpuPool;
pub use crate::error::{ErrorKind, ProcessError};
use crate::message::{Headers, Message};
use crate::spec::WorkerSpec;

/// The processing logic of a worker: one async function per message.
///
/// `process` runs once per message, in offset order within a partition, and
/// concurrently across partitions. What it returns is sent to the sink; the input
/// counts as done (and its offset may be committed) only when every output is
/// delivered.
///
/// A type becomes a runnable worker with [`Worker`], usually derived:
/// `#[derive(Worker)]` declares the topics, group, codec and sinks, and this
/// trait holds the logic.
///
/// ```
/// use pythia_core::{Context, Message, Outputs, Process, ProcessError, Worker, codec::Json};
///
/// #[derive(serde::Deserialize)]
/// struct Order { id: u64, amount_cents: u64 }
/// #[derive(serde::Serialize)]
/// struct Invoice { order_id: u64, total_cents: u64 }
///
/// #[derive(Worker)]
/// #[pythia(topic = "orders", output = "invoices")]
/// struct Billing;
///
/// impl Process for Billing {
///     type Input = Order;
///     type Output = Invoice;
///
///     async fn process(&self, msg: Message<Order>, _ctx: &Context) -> Result<Outputs<Invoice>, ProcessError> {
///         let order = msg.into_payload();
///         if order.amount_cents == 0 {
///             return Ok(Outputs::none()); // filter
///         }
///         Ok(Outputs::one(Invoice { order_id: order.id, total_cents: order.amount_cents }))
///     }
/// }
/// ```
#[diagnostic::on_unimplemented(
    message = "`{Self}` has no processing logic",
    label = "`{Self}` does not implement `Process`",
    note = "implement `Process` for `{Self}`: set `type Input` and `type Output` and write `async fn process(&self, msg: Message<Self::Input>, ctx: &Context) -> Result<Outputs<Self::Output>, ProcessError>`"
)]
pub trait Process: Send + Sync + 'static {
    /// The decoded input payload.
    type Input: Send + 'static;
    /// The payload of each output; `()` for a worker that produces nothing.
    type Output: Send + 'static;

    /// Processes one message and returns its outputs (none, one or many).
    fn process(
        &self,
        message: Message<Self::Input>,
        ctx: &Context,
    ) -> impl Future<Output = Result<Outputs<Self::Output>, ProcessError>> + Send;

    /// Processes a batch of one partition's messages, in offset order, and
    /// returns one result per message, in the same order. Used when
    /// `worker.batch_size` is above 1: up to that many messages, or what arrived
    /// within `worker.batch_timeout`. Each message's offset commits by its own
    /// result; a failed one is retried alone with `process`, then dead-lettered
    /// per the retry policy.
    ///
    /// The default calls `process` for each message in turn. Override it for a
    /// bulk write, or to spread CPU work over the pool with
    /// [`Context::compute_parallel`] and rayon's `par_iter`.
    fn process_batch(
        &self,
        messages: Vec<Message<Self::Input>>,
        ctx: &Context,
    ) -> impl Future<Output = Vec<Result<Outputs<Self::Output>, ProcessError>>> + Send {
        async move {
            let mut results = Vec::with_capacity(messages.len());
            for message in messages {
                results.push(self.process(message, ctx).await);
            }
            results
        }
    }
}

/// A runnable worker: its [`Process`] logic plus how its payloads are encoded and
/// what it consumes and produces by default.
///
/// Derive it (`#[derive(Worker)]`, see the [derive's documentation](derive@crate::Worker)
/// for every attribute), or implement it by hand:
///
/// ```
/// use pythia_core::{Context, Json, Message, Outputs, Process, ProcessError, Worker, WorkerSpec};
///
/// struct Audit;
///
/// impl Process for Audit {
///     type Input = serde_json::Value;
///     type Output = ();
///     async fn process(&self, msg: Message<serde_json::Value>, _: &Context) -> Result<Outputs<()>, ProcessError> {
///         println!("{}", msg.payload());
///         Ok(Outputs::none())
///     }
/// }
///
/// impl Worker for Audit {
///     type Codec = Json;
///     const SPEC: WorkerSpec = WorkerSpec::new("audit").with_topics(&["orders", "refunds"]);
/// }
/// assert_eq!(Audit::SPEC.group_or_name(), "audit");
/// ```
#[diagnostic::on_unimplemented(
    message = "`{Self}` is not a Pythia worker",
    label = "this type does not implement `pythia_core::Worker`",
    note = "add `#[derive(Worker)]` with `#[pythia(topics = [\"...\"])]` to `{Self}` and implement `Process` for it"
)]
pub trait Worker: Process {
    /// How payloads are decoded and outputs encoded: [`Json`](crate::codec::Json),
    /// [`Raw`](crate::codec::Raw), [`Utf8`](crate::codec::Utf8), or a pair `(In, Out)`.
    type Codec: Decode<Self::Input> + Encode<Self::Output>;

    /// The worker's declared name, topics, group and sinks: the defaults its
    /// configuration starts from.
    const SPEC: WorkerSpec = WorkerSpec::UNNAMED;
}

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
    /// (`worker.batch_size`, [`Process::process_batch`]) with
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
/// ([`Runtime::with_identity`](crate::Runtime::with_identity)). Cheap to
/// clone; clones share the member id.
///
/// ```
/// use pythia_core::runtime::Identity;
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

/// One output record: a value with an optional key, headers and target topic.
///
/// ```
/// use pythia_core::Output;
/// let out = Output::new(42u64).key("order-7").header("source", "billing");
/// assert_eq!(out.value(), &42);
/// ```
#[derive(Clone, Debug)]
pub struct Output<T> {
    pub(crate) value: T,
    pub(crate) key: Option<Bytes>,
    pub(crate) headers: Headers,
    pub(crate) topic: Option<Arc<str>>,
    pub(crate) sink: Option<&'static str>,
}

impl<T> Output<T> {
    /// An output carrying `value`, sent to the sink's default topic with no key.
    pub fn new(value: T) -> Self {
        Self {
            value,
            key: None,
            headers: Headers::new(),
            topic: None,
            sink: None,
        }
    }

    /// Sets the key (which also picks the output partition).
    pub fn key(mut self, key: impl Into<Bytes>) -> Self {
        self.key = Some(key.into());
        self
    }

    /// Adds a header.
    pub fn header(mut self, name: impl Into<String>, value: impl Into<Bytes>) -> Self {
        self.headers.append(name, value);
        self
    }

    /// Routes this output to the named sink `sink` (declared with
    /// `#[pythia(sinks(name = "topic"))]`; the derive also makes a constant per
    /// sink, so `Self::BILLING` is checked at compile time).
    ///
    /// ```
    /// use pythia_core::Output;
    /// let out = Output::new("invoice-7").to("billing");
    /// assert_eq!(out.sink_name(), Some("billing"));
    /// ```
    pub fn to(mut self, sink: &'static str) -> Self {
        self.sink = Some(sink);
        self
    }

    /// The named sink this output goes to, if any.
    pub fn sink_name(&self) -> Option<&'static str> {
        self.sink
    }

    /// Sends this output to `topic`, whatever sink it names.
    pub fn to_topic(mut self, topic: impl Into<Arc<str>>) -> Self {
        self.topic = Some(topic.into());
        self
    }

    /// The value.
    pub fn value(&self) -> &T {
        &self.value
    }

    /// The value, taking it out of the output.
    pub fn into_value(self) -> T {
        self.value
    }

    /// The key, if one was set.
    pub fn key_bytes(&self) -> Option<&[u8]> {
        self.key.as_deref()
    }
}

/// The outputs of one `process` call: none (a filter or a pure consumer), one, or many.
///
/// ```
/// use pythia_core::{Output, Outputs};
/// let none: Outputs<u32> = Outputs::none();
/// let one = Outputs::one(1u32);
/// let many: Outputs<u32> = vec![Output::new(1), Output::new(2).key("k")].into();
/// assert_eq!((none.len(), one.len(), many.len()), (0, 1, 2));
/// ```
#[derive(Clone, Debug)]
pub struct Outputs<T>(Repr<T>);

#[derive(Clone, Debug)]
pub(crate) enum Repr<T> {
    None,
    One(Output<T>),
    Many(Vec<Output<T>>),
}

impl<T> Outputs<T> {
    /// No output: the input is done once processed.
    pub fn none() -> Self {
        Self(Repr::None)
    }

    /// A single output with no key.
    pub fn one(value: T) -> Self {
        Self(Repr::One(Output::new(value)))
    }

    /// One output per value, with no keys.
    pub fn many(values: impl IntoIterator<Item = T>) -> Self {
        Self(Repr::Many(values.into_iter().map(Output::new).collect()))
    }

    /// The number of outputs.
    pub fn len(&self) -> usize {
        match &self.0 {
            Repr::None => 0,
            Repr::One(_) => 1,
            Repr::Many(v) => v.len(),
        }
    }

    /// Whether there are no outputs.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub(crate) fn into_repr(self) -> Repr<T> {
        self.0
    }
}

impl<T> Default for Outputs<T> {
    fn default() -> Self {
        Self::none()
    }
}

impl<T> From<Output<T>> for Outputs<T> {
    fn from(output: Output<T>) -> Self {
        Self(Repr::One(output))
    }
}

impl<T> From<Vec<Output<T>>> for Outputs<T> {
    fn from(outputs: Vec<Output<T>>) -> Self {
        Self(Repr::Many(outputs))
    }
}

impl<T> From<Option<Output<T>>> for Outputs<T> {
    fn from(output: Option<Output<T>>) -> Self {
        output.map_or_else(Self::none, Self::from)
    }
}

impl<T> FromIterator<Output<T>> for Outputs<T> {
    fn from_iter<I: IntoIterator<Item = Output<T>>>(iter: I) -> Self {
        Self(Repr::Many(iter.into_iter().collect()))
    }
}

/// The outputs one by one, in order: what a unit test of `process` checks.
///
/// ```
/// use pythia_core::{Output, Outputs};
/// let outputs: Outputs<u32> = vec![Output::new(1), Output::new(2).key("k")].into();
/// let values: Vec<u32> = outputs.into_iter().map(Output::into_value).collect();
/// assert_eq!(values, [1, 2]);
/// ```
impl<T> IntoIterator for Outputs<T> {
    type Item = Output<T>;
    type IntoIter = std::vec::IntoIter<Output<T>>;

    fn into_iter(self) -> Self::IntoIter {
        match self.0 {
            Repr::None => Vec::new().into_iter(),
            Repr::One(output) => vec![output].into_iter(),
            Repr::Many(outputs) => outputs.into_iter(),
        }
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
