//! `pythia bench --broker nats`: a pass-through worker on `pythia-nats` with
//! its defaults against the raw async-nats pull consumer of
//! [`super::nats_raw`].
//!
//! Each run's stream is made as the connector makes one (work-queue
//! retention, file storage), holding one subject of the stream's name, and
//! pre-loaded with every publish confirmed (PubAck). After the run the
//! stream is deleted, with its consumers, and the dead-letter stream the
//! worker created.

use std::collections::BTreeMap;
use std::sync::Arc;

use anyhow::{Context as _, bail};
use async_nats::jetstream::{self, stream};
use pythia_kafka::core::connector::Health;
use pythia_kafka::core::{ConfigLoader, WorkerSpec};
use pythia_nats::{NatsSink, NatsSource, NatsUrl};

use super::queue::{self, QueueReport, Queues};
use super::queue_side::{Drain, Side, worker_settings};
use super::{Args, nats_raw};
use crate::broker::BrokerKind;
use crate::queue_server;

/// Publishes between two waits for their PubAcks while pre-loading.
const CONFIRM_WINDOW: usize = 1_000;

/// A NATS server and a JetStream context on it.
struct Nats {
    url: NatsUrl,
    jetstream: jetstream::Context,
}

impl Queues for Nats {
    const KIND: BrokerKind = BrokerKind::Nats;
    const HOLDS: &'static str = "messages in a file stream";
    const ACKS: &'static str = "explicit acks";

    fn url_variable(&self) -> &'static str {
        queue_server::NATS_VARIABLE
    }

    fn exposed_url(&self) -> &str {
        self.url.expose()
    }

    fn redacted_url(&self) -> String {
        self.url.redacted()
    }

    async fn preload(&mut self, name: &str, messages: u64, size: u64) -> anyhow::Result<()> {
        let js = &self.jetstream;
        let mut created = js
            .create_stream(stream::Config {
                name: name.to_owned(),
                subjects: vec![name.to_owned()],
                retention: stream::RetentionPolicy::WorkQueue,
                storage: stream::StorageType::File,
                ..Default::default()
            })
            .await
            .with_context(|| {
                format!("creating stream `{name}` (is JetStream on? `nats-server -js`)")
            })?;
        let mut pending = Vec::with_capacity(CONFIRM_WINDOW);
        let mut buffer = Vec::with_capacity(size as usize);
        for i in 0..messages {
            buffer.clear();
            buffer.extend_from_slice(&i.to_le_bytes());
            buffer.resize(size as usize, b'x');
            let ack = js
                .publish(name.to_owned(), bytes::Bytes::copy_from_slice(&buffer))
                .await
                .with_context(|| format!("publishing to `{name}`"))?;
            pending.push(ack);
            if pending.len() == CONFIRM_WINDOW || i + 1 == messages {
                for ack in pending.drain(..) {
                    ack.await
                        .with_context(|| format!("a publish to `{name}` was not stored"))?;
                }
            }
        }
        let held = created.info().await?.state.messages;
        if held != messages {
            bail!(
                "stream `{name}` holds {held} messages after the pre-load, not {messages}: does something else consume it?"
            );
        }
        Ok(())
    }

    async fn delete(&mut self, name: &str, side: Side) {
        let mut owned = vec![name.to_owned()];
        if side == Side::Pythia {
            owned.push(queue_server::nats_dead_letter_stream(name));
        }
        for stream in owned {
            if let Err(error) = self.jetstream.delete_stream(&stream).await {
                eprintln!("could not delete stream `{stream}`: {error}");
            }
        }
    }
}

/// Runs the rounds on NATS JetStream and reports them.
pub(crate) fn run(args: &Args) -> anyhow::Result<QueueReport> {
    let url = queue_server::nats(args.url.as_deref())?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let client = runtime.block_on(queue_server::connect_nats(&url, "pythia-bench"))?;
    let mut broker = Nats {
        url,
        jetstream: jetstream::new(client.clone()),
    };
    let report = queue::run(args, &runtime, &mut broker);
    let _ = runtime.block_on(client.drain());
    report
}

/// Drains the run's stream as `side`; returns the consumer's settings.
pub(crate) async fn drain(side: Side, drain: &Drain) -> anyhow::Result<BTreeMap<String, String>> {
    let url = queue_server::nats(None)?;
    match side {
        Side::Raw => {
            let client = queue_server::connect_nats(&url, "pythia-bench-raw").await?;
            let settings = nats_raw::consume(&client, drain).await?;
            let _ = client.drain().await;
            Ok(settings)
        }
        Side::Pythia => {
            let config = pythia_nats::Config::from_loader(pythia_nats::Config::spec_defaults(
                ConfigLoader::new()
                    .no_file()
                    .set("nats.url", url.expose())
                    .set("nats.subject", drain.queue.as_str())
                    .set("nats.stream", drain.queue.as_str())
                    .set("nats.concurrency", u64::from(drain.prefetch))
                    .set("worker.name", "pythia-bench"),
                &WorkerSpec::UNNAMED,
            ))
            .context("the pythia side's configuration")?;
            let nats = &config.nats;
            let mut consumer = BTreeMap::from([
                ("prefetch".to_owned(), nats.concurrency.to_string()),
                ("ack".to_owned(), "explicit, +ACK once processed".to_owned()),
                (
                    "nats.max_ack_pending".to_owned(),
                    nats.max_ack_pending.to_string(),
                ),
                (
                    "nats.ack_wait".to_owned(),
                    humantime::format_duration(nats.ack_wait).to_string(),
                ),
            ]);
            consumer.extend(worker_settings(&config.worker));
            // The way `NatsWorker` runs it: NATS source and sink.
            let name = config.name().to_owned();
            let sink = Arc::new(NatsSink::new(&config, &format!("{name}-publisher")));
            let source = NatsSource::new(&config, &name, Health::new());
            drain
                .pass_through(&config.worker, &name, source, sink.clone(), sink.close())
                .await?;
            Ok(consumer)
        }
    }
}
