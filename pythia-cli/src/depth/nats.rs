//! `pythia depth` on NATS JetStream: a durable consumer's pending,
//! acknowledgement-pending and redelivered messages, from the server's
//! consumer info, as the workers' own gauges are (see `pythia_nats::metrics`).

use super::Backlog;

/// The consumer's backlog.
pub(super) async fn consumer(
    url: Option<&str>,
    stream: &str,
    consumer: &str,
) -> anyhow::Result<Backlog> {
    let url = crate::queue_server::nats(url)?;
    let client = crate::queue_server::connect_nats(&url, "pythia-depth").await?;
    let jetstream = async_nats::jetstream::new(client);
    let found = jetstream.get_stream(stream).await.map_err(|e| {
        anyhow::anyhow!("stream `{stream}` cannot be read ({e}): check --stream, and that JetStream is on (`nats-server -js`)")
    })?;
    let info = found.consumer_info(consumer).await.map_err(|e| {
        anyhow::anyhow!("stream `{stream}` has no consumer `{consumer}` ({e}): check --consumer")
    })?;
    Ok(Backlog {
        name: format!("{stream}/{consumer}"),
        waiting: info.num_pending,
        in_progress: info.num_ack_pending as u64,
        consumers: None,
        length: None,
        redelivered: Some(info.num_redelivered as u64),
        source: "JetStream consumer info (num_pending, num_ack_pending, num_redelivered); workers are not counted by the server",
    })
}
