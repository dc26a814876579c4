//! The traits a user implements: [`Process`], the one function a worker
//! writes, and [`Worker`], what makes it runnable. What `process` is given
//! besides the message is in `context.rs`, what it returns in `output.rs`.

use std::future::Future;
use std::sync::Arc;

use crate::codec::{Decode, Encode};
use crate::context::Context;
pub use crate::error::{ErrorKind, ProcessError};
use crate::message::Message;
use crate::output::Outputs;
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

/// A worker shared by several runs in one process: `Arc<W>` processes as
/// `W` does, so `KafkaWorker::builder(Arc::clone(&worker))` runs one more
/// instance of the same worker, state and all.
#[diagnostic::do_not_recommend]
impl<P: Process> Process for Arc<P> {
    type Input = P::Input;
    type Output = P::Output;

    fn process(
        &self,
        message: Message<Self::Input>,
        ctx: &Context,
    ) -> impl Future<Output = Result<Outputs<Self::Output>, ProcessError>> + Send {
        (**self).process(message, ctx)
    }

    fn process_batch(
        &self,
        messages: Vec<Message<Self::Input>>,
        ctx: &Context,
    ) -> impl Future<Output = Vec<Result<Outputs<Self::Output>, ProcessError>>> + Send {
        (**self).process_batch(messages, ctx)
    }
}

#[diagnostic::do_not_recommend]
impl<W: Worker> Worker for Arc<W> {
    type Codec = W::Codec;
    const SPEC: WorkerSpec = W::SPEC;
}
