//! `pythia loadtest --broker nats`: instances share one durable pull
//! consumer on a work-queue stream, which the first instance makes, as a
//! worker does. The load is published with every PubAck awaited, and the
//! records are read from an output stream the run makes for the instances'
//! output subject.
//!
//! The instances count as joined by the consumer's open pull requests, one
//! per fetching instance. After the run the input stream (with its
//! consumer), its dead-letter stream and the output stream are deleted.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context as _;
use async_nats::jetstream::consumer::{AckPolicy, DeliverPolicy, pull};
use async_nats::jetstream::{self, stream};
use futures::StreamExt as _;
use pythia_nats::NatsUrl;

use super::Args;
use super::fleet::Tally;
use super::queue::{self, LoadQueues, lock};
use crate::broker::BrokerKind;
use crate::queue_server;

/// The durable consumer the instances share.
const CONSUMER: &str = "pythia-loadtest";

/// Publishes between two waits for their PubAcks.
const CONFIRM_WINDOW: usize = 1_000;

/// A NATS server and a JetStream context on it.
struct Nats {
    url: NatsUrl,
    jetstream: jetstream::Context,
}

/// The stream holding the records of the output subject `output`.
fn output_stream(output: &str) -> String {
    format!("{output}-records")
}

impl LoadQueues for Nats {
    const KIND: BrokerKind = BrokerKind::Nats;

    fn redacted_url(&self) -> String {
        self.url.redacted()
    }

    fn instance_env(&self, input: &str, output: &str, prefetch: u16) -> Vec<(String, String)> {
        [
            (queue_server::NATS_VARIABLE, self.url.expose()),
            ("PYTHIA_NATS__SUBJECT", input),
            ("PYTHIA_NATS__STREAM", input),
            ("PYTHIA_NATS__CONSUMER", CONSUMER),
            ("PYTHIA_NATS__OUTPUT", output),
            ("PYTHIA_NATS__CONCURRENCY", &prefetch.to_string()),
        ]
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .into()
    }

    async fn prepare(&mut self, _input: &str, output: &str) -> anyhow::Result<()> {
        self.jetstream
            .create_stream(stream::Config {
                name: output_stream(output),
                subjects: vec![output.to_owned()],
                storage: stream::StorageType::File,
                ..Default::default()
            })
            .await
            .with_context(|| {
                format!(
                    "creating the output stream for `{output}` (is JetStream on? `nats-server -js`)"
                )
            })?;
        Ok(())
    }

    async fn consumers(&mut self, input: &str) -> anyhow::Result<usize> {
        // No stream or no consumer yet: no instance has started fetching.
        let Ok(stream) = self.jetstream.get_stream_no_info(input).await else {
            return Ok(0);
        };
        Ok(stream
            .consumer_info(CONSUMER)
            .await
            .map_or(0, |info| info.num_waiting))
    }

    async fn send(
        &mut self,
        input: &str,
        count: u64,
        pace: Option<Duration>,
        mut payload: impl FnMut(u64, &mut Vec<u8>) + Send,
    ) -> anyhow::Result<()> {
        let js = &self.jetstream;
        let started = tokio::time::Instant::now();
        let mut pending = Vec::with_capacity(CONFIRM_WINDOW);
        let mut buffer = Vec::new();
        for i in 0..count {
            if let Some(every) = pace {
                tokio::time::sleep_until(started + every.mul_f64(i as f64)).await;
            }
            buffer.clear();
            payload(i, &mut buffer);
            let ack = js
                .publish(input.to_owned(), bytes::Bytes::copy_from_slice(&buffer))
                .await
                .with_context(|| format!("publishing to `{input}`"))?;
            pending.push(ack);
            if pending.len() == CONFIRM_WINDOW || pace.is_some() || i + 1 == count {
                for ack in pending.drain(..) {
                    ack.await
                        .with_context(|| format!("a publish to `{input}` was not stored"))?;
                }
            }
        }
        Ok(())
    }

    fn collect(
        &self,
        output: &str,
        tally: Arc<Mutex<Tally>>,
    ) -> impl Future<Output = anyhow::Result<()>> + Send + 'static {
        let jetstream = self.jetstream.clone();
        let name = output_stream(output);
        async move {
            let consumer = jetstream
                .get_stream(&name)
                .await?
                .create_consumer(pull::Config {
                    deliver_policy: DeliverPolicy::All,
                    // Taking a record is all the count needs.
                    ack_policy: AckPolicy::None,
                    ..Default::default()
                })
                .await
                .with_context(|| format!("reading the output stream `{name}`"))?;
            let mut records = consumer.messages().await?;
            while let Some(record) = records.next().await {
                let record = record.with_context(|| format!("reading `{name}`"))?;
                queue::record(&mut lock(&tally), &record.payload);
            }
            Ok(())
        }
    }

    async fn delete(&mut self, input: &str, output: &str) {
        for stream in [
            input.to_owned(),
            queue_server::nats_dead_letter_stream(input),
            output_stream(output),
        ] {
            match self.jetstream.delete_stream(&stream).await {
                Ok(_) => {}
                // The dead-letter stream exists only if an instance made it.
                Err(error) if error.to_string().contains("not found") => {}
                Err(error) => eprintln!("could not delete stream `{stream}`: {error}"),
            }
        }
    }
}

/// Runs `pythia loadtest --broker nats`.
pub(crate) fn run(args: &Args) -> anyhow::Result<()> {
    let url = queue_server::nats(args.url.as_deref())?;
    queue::run(args, async || {
        let client = queue_server::connect_nats(&url, "pythia-loadtest").await?;
        Ok(Nats {
            url,
            jetstream: jetstream::new(client),
        })
    })
}
