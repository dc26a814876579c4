//! `pythia depth` on RabbitMQ: queues' depth read over AMQP with a passive
//! `queue.declare`, as the workers' own `pythia_queue_messages_ready` gauge is (see `pythia_rabbitmq::metrics`):
//! it gives the messages ready and the consumers. Messages delivered and not
//! yet acknowledged are not counted by it; only the management API
//! (`messages_unacknowledged`, plugin `rabbitmq_management`) or the workers'
//! `pythia_queue_unacked_messages` gauge tell those, so the output says
//! `unacked` is not known instead of printing a 0.

use serde::Serialize;

use crate::rabbit;

/// One queue's depth, as `--json` prints it.
#[derive(Debug, Serialize, PartialEq, Eq)]
pub(crate) struct QueueDepth {
    pub(crate) queue: String,
    /// Messages waiting for a consumer.
    pub(crate) messages_ready: u32,
    /// Delivered and not acknowledged: `null`, AMQP does not tell (see `source`).
    pub(crate) messages_unacknowledged: Option<u32>,
    pub(crate) consumers: u32,
    /// How the figures were read.
    pub(crate) source: &'static str,
}

/// What `source` says of the figures.
const SOURCE: &str = "amqp queue.declare (passive): ready and consumers only";

/// Reads the depth of `queues` from the broker at `url` (default:
/// PYTHIA_RABBITMQ__URL, else 127.0.0.1:5672 as guest).
pub(super) async fn depths(
    url: Option<&str>,
    queues: &[String],
) -> anyhow::Result<Vec<QueueDepth>> {
    let url = rabbit::url(url)?;
    read(&url, queues).await
}

async fn read(
    url: &pythia_rabbitmq::AmqpUrl,
    queues: &[String],
) -> anyhow::Result<Vec<QueueDepth>> {
    let connection = rabbit::connect(url, "pythia-depth").await?;
    let mut depths = Vec::with_capacity(queues.len());
    let mut result = Ok(());
    for queue in queues {
        match rabbit::depth(&connection, queue).await {
            Ok(depth) => depths.push(QueueDepth {
                queue: queue.clone(),
                messages_ready: depth.ready,
                messages_unacknowledged: None,
                consumers: depth.consumers,
                source: SOURCE,
            }),
            Err(error) => {
                result = Err(error);
                break;
            }
        }
    }
    let _ = connection.close(200, "depth read".into()).await;
    result.map(|()| depths)
}

/// The depths as a table, with the note on what is not counted.
pub(super) fn table(depths: &[QueueDepth]) -> String {
    use std::fmt::Write as _;
    let width = depths
        .iter()
        .map(|d| d.queue.len())
        .max()
        .unwrap_or(0)
        .max("QUEUE".len());
    let mut text = format!(
        "{:<width$}  {:>10}  {:>8}  {:>9}\n",
        "QUEUE", "READY", "UNACKED", "CONSUMERS"
    );
    for d in depths {
        let _ = writeln!(
            text,
            "{:<width$}  {:>10}  {:>8}  {:>9}",
            d.queue,
            d.messages_ready,
            d.messages_unacknowledged
                .map_or("-".to_owned(), |n| n.to_string()),
            d.consumers
        );
    }
    text.push_str(
        "read over AMQP (passive queue.declare): UNACKED is not known this way; the workers export it as pythia_queue_unacked_messages\n",
    );
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_table_says_what_it_cannot_count() {
        let text = table(&[QueueDepth {
            queue: "jobs".into(),
            messages_ready: 120,
            messages_unacknowledged: None,
            consumers: 2,
            source: SOURCE,
        }]);
        let row = text.lines().nth(1).unwrap();
        assert_eq!(
            row.split_whitespace().collect::<Vec<_>>(),
            ["jobs", "120", "-", "2"]
        );
        assert!(text.contains("pythia_queue_unacked_messages"), "{text}");
    }
}
