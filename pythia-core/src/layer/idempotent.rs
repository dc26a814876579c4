//! Skip a message whose key is already done.

use std::collections::{HashSet, VecDeque};
use std::future::Future;
use std::sync::Mutex;

use bytes::Bytes;

use super::{Layer, Next};
use crate::context::Context;
use crate::error::ProcessError;
use crate::message::Message;
use crate::output::Outputs;
use crate::worker::Process;

/// Where [`Idempotent`] remembers the keys that are done: in memory
/// ([`MemoryStore`]), or in a database or cache of yours, shared by every
/// instance, so a message redelivered to another instance after a crash is
/// recognised there too.
pub trait IdempotencyStore: Send + Sync + 'static {
    /// Whether `key` is done.
    fn is_done(&self, key: &[u8]) -> impl Future<Output = Result<bool, ProcessError>> + Send;
    /// Records `key` as done.
    fn mark_done(&self, key: &[u8]) -> impl Future<Output = Result<(), ProcessError>> + Send;
}

/// Keys in memory, the latest `capacity` of them: for one instance, and
/// for duplicates that come close together (a redelivery after a rebalance).
#[derive(Debug)]
pub struct MemoryStore {
    capacity: usize,
    keys: Mutex<(HashSet<Bytes>, VecDeque<Bytes>)>,
}

impl MemoryStore {
    /// Remembers the latest `capacity` keys (at least 1).
    pub fn new(capacity: usize) -> Self {
        Self {
            capacity: capacity.max(1),
            keys: Mutex::new((HashSet::new(), VecDeque::new())),
        }
    }
}

impl IdempotencyStore for MemoryStore {
    async fn is_done(&self, key: &[u8]) -> Result<bool, ProcessError> {
        let keys = self
            .keys
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        Ok(keys.0.contains(key))
    }

    async fn mark_done(&self, key: &[u8]) -> Result<(), ProcessError> {
        let mut keys = self
            .keys
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let key = Bytes::copy_from_slice(key);
        if keys.0.insert(key.clone()) {
            keys.1.push_back(key);
            while keys.1.len() > self.capacity {
                if let Some(oldest) = keys.1.pop_front() {
                    keys.0.remove(&oldest);
                }
            }
        }
        Ok(())
    }
}

/// How a message's idempotency key is found.
type KeyOf<I> = Box<dyn Fn(&Message<I>) -> Option<Bytes> + Send + Sync>;

/// Skips a message whose key is already done: `process` is not called and
/// the message counts as processed with no outputs. The key is the
/// message's key by default ([`Idempotent::by`] picks another, such as an
/// id in the payload); a message without one always goes through.
///
/// A key is marked done when `process` succeeds, before its outputs are
/// delivered. So this suits workers whose effect is what `process` does (a
/// write, a payment, an email): a redelivered message does not do it twice.
/// For a worker whose outputs are what matters, a crash between `process`
/// and delivery would leave the redelivered message skipped and its outputs
/// never sent; such a worker needs no idempotency layer, since duplicate
/// outputs are what downstream idempotency is for.
///
/// ```
/// use pythia_core::layer::{Idempotent, LayerExt, MemoryStore};
/// # use pythia_core::{Context, Message, Outputs, Process, ProcessError};
/// # struct Charge;
/// # impl Process for Charge {
/// #     type Input = String;
/// #     type Output = ();
/// #     async fn process(&self, _: Message<String>, _: &Context) -> Result<Outputs<()>, ProcessError> {
/// #         Ok(Outputs::none())
/// #     }
/// # }
/// // The payload is a payment id: charge each once.
/// let worker = Charge.layer(
///     Idempotent::new(MemoryStore::new(100_000))
///         .by(|msg: &Message<String>| Some(msg.payload().clone().into())),
/// );
/// ```
pub struct Idempotent<S, I> {
    store: S,
    key_of: KeyOf<I>,
}

impl<S: IdempotencyStore, I: 'static> Idempotent<S, I> {
    /// Keyed by the message's key, remembered in `store`.
    pub fn new(store: S) -> Self {
        Self {
            store,
            key_of: Box::new(|msg: &Message<I>| msg.key().map(Bytes::copy_from_slice)),
        }
    }

    /// Keyed by what `key_of` returns (none: the message always goes through).
    pub fn by(self, key_of: impl Fn(&Message<I>) -> Option<Bytes> + Send + Sync + 'static) -> Self {
        Self {
            key_of: Box::new(key_of),
            ..self
        }
    }

    /// The store.
    pub fn store(&self) -> &S {
        &self.store
    }
}

impl<S, I> std::fmt::Debug for Idempotent<S, I> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Idempotent").finish_non_exhaustive()
    }
}

impl<P: Process, S: IdempotencyStore> Layer<P> for Idempotent<S, P::Input> {
    async fn handle(
        &self,
        msg: Message<P::Input>,
        ctx: &Context,
        next: Next<'_, P>,
    ) -> Result<Outputs<P::Output>, ProcessError> {
        let Some(key) = (self.key_of)(&msg) else {
            return next.run(msg, ctx).await;
        };
        if self.store.is_done(&key).await? {
            tracing::debug!(
                topic = msg.topic(),
                partition = msg.partition(),
                offset = msg.offset(),
                "skipped: its idempotency key is done"
            );
            return Ok(Outputs::none());
        }
        let outputs = next.run(msg, ctx).await?;
        self.store.mark_done(&key).await?;
        Ok(outputs)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::layer::LayerExt;
    use crate::layer::tests::{Scripted, message};

    #[tokio::test]
    async fn a_done_key_is_skipped_and_a_failed_one_is_not_marked() {
        let worker = Scripted::failing_at(&[2]).layer(Idempotent::new(MemoryStore::new(10)).by(
            |m: &Message<String>| {
                Some(Bytes::from(if m.offset() % 2 == 0 {
                    "even"
                } else {
                    "odd"
                }))
            },
        ));
        let ctx = Context::detached("w");
        // Offsets 1 and 3 share the key "odd"; 2 (fails) and 4 share "even".
        assert_eq!(worker.process(message(1), &ctx).await.unwrap().len(), 1);
        assert!(
            worker.process(message(3), &ctx).await.unwrap().is_empty(),
            "skipped"
        );
        assert!(worker.process(message(2), &ctx).await.is_err());
        assert_eq!(
            worker.process(message(4), &ctx).await.unwrap().len(),
            1,
            "2 failed: not done"
        );
        assert_eq!(worker.inner().calls(), [1, 2, 4]);
    }

    #[tokio::test]
    async fn a_message_without_a_key_always_goes_through() {
        let worker = Scripted::failing_at(&[]).layer(Idempotent::new(MemoryStore::new(10)));
        let ctx = Context::detached("w");
        worker.process(message(1), &ctx).await.unwrap();
        worker.process(message(1), &ctx).await.unwrap();
        assert_eq!(worker.inner().calls(), [1, 1]);
    }

    #[tokio::test]
    async fn the_memory_store_forgets_the_oldest_beyond_its_capacity() {
        let store = MemoryStore::new(2);
        for key in [b"a", b"b", b"c"] {
            store.mark_done(key).await.unwrap();
        }
        assert!(!store.is_done(b"a").await.unwrap());
        assert!(store.is_done(b"b").await.unwrap() && store.is_done(b"c").await.unwrap());
    }
}
