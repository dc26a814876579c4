//! The RabbitMQ baseline: a hand-written lapin consumer, what a careful user
//! writes without a framework — `basic.qos` prefetch, manual acks, and each
//! delivery acknowledged (`basic.ack`, one per message) right after it is
//! "processed".

use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use futures::StreamExt as _;
use lapin::options::{BasicAckOptions, BasicConsumeOptions, BasicQosOptions};
use lapin::types::FieldTable;
use pythia_rabbitmq::AmqpUrl;

use super::progress::Progress;

/// Consumes `queue` with `prefetch` until `progress` is finished.
pub(crate) async fn consume(
    url: &AmqpUrl,
    queue: &str,
    prefetch: u16,
    timeout: Duration,
    progress: &Progress,
) -> anyhow::Result<()> {
    let connection = crate::rabbit::connect(url, "pythia-bench-raw").await?;
    let channel = connection.create_channel().await?;
    channel
        .basic_qos(prefetch, BasicQosOptions::default())
        .await
        .context("basic.qos")?;
    let mut consumer = channel
        .basic_consume(
            queue.into(),
            "".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await
        .with_context(|| format!("consuming `{queue}`"))?;
    let deadline = Instant::now() + timeout;
    while !progress.is_finished() {
        let wait = deadline.saturating_duration_since(Instant::now());
        let delivery = match tokio::time::timeout(wait, consumer.next()).await {
            Ok(Some(delivery)) => delivery.context("the raw consumer's delivery")?,
            Ok(None) => bail!("the broker cancelled the raw consumer of `{queue}`"),
            Err(_) => bail!("the raw consumer did not finish within {timeout:?}"),
        };
        std::hint::black_box(&delivery.data);
        delivery
            .acker
            .ack(BasicAckOptions::default())
            .await
            .context("basic.ack")?;
        progress.tick();
    }
    let _ = channel.close(200, "done".into()).await;
    let _ = connection.close(200, "done".into()).await;
    Ok(())
}
