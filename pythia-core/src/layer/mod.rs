//! Middleware around `process`: layers that see each message before the
//! worker does, and each result after.
//!
//! A [`Layer`] wraps a worker's [`Process`]: it gets the message, the
//! context and [`Next`], the rest of the chain, and decides whether and how
//! to call it. [`LayerExt::layer`] wraps a worker; the result is a worker
//! again (same declaration, same codec), so it runs like any other:
//!
//! ```
//! use std::time::Duration;
//! use pythia_core::layer::{CircuitBreaker, LayerExt, Timeout};
//! use pythia_core::{Context, Message, Outputs, Process, ProcessError, Worker};
//!
//! #[derive(Worker)]
//! #[pythia(topic = "orders", codec = "utf8")]
//! struct Billing;
//!
//! impl Process for Billing {
//!     type Input = String;
//!     type Output = String;
//!     async fn process(&self, msg: Message<String>, _: &Context) -> Result<Outputs<String>, ProcessError> {
//!         Ok(Outputs::one(msg.into_payload()))
//!     }
//! }
//!
//! // The layer added last runs first: the breaker sees each message before
//! // the timeout does, and the timeout's errors count as failures.
//! let worker = Billing
//!     .layer(Timeout::new(Duration::from_secs(5)))
//!     .layer(CircuitBreaker::new(5, Duration::from_secs(30)));
//! # fn runnable<W: Worker>(_: &W) {}
//! # runnable(&worker);
//! ```
//!
//! **Order.** `worker.layer(a).layer(b)` runs `b`, which calls `a`, which
//! calls the worker's `process`. The outermost layer sees every message and
//! every result, including the errors the inner layers make.
//!
//! **What a layer wraps.** Each call of `process`, attempts included: a
//! message retried three times passes through the layers three times. A
//! layer's error is the message's error, retried or dead-lettered by the
//! policy like any other. `process_batch` (`worker.batch_size` > 1) goes to
//! the worker as is; a message of a batch that fails is retried alone through
//! `process`, and so through the layers.
//!
//! **Cost.** A worker without layers is the worker itself: nothing is added
//! to its path. Each layer is a generic wrapper, no boxing and no dynamic
//! dispatch.
//!
//! The layers here: [`Timeout`] (a deadline per attempt), [`CircuitBreaker`]
//! (stop calling a failing dependency for a while), [`Idempotent`] (skip a
//! message whose key is already done, with a pluggable [`IdempotencyStore`])
//! and [`Observe`] (a callback per attempt, for metrics of your own). Write
//! your own by implementing [`Layer`].

use std::future::Future;

use crate::context::Context;
use crate::error::ProcessError;
use crate::message::Message;
use crate::output::Outputs;
use crate::worker::{Process, Worker};

mod circuit;
mod idempotent;
mod observe;
mod timeout;

pub use circuit::CircuitBreaker;
pub use idempotent::{IdempotencyStore, Idempotent, MemoryStore};
pub use observe::{Attempted, Observe};
pub use timeout::Timeout;

/// Middleware around a worker's `process`.
///
/// ```
/// use pythia_core::layer::{Layer, Next};
/// use pythia_core::{Context, Message, Outputs, Process, ProcessError};
///
/// /// Logs each message's partition and offset, and how it went.
/// struct LogEach;
///
/// impl<P: Process> Layer<P> for LogEach {
///     async fn handle(&self, msg: Message<P::Input>, ctx: &Context, next: Next<'_, P>)
///         -> Result<Outputs<P::Output>, ProcessError>
///     {
///         let place = format!("{}/{}@{}", msg.topic(), msg.partition(), msg.offset());
///         let result = next.run(msg, ctx).await;
///         tracing::info!(%place, ok = result.is_ok(), "processed");
///         result
///     }
/// }
/// ```
pub trait Layer<P: Process>: Send + Sync + 'static {
    /// Handles one attempt at a message: usually does something, calls
    /// `next.run(msg, ctx)`, and does something with its result. Not calling
    /// `next` skips the worker for this attempt.
    fn handle(
        &self,
        msg: Message<P::Input>,
        ctx: &Context,
        next: Next<'_, P>,
    ) -> impl Future<Output = Result<Outputs<P::Output>, ProcessError>> + Send;
}

/// The rest of the chain: the inner layers, then the worker.
pub struct Next<'a, P> {
    inner: &'a P,
}

impl<P: Process> Next<'_, P> {
    /// Calls the rest of the chain with `msg`.
    pub async fn run(
        self,
        msg: Message<P::Input>,
        ctx: &Context,
    ) -> Result<Outputs<P::Output>, ProcessError> {
        self.inner.process(msg, ctx).await
    }
}

