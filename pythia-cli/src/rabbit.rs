//! The CLI's RabbitMQ side, shared by `bench`, `loadtest` and `depth`: which
//! broker (`--url`, else `PYTHIA_RABBITMQ__URL`, else this machine's),
//! connecting with errors that never show the password, and the queue
//! operations the commands need — declare, pre-load with publisher confirms,
//! read the depth, delete.

use anyhow::{Context as _, bail};
use lapin::options::{ConfirmSelectOptions, QueueDeclareOptions, QueueDeleteOptions};
use lapin::types::FieldTable;
use lapin::{BasicProperties, Channel, Connection, ConnectionProperties};
use pythia_rabbitmq::AmqpUrl;

/// The variable a worker reads its broker from; the commands read it too.
pub(crate) const URL_VARIABLE: &str = "PYTHIA_RABBITMQ__URL";

/// Publishes between two waits for confirms while pre-loading.
const CONFIRM_WINDOW: usize = 2_000;

/// The broker: `--url` if given, else `PYTHIA_RABBITMQ__URL`, else RabbitMQ
/// on this machine as guest.
pub(crate) fn url(flag: Option<&str>) -> anyhow::Result<AmqpUrl> {
    let url = match flag {
        Some(url) => AmqpUrl::new(url),
        None => match std::env::var(URL_VARIABLE) {
            Ok(url) if !url.trim().is_empty() => AmqpUrl::new(url),
            _ => AmqpUrl::default(),
        },
    };
    if !url.expose().starts_with("amqp://") {
        bail!(
            "--url {url} is not an amqp:// URL: write it as amqp://user:password@host:5672/%2f (amqps:// is not supported by this build)"
        );
    }
    Ok(url)
}

/// Opens a connection named `name` (as `rabbitmqctl list_connections name`
/// shows it); the error says how to reach a broker, without the password.
pub(crate) async fn connect(url: &AmqpUrl, name: &str) -> anyhow::Result<Connection> {
    let properties = ConnectionProperties::default().with_connection_name(name.into());
    Connection::connect(url.expose(), properties)
        .await
        .map_err(|e| {
            anyhow::anyhow!(
                "RabbitMQ does not answer at {url} ({e}): start it (`service rabbitmq-server start`), or point --url (or {URL_VARIABLE}) at your broker, e.g. amqp://user:password@rabbit:5672/%2f"
            )
        })
}

/// A queue's depth as a passive `queue.declare` reports it over AMQP:
/// messages ready and consumers. Delivered but unacknowledged messages are
/// not in it (only the management API counts those).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Depth {
    pub(crate) ready: u32,
    pub(crate) consumers: u32,
}

/// Reads `queue`'s depth on a channel of its own (a passive declare of a
/// missing queue closes its channel).
pub(crate) async fn depth(connection: &Connection, queue: &str) -> anyhow::Result<Depth> {
    let channel = connection.create_channel().await?;
    let options = QueueDeclareOptions {
        passive: true,
        ..QueueDeclareOptions::default()
    };
    let found = channel
        .queue_declare(queue.into(), options, FieldTable::default())
        .await
        .with_context(|| {
            format!(
                "queue `{queue}` does not exist (or is not readable by this user): check --queue"
            )
        })?;
    let _ = channel.close(200, "depth read".into()).await;
    Ok(Depth {
        ready: found.message_count(),
        consumers: found.consumer_count(),
    })
}

/// Declares `queue` durable (a worker's default), empty: what a run starts on.
pub(crate) async fn declare(channel: &Channel, queue: &str) -> anyhow::Result<()> {
    channel
        .queue_declare(
            queue.into(),
            QueueDeclareOptions::durable(),
            FieldTable::default(),
        )
        .await
        .with_context(|| format!("declaring queue `{queue}`"))?;
    Ok(())
}

/// Deletes each queue, each on a channel of its own (a failed delete closes
/// its channel); a failure is a warning (the run's result stands).
pub(crate) async fn delete(connection: &Connection, queues: &[String]) {
    for queue in queues {
        let deleted = match connection.create_channel().await {
            Ok(channel) => {
                let deleted = channel
                    .queue_delete(queue.as_str().into(), QueueDeleteOptions::default())
                    .await;
                let _ = channel.close(200, "queue deleted".into()).await;
                deleted.map(drop)
            }
            Err(error) => Err(error),
        };
        if let Err(error) = deleted {
            eprintln!("could not delete queue `{queue}`: {error}");
        }
    }
}

/// A channel in confirm mode, for publishing that knows what the broker kept.
pub(crate) async fn confirm_channel(connection: &Connection) -> anyhow::Result<Channel> {
    let channel = connection.create_channel().await?;
    channel
        .confirm_select(ConfirmSelectOptions::default())
        .await
        .context("confirm.select")?;
    Ok(channel)
}

/// Publishes `count` persistent messages to `queue` through the default
/// exchange, `payload(i)` being the i-th, one every `pace` if given (else as
/// fast as the broker takes them), and waits until the broker has confirmed
/// every one.
pub(crate) async fn publish(
    channel: &Channel,
    queue: &str,
    count: u64,
    pace: Option<std::time::Duration>,
    mut payload: impl FnMut(u64, &mut Vec<u8>),
) -> anyhow::Result<()> {
    let mut buffer = Vec::new();
    let mut pending = 0;
    let started = tokio::time::Instant::now();
    for i in 0..count {
        if let Some(every) = pace {
            tokio::time::sleep_until(started + every.mul_f64(i as f64)).await;
        }
        buffer.clear();
        payload(i, &mut buffer);
        channel
            .basic_publish(
                "".into(),
                queue.into(),
                Default::default(),
                &buffer,
                BasicProperties::default().with_delivery_mode(2),
            )
            .await
            .with_context(|| format!("publishing to `{queue}`"))?;
        pending += 1;
        if pending == CONFIRM_WINDOW {
            wait_for_confirms(channel, queue).await?;
            pending = 0;
        }
    }
    wait_for_confirms(channel, queue).await
}

async fn wait_for_confirms(channel: &Channel, queue: &str) -> anyhow::Result<()> {
    let returned = channel
        .wait_for_confirms()
        .await
        .with_context(|| format!("waiting for the broker to confirm messages to `{queue}`"))?;
    if !returned.is_empty() {
        bail!(
            "the broker returned {} messages published to `{queue}`",
            returned.len()
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_flag_wins_and_bad_schemes_name_the_flag_without_the_password() {
        assert_eq!(
            url(Some("amqp://u:p@h:5672/%2f")).unwrap().expose(),
            "amqp://u:p@h:5672/%2f"
        );
        let error = url(Some("http://u:secret@h")).unwrap_err().to_string();
        assert!(error.contains("--url"), "{error}");
        assert!(!error.contains("secret"), "{error}");
    }
}
