//! `pythia depth`: RabbitMQ queues' depth, the queue counterpart of `pythia lag`.
//!
//! Read over AMQP with a passive `queue.declare`, as the workers' own
//! `pythia_queue_messages_ready` gauge is (see `pythia_rabbitmq::metrics`):
//! it gives the messages ready and the consumers. Messages delivered and not
//! yet acknowledged are not counted by it; only the management API
//! (`messages_unacknowledged`, plugin `rabbitmq_management`) or the workers'
//! `pythia_queue_unacked_messages` gauge tell those, so the output says
//! `unacked` is not known instead of printing a 0.

use std::io::Write;
use std::time::Duration;

use anyhow::Context as _;
use serde::Serialize;

use crate::rabbit;

/// Options of `pythia depth`.
#[derive(clap::Args, Debug)]
#[command(after_help = "\
Examples:
  pythia depth --queue jobs
  pythia depth --queue jobs --queue jobs.dlq --json
  PYTHIA_RABBITMQ__URL=amqp://user:password@rabbit:5672/%2f pythia depth --queue jobs")]
pub(crate) struct DepthArgs {
    /// A queue to report (repeatable).
    #[arg(long = "queue", value_name = "QUEUE", required = true)]
    queues: Vec<String>,
    /// The broker, amqp://user:password@host:5672/%2f (default:
    /// PYTHIA_RABBITMQ__URL, else 127.0.0.1:5672 as guest). Prefer the
    /// variable for a password: `ps` shows arguments.
    #[arg(long)]
    url: Option<String>,
    /// Print JSON instead of a table.
    #[arg(long)]
    json: bool,
    /// Longest wait for the broker.
    #[arg(long, default_value = "10s", value_parser = crate::lag::humantime_duration)]
    timeout: Duration,
}

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

/// Runs `pythia depth`.
pub(crate) async fn run(args: DepthArgs) -> anyhow::Result<()> {
    let url = rabbit::url(args.url.as_deref())?;
    let depths = tokio::time::timeout(args.timeout, read(&url, &args.queues))
        .await
        .with_context(|| {
            format!(
                "RabbitMQ at {url} did not answer within {:?} (--timeout)",
                args.timeout
            )
        })??;
    let mut stdout = std::io::stdout().lock();
    if args.json {
        writeln!(stdout, "{}", serde_json::to_string(&depths)?)?;
    } else {
        write!(stdout, "{}", table(&depths))?;
    }
    stdout.flush()?;
    Ok(())
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
fn table(depths: &[QueueDepth]) -> String {
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
