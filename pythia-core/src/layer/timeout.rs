//! A deadline per attempt.

use std::time::Duration;

use super::{Layer, Next};
use crate::context::Context;
use crate::error::ProcessError;
use crate::message::Message;
use crate::output::Outputs;
use crate::worker::Process;

/// Gives each attempt at most `limit`. An attempt that takes longer is
/// dropped (the future is cancelled where it waits) and fails with a
/// transient error, `timed out after …`, which the retry policy retries and
/// then dead-letters like any other.
///
/// Work on the CPU pool (`Context::compute`) is not interrupted: it runs to
/// its end in the background, and its result is thrown away.
///
/// ```
/// use std::time::Duration;
/// use pythia_core::layer::{LayerExt, Timeout};
/// # use pythia_core::{Context, Message, Outputs, Process, ProcessError};
/// # struct Lookup;
/// # impl Process for Lookup {
/// #     type Input = String;
/// #     type Output = String;
/// #     async fn process(&self, msg: Message<String>, _: &Context) -> Result<Outputs<String>, ProcessError> {
/// #         tokio::time::sleep(Duration::from_secs(60)).await;
/// #         Ok(Outputs::one(msg.into_payload()))
/// #     }
/// # }
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let worker = Lookup.layer(Timeout::new(Duration::from_millis(20)));
/// # let msg = Message::new(pythia_core::PartitionId::new("t", 0), 0, "x".to_owned());
/// let error = worker.process(msg, &Context::detached("lookup")).await.unwrap_err();
/// assert_eq!(error.to_string(), "timed out after 20ms");
/// assert!(!error.is_permanent());
/// # }
/// ```
#[derive(Debug, Clone, Copy)]
pub struct Timeout {
    limit: Duration,
}

impl Timeout {
    /// A deadline of `limit` per attempt.
    pub fn new(limit: Duration) -> Self {
        Self { limit }
    }
}

impl<P: Process> Layer<P> for Timeout {
    async fn handle(
        &self,
        msg: Message<P::Input>,
        ctx: &Context,
        next: Next<'_, P>,
    ) -> Result<Outputs<P::Output>, ProcessError> {
        match tokio::time::timeout(self.limit, next.run(msg, ctx)).await {
            Ok(result) => result,
            Err(_) => Err(ProcessError::msg(format!(
                "timed out after {:?}",
                self.limit
            ))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::layer::LayerExt;
    use crate::layer::tests::{Scripted, message};

    struct Slow(Duration);

    impl Process for Slow {
        type Input = String;
        type Output = String;
        async fn process(
            &self,
            msg: Message<String>,
            _: &Context,
        ) -> Result<Outputs<String>, ProcessError> {
            tokio::time::sleep(self.0).await;
            Ok(Outputs::one(msg.into_payload()))
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_slow_attempt_fails_transient_and_a_quick_one_passes() {
        let ctx = Context::detached("w");
        let slow = Slow(Duration::from_secs(10)).layer(Timeout::new(Duration::from_secs(2)));
        let error = slow.process(message(1), &ctx).await.unwrap_err();
        assert_eq!(error.to_string(), "timed out after 2s");
        assert!(!error.is_permanent());

        let quick = Slow(Duration::from_secs(1)).layer(Timeout::new(Duration::from_secs(2)));
        assert_eq!(quick.process(message(2), &ctx).await.unwrap().len(), 1);
    }

    #[tokio::test]
    async fn the_worker_s_own_error_passes_through() {
        let worker = Scripted::failing_at(&[4]).layer(Timeout::new(Duration::from_secs(5)));
        let error = worker
            .process(message(4), &Context::detached("w"))
            .await
            .unwrap_err();
        assert_eq!(error.to_string(), "failed at 4");
    }
}
