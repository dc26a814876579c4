//! A callback per attempt, for metrics of your own.

use std::time::{Duration, Instant};

use super::{Layer, Next};
use crate::context::Context;
use crate::error::{ErrorKind, ProcessError};
use crate::message::Message;
use crate::output::Outputs;
use crate::worker::Process;

/// One attempt at a message, as [`Observe`] reports it.
#[derive(Debug, Clone, Copy)]
#[non_exhaustive]
pub struct Attempted<'a> {
    /// The message's topic.
    pub topic: &'a str,
    /// Its partition.
    pub partition: i32,
    /// Its offset.
    pub offset: i64,
    /// How long the attempt took, inner layers included.
    pub elapsed: Duration,
    /// `None` when it succeeded; else whether its error was transient or
    /// permanent.
    pub error: Option<ErrorKind>,
    /// How many outputs it returned (0 when it failed).
    pub outputs: usize,
}

/// Calls `observe` after each attempt with what happened: update counters
/// or histograms of your own there (`prometheus` ones registered in
/// `pythia_kafka::KafkaWorker::metrics()`'s registry are served on
/// `/metrics` with Pythia's). The callback runs on the message's task:
/// keep it quick.
///
/// ```
/// use std::sync::atomic::{AtomicU64, Ordering};
/// use std::sync::Arc;
/// use pythia_core::layer::{Attempted, LayerExt, Observe};
/// # use pythia_core::{Context, Message, Outputs, Process, ProcessError};
/// # struct Enrich;
/// # impl Process for Enrich {
/// #     type Input = String;
/// #     type Output = String;
/// #     async fn process(&self, msg: Message<String>, _: &Context) -> Result<Outputs<String>, ProcessError> {
/// #         Ok(Outputs::one(msg.into_payload()))
/// #     }
/// # }
/// let slow = Arc::new(AtomicU64::new(0));
/// let counter = slow.clone();
/// let worker = Enrich.layer(Observe::new(move |attempt: &Attempted| {
///     if attempt.elapsed.as_millis() > 100 {
///         counter.fetch_add(1, Ordering::Relaxed);
///     }
/// }));
/// ```
pub struct Observe<F> {
    observe: F,
}

impl<F> Observe<F>
where
    F: Fn(&Attempted<'_>) + Send + Sync + 'static,
{
    /// Calls `observe` after each attempt.
    pub fn new(observe: F) -> Self {
        Self { observe }
    }
}

impl<F> std::fmt::Debug for Observe<F> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Observe").finish_non_exhaustive()
    }
}

impl<P, F> Layer<P> for Observe<F>
where
    P: Process,
    F: Fn(&Attempted<'_>) + Send + Sync + 'static,
{
    async fn handle(
        &self,
        msg: Message<P::Input>,
        ctx: &Context,
        next: Next<'_, P>,
    ) -> Result<Outputs<P::Output>, ProcessError> {
        let topic = msg.partition_id().topic_arc().clone();
        let (partition, offset) = (msg.partition(), msg.offset());
        let started = Instant::now();
        let result = next.run(msg, ctx).await;
        (self.observe)(&Attempted {
            topic: &topic,
            partition,
            offset,
            elapsed: started.elapsed(),
            error: result.as_ref().err().map(ProcessError::kind),
            outputs: result.as_ref().map_or(0, Outputs::len),
        });
        result
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use super::*;
    use crate::layer::LayerExt;
    use crate::layer::tests::{Scripted, message};

    #[tokio::test]
    async fn each_attempt_is_reported_with_its_outcome() {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let sink = seen.clone();
        let worker = Scripted::failing_at(&[2]).layer(Observe::new(move |a: &Attempted| {
            sink.lock()
                .unwrap()
                .push((a.topic.to_owned(), a.offset, a.error, a.outputs));
        }));
        let ctx = Context::detached("w");
        worker.process(message(1), &ctx).await.unwrap();
        worker.process(message(2), &ctx).await.unwrap_err();
        assert_eq!(
            *seen.lock().unwrap(),
            [
                ("orders".to_owned(), 1, None, 1),
                ("orders".to_owned(), 2, Some(ErrorKind::Transient), 0)
            ]
        );
    }
}
