//! The NATS baseline: what a careful user writes on async-nats without a
//! framework — a durable pull consumer with explicit acks, pull requests of
//! `<prefetch>` messages (waiting up to a second for them), and each
//! message acknowledged (`ack()`, one `+ACK` per message) right after it is
//! "processed".

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use async_nats::jetstream::{self, consumer};
use futures::StreamExt as _;

use super::queue_side::Drain;

/// The raw side's durable consumer.
const DURABLE: &str = "raw";

/// How long one pull request waits for messages.
const EXPIRES: Duration = Duration::from_secs(1);

/// Consumes the stream `drain.queue` until `drain.progress` is finished;
/// returns the consumer's settings.
pub(crate) async fn consume(
    client: &async_nats::Client,
    drain: &Drain,
) -> anyhow::Result<BTreeMap<String, String>> {
    let js = jetstream::new(client.clone());
    let stream = js
        .get_stream(&drain.queue)
        .await
        .with_context(|| format!("reading stream `{}`", drain.queue))?;
    let config = consumer::pull::Config {
        durable_name: Some(DURABLE.to_owned()),
        ack_policy: consumer::AckPolicy::Explicit,
        ..Default::default()
    };
    let settings = BTreeMap::from([
        ("prefetch".to_owned(), drain.prefetch.to_string()),
        (
            "ack".to_owned(),
            "explicit, one ack() per message".to_owned(),
        ),
        (
            "max_ack_pending".to_owned(),
            "the server's default".to_owned(),
        ),
    ]);
    let consumer = stream
        .get_or_create_consumer(DURABLE, config)
        .await
        .context("creating the raw durable consumer")?;
    let deadline = Instant::now() + drain.timeout;
    while !drain.progress.is_finished() {
        if Instant::now() >= deadline {
            bail!("the raw consumer did not finish within {:?}", drain.timeout);
        }
        let mut batch = consumer
            .batch()
            .max_messages(usize::from(drain.prefetch))
            .expires(EXPIRES)
            .messages()
            .await
            .context("a pull request")?;
        while let Some(message) = batch.next().await {
            let message = message.map_err(|e| anyhow::anyhow!("a pulled message: {e}"))?;
            std::hint::black_box(&message.payload);
            message
                .ack()
                .await
                .map_err(|e| anyhow::anyhow!("ack: {e}"))?;
            drain.progress.tick();
        }
    }
    Ok(settings)
}
