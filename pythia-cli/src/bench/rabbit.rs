//! `pythia bench --broker rabbitmq`: a pass-through worker on
//! `pythia-rabbitmq` against a raw lapin consumer ([`super::rabbit_raw`]),
//! with the same prefetch and the same ack mode (manual, one `basic.ack` per
//! message once it is processed). Each run's queue is pre-loaded with
//! persistent messages under publisher confirms.

use std::collections::BTreeMap;
use std::sync::Arc;

use anyhow::{Context as _, bail};
use pythia_kafka::core::connector::Health;
use pythia_kafka::core::{ConfigLoader, WorkerSpec};
use pythia_rabbitmq::{AmqpUrl, RabbitSink, RabbitSource};

use super::queue::{self, QueueReport, Queues};
use super::queue_side::{Drain, Side, worker_settings};
use super::{Args, rabbit_raw};
use crate::broker::BrokerKind;
use crate::rabbit;

/// The broker and a connection to it, for pre-loading and deleting.
struct Rabbit {
    url: AmqpUrl,
    connection: lapin::Connection,
}

impl Queues for Rabbit {
    const KIND: BrokerKind = BrokerKind::Rabbitmq;
    const HOLDS: &'static str = "persistent messages";
    const ACKS: &'static str = "manual acks";

    fn url_variable(&self) -> &'static str {
        rabbit::URL_VARIABLE
    }

    fn exposed_url(&self) -> &str {
        self.url.expose()
    }

    fn redacted_url(&self) -> String {
        self.url.redacted()
    }

    async fn preload(&mut self, queue: &str, messages: u64, size: u64) -> anyhow::Result<()> {
        let channel = rabbit::confirm_channel(&self.connection).await?;
        rabbit::declare(&channel, queue).await?;
        rabbit::publish(&channel, queue, messages, None, |i, buffer| {
            buffer.extend_from_slice(&i.to_le_bytes());
            buffer.resize(size as usize, b'x');
        })
        .await?;
        let depth = rabbit::depth(&self.connection, queue).await?;
        if u64::from(depth.ready) != messages {
            bail!(
                "queue `{queue}` holds {} messages after the pre-load, not {messages}: does something else consume it?",
                depth.ready
            );
        }
        let _ = channel.close(200, "pre-loaded".into()).await;
        Ok(())
    }

    async fn delete(&mut self, queue: &str, side: Side) {
        // The worker declares its dead-letter queue; deleting a queue that
        // does not exist would close the channel.
        let mut owned = vec![queue.to_owned()];
        if side == Side::Pythia {
            owned.push(format!("{queue}.dlq"));
        }
        rabbit::delete(&self.connection, &owned).await;
    }
}

/// Runs the rounds on RabbitMQ and reports them.
pub(crate) fn run(args: &Args) -> anyhow::Result<QueueReport> {
    let url = rabbit::url(args.url.as_deref())?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let connection = runtime.block_on(rabbit::connect(&url, "pythia-bench"))?;
    let mut broker = Rabbit { url, connection };
    let report = queue::run(args, &runtime, &mut broker);
    let _ = runtime.block_on(broker.connection.close(200, "bench done".into()));
    report
}

/// Drains the run's queue as `side`; returns the consumer's settings.
pub(crate) async fn drain(side: Side, drain: &Drain) -> anyhow::Result<BTreeMap<String, String>> {
    let url = rabbit::url(None)?;
    let mut consumer = BTreeMap::from([
        ("prefetch".to_owned(), drain.prefetch.to_string()),
        (
            "ack".to_owned(),
            "manual, one basic.ack per message".to_owned(),
        ),
    ]);
    match side {
        Side::Raw => {
            rabbit_raw::consume(
                &url,
                &drain.queue,
                drain.prefetch,
                drain.timeout,
                &drain.progress,
            )
            .await?
        }
        Side::Pythia => {
            let config =
                pythia_rabbitmq::Config::from_loader(pythia_rabbitmq::Config::spec_defaults(
                    ConfigLoader::new()
                        .no_file()
                        .set("rabbitmq.url", url.expose())
                        .set("rabbitmq.queue", drain.queue.as_str())
                        .set("rabbitmq.prefetch", u64::from(drain.prefetch))
                        .set("rabbitmq.queues", "expect")
                        .set("worker.name", "pythia-bench"),
                    &WorkerSpec::UNNAMED,
                ))
                .context("the pythia side's configuration")?;
            consumer.extend(worker_settings(&config.worker));
            // The way `RabbitWorker` runs it: RabbitMQ source and sink.
            let name = config.name().to_owned();
            let sink = Arc::new(RabbitSink::new(&config, &format!("{name}-publisher")));
            let source = RabbitSource::new(&config, &name, Health::new());
            drain
                .pass_through(&config.worker, &name, source, sink.clone(), sink.close())
                .await?;
        }
    }
    Ok(consumer)
}