/// A worker wrapped in a layer: a worker itself, with the inner worker's
/// declaration and codec.
pub struct Layered<P, L> {
    inner: P,
    layer: L,
}

impl<P, L> Layered<P, L> {
    /// The wrapped worker.
    pub fn inner(&self) -> &P {
        &self.inner
    }

    /// The layer, e.g. to ask a [`CircuitBreaker`] whether it is open.
    pub fn get_layer(&self) -> &L {
        &self.layer
    }
}

#[diagnostic::do_not_recommend]
impl<P: Process, L: Layer<P>> Process for Layered<P, L> {
    type Input = P::Input;
    type Output = P::Output;

    fn process(
        &self,
        message: Message<Self::Input>,
        ctx: &Context,
    ) -> impl Future<Output = Result<Outputs<Self::Output>, ProcessError>> + Send {
        self.layer.handle(message, ctx, Next { inner: &self.inner })
    }

    fn process_batch(
        &self,
        messages: Vec<Message<Self::Input>>,
        ctx: &Context,
    ) -> impl Future<Output = Vec<Result<Outputs<Self::Output>, ProcessError>>> + Send {
        self.inner.process_batch(messages, ctx)
    }
}

#[diagnostic::do_not_recommend]
impl<P: Worker, L: Layer<P>> Worker for Layered<P, L> {
    type Codec = P::Codec;
    const SPEC: crate::WorkerSpec = P::SPEC;
}

/// Wraps any worker in a layer: `worker.layer(Timeout::new(..))`.
pub trait LayerExt: Process + Sized {
    /// This worker inside `layer`; add more with `.layer(..)` again (the last
    /// added runs first).
    fn layer<L: Layer<Self>>(self, layer: L) -> Layered<Self, L> {
        Layered { inner: self, layer }
    }
}

impl<P: Process> LayerExt for P {}

#[cfg(test)]
pub(crate) mod tests {
    use std::sync::Mutex;

    use super::*;
    use crate::message::PartitionId;

    /// A worker that answers from a script: `Ok` echoes, `Err` fails.
    pub(crate) struct Scripted {
        pub(crate) calls: Mutex<Vec<i64>>,
        pub(crate) fail_at: Vec<i64>,
    }

    impl Scripted {
        pub(crate) fn failing_at(fail_at: &[i64]) -> Self {
            Self {
                calls: Mutex::new(Vec::new()),
                fail_at: fail_at.to_vec(),
            }
        }

        pub(crate) fn calls(&self) -> Vec<i64> {
            self.calls.lock().unwrap().clone()
        }
    }

    impl Process for Scripted {
        type Input = String;
        type Output = String;

        async fn process(
            &self,
            msg: Message<String>,
            _: &Context,
        ) -> Result<Outputs<String>, ProcessError> {
            self.calls.lock().unwrap().push(msg.offset());
            if self.fail_at.contains(&msg.offset()) {
                return Err(ProcessError::msg(format!("failed at {}", msg.offset())));
            }
            Ok(Outputs::one(msg.into_payload()))
        }
    }

    pub(crate) fn message(offset: i64) -> Message<String> {
        Message::new(PartitionId::new("orders", 0), offset, format!("m{offset}"))
    }

    struct Tag(&'static str, std::sync::Arc<Mutex<Vec<&'static str>>>);

    impl<P: Process> Layer<P> for Tag {
        async fn handle(
            &self,
            msg: Message<P::Input>,
            ctx: &Context,
            next: Next<'_, P>,
        ) -> Result<Outputs<P::Output>, ProcessError> {
            self.1.lock().unwrap().push(self.0);
            next.run(msg, ctx).await
        }
    }

    #[tokio::test]
    async fn the_layer_added_last_runs_first_and_the_worker_last() {
        let seen = std::sync::Arc::new(Mutex::new(Vec::new()));
        let worker = Scripted::failing_at(&[])
            .layer(Tag("inner", seen.clone()))
            .layer(Tag("outer", seen.clone()));
        let ctx = Context::detached("w");
        let out = worker.process(message(3), &ctx).await.unwrap();
        assert_eq!(
            out.into_iter().map(|o| o.into_value()).collect::<Vec<_>>(),
            ["m3"]
        );
        assert_eq!(*seen.lock().unwrap(), ["outer", "inner"]);
        assert_eq!(worker.inner().inner().calls(), [3]);
    }

    #[tokio::test]
    async fn batches_go_to_the_worker_as_they_are() {
        let seen = std::sync::Arc::new(Mutex::new(Vec::new()));
        let worker = Scripted::failing_at(&[]).layer(Tag("layer", seen.clone()));
        let results = worker
            .process_batch(vec![message(1), message(2)], &Context::detached("w"))
            .await;
        assert_eq!(results.len(), 2);
        assert!(seen.lock().unwrap().is_empty());
    }
}
