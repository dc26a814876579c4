//! The `Worker` trait: the one function a user writes, and what it returns.

use std::fmt;
use std::future::Future;
use std::sync::Arc;

use bytes::Bytes;
use tokio_util::sync::CancellationToken;

use crate::codec::{Decode, Encode};
use crate::compute::CpuPool;
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

/// What the runtime tells a worker about the run it is part of.
#[derive(Clone, Debug)]
pub struct Context {
    worker: Arc<str>,
    shutdown: CancellationToken,
    cpu: CpuPool,
}

impl Context {
    pub(crate) fn new(worker: Arc<str>, shutdown: CancellationToken, cpu: CpuPool) -> Self {
        Self {
            worker,
            shutdown,
            cpu,
        }
    }

    /// A context for calling `process` directly, e.g. in a unit test of a worker.
    ///
    /// ```
    /// let ctx = pythia_core::Context::detached("billing");
    /// assert_eq!(ctx.worker(), "billing");
    /// assert!(!ctx.is_shutting_down());
    /// ```
    pub fn detached(worker: &str) -> Self {
        Self::new(worker.into(), CancellationToken::new(), CpuPool::shared())
    }

    /// Runs CPU-heavy `work` on the runtime's rayon pool (`worker.cpu_threads`
    /// threads, one per core by default) and waits for its result without
    /// blocking the tokio threads that poll the broker and answer health
    /// checks. A panic in `work` becomes this message's error (retried or
    /// dead-lettered like any other), not a dead worker.
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
    /// runtime's threads.
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

    /// The worker's name, as in logs and metrics.
    pub fn worker(&self) -> &str {
        &self.worker
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

/// Whether retrying a failed message could help.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum ErrorKind {
    /// May succeed on another attempt (a timeout, an unavailable dependency).
    Transient,
    /// Will fail every time (invalid data, a violated invariant).
    Permanent,
}

/// The error a worker's `process` returns.
///
/// Any `std::error::Error` converts into it with `?` (as a transient error);
/// [`ProcessError::permanent`] marks an error that retrying cannot fix.
///
/// ```
/// use pythia_core::ProcessError;
/// fn parse(s: &str) -> Result<u64, ProcessError> {
///     let n: u64 = s.parse()?; // ParseIntError -> ProcessError
///     if n == 0 {
///         return Err(ProcessError::permanent("amount must be positive"));
///     }
///     Ok(n)
/// }
/// assert!(parse("x").is_err());
/// assert!(parse("0").unwrap_err().is_permanent());
/// ```
pub struct ProcessError {
    kind: ErrorKind,
    inner: Box<dyn std::error::Error + Send + Sync + 'static>,
}

impl ProcessError {
    /// A transient error with this message.
    pub fn msg(message: impl fmt::Display) -> Self {
        Self {
            kind: ErrorKind::Transient,
            inner: message.to_string().into(),
        }
    }

    /// A permanent error with this message or cause.
    pub fn permanent(cause: impl Into<Box<dyn std::error::Error + Send + Sync + 'static>>) -> Self {
        Self {
            kind: ErrorKind::Permanent,
            inner: cause.into(),
        }
    }

    /// Whether the error is transient or permanent.
    pub fn kind(&self) -> ErrorKind {
        self.kind
    }

    /// Whether retrying cannot help.
    pub fn is_permanent(&self) -> bool {
        self.kind == ErrorKind::Permanent
    }

    /// The underlying error.
    pub fn into_inner(self) -> Box<dyn std::error::Error + Send + Sync + 'static> {
        self.inner
    }
}

impl<E> From<E> for ProcessError
where
    E: std::error::Error + Send + Sync + 'static,
{
    fn from(error: E) -> Self {
        Self {
            kind: ErrorKind::Transient,
            inner: Box::new(error),
        }
    }
}

impl fmt::Display for ProcessError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.inner, f)?;
        let mut source = self.inner.source();
        while let Some(cause) = source {
            write!(f, ": {cause}")?;
            source = cause.source();
        }
        Ok(())
    }
}

impl fmt::Debug for ProcessError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ProcessError")
            .field("kind", &self.kind)
            .field("error", &self.inner)
            .finish()
    }
}
