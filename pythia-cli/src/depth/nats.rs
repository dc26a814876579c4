//! `pythia depth` on NATS JetStream: a durable consumer's pending,
//! acknowledgement-pending and redelivered messages, from the server's
//! consumer info, as the workers' own gauges are (see `pythia_nats::metrics`).

use anyhow::bail;
use pythia_nats::NatsUrl;

use super::{Backlog, scrub};

/// The variable a worker reads its server from.
const URL_VARIABLE: &str = "PYTHIA_NATS__URL";

/// `--url`, else PYTHIA_NATS__URL, else NATS on this machine.
fn url(flag: Option<&str>) -> anyhow::Result<NatsUrl> {
    let url = match flag {
        Some(url) => NatsUrl::new(url),
        None => match std::env::var(URL_VARIABLE) {
            Ok(url) if !url.trim().is_empty() => NatsUrl::new(url),
            _ => NatsUrl::default(),
        },
    };
    if !url.expose().starts_with("nats://") {
        bail!("--url {url} is not a nats:// URL: write it as nats://user:password@host:4222");
    }
    Ok(url)
}

/// The consumer's backlog.
pub(super) async fn consumer(
    flag: Option<&str>,
    stream: &str,
    consumer: &str,
) -> anyhow::Result<Backlog> {
    let url = url(flag)?;
    let client = async_nats::connect(url.expose()).await.map_err(|e| {
        anyhow::anyhow!(
            "NATS does not answer at {url} ({}): start it (`nats-server -js`), or point --url (or {URL_VARIABLE}) at your server",
            scrub(&e.to_string(), url.expose())
        )
    })?;
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_nats_urls_are_taken() {
        let error = url(Some("tls://nats:4222")).unwrap_err().to_string();
        assert!(error.contains("nats://"), "{error}");
        assert_eq!(
            url(Some("nats://h:4222")).unwrap().expose(),
            "nats://h:4222"
        );
    }
}
