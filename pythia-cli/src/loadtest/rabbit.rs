//! `pythia loadtest --broker rabbitmq`: instances share one durable queue,
//! each with its basic.qos prefetch; the load is published persistent and
//! confirmed, and the records are read from an output queue.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context as _;
use futures::StreamExt as _;
use lapin::options::BasicConsumeOptions;
use lapin::types::FieldTable;
use pythia_rabbitmq::AmqpUrl;

use super::Args;
use super::fleet::Tally;
use super::queue::{self, LoadQueues, lock};
use crate::broker::BrokerKind;
use crate::rabbit;

/// A RabbitMQ broker and a connection to it.
struct Rabbit {
    url: AmqpUrl,
    connection: Arc<lapin::Connection>,
}

impl LoadQueues for Rabbit {
    const KIND: BrokerKind = BrokerKind::Rabbitmq;

    fn redacted_url(&self) -> String {
        self.url.redacted()
    }

    fn instance_env(&self, input: &str, output: &str, prefetch: u16) -> Vec<(String, String)> {
        [
            (rabbit::URL_VARIABLE, self.url.expose()),
            ("PYTHIA_RABBITMQ__QUEUE", input),
            ("PYTHIA_RABBITMQ__OUTPUT", output),
            ("PYTHIA_RABBITMQ__PREFETCH", &prefetch.to_string()),
        ]
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .into()
    }

    async fn prepare(&mut self, input: &str, output: &str) -> anyhow::Result<()> {
        let channel = self.connection.create_channel().await?;
        rabbit::declare(&channel, input).await?;
        rabbit::declare(&channel, output).await?;
        let _ = channel.close(200, "declared".into()).await;
        Ok(())
    }

    async fn consumers(&mut self, input: &str) -> anyhow::Result<usize> {
        Ok(rabbit::depth(&self.connection, input).await?.consumers as usize)
    }

    async fn send(
        &mut self,
        input: &str,
        count: u64,
        pace: Option<Duration>,
        payload: impl FnMut(u64, &mut Vec<u8>) + Send,
    ) -> anyhow::Result<()> {
        let channel = rabbit::confirm_channel(&self.connection).await?;
        let sent = rabbit::publish(&channel, input, count, pace, payload).await;
        let _ = channel.close(200, "load sent".into()).await;
        sent
    }

    fn collect(
        &self,
        output: &str,
        tally: Arc<Mutex<Tally>>,
    ) -> impl Future<Output = anyhow::Result<()>> + Send + 'static {
        let connection = self.connection.clone();
        let output = output.to_owned();
        async move {
            let channel = connection.create_channel().await?;
            // Taking a record is all the count needs; acks would only slow it.
            let options = BasicConsumeOptions {
                no_ack: true,
                ..BasicConsumeOptions::default()
            };
            let mut consumer = channel
                .basic_consume(
                    output.as_str().into(),
                    "".into(),
                    options,
                    FieldTable::default(),
                )
                .await
                .with_context(|| format!("consuming the output queue `{output}`"))?;
            while let Some(delivery) = consumer.next().await {
                let delivery = delivery.context("reading the output queue")?;
                queue::record(&mut lock(&tally), &delivery.data);
            }
            Ok(())
        }
    }

    async fn delete(&mut self, input: &str, output: &str) {
        let owned = [input.to_owned(), output.to_owned(), format!("{input}.dlq")];
        rabbit::delete(&self.connection, &owned).await;
    }
}

/// Runs `pythia loadtest --broker rabbitmq`.
pub(crate) fn run(args: &Args) -> anyhow::Result<()> {
    let url = rabbit::url(args.url.as_deref())?;
    queue::run(args, async || {
        let connection = rabbit::connect(&url, "pythia-loadtest").await?;
        Ok(Rabbit {
            url,
            connection: Arc::new(connection),
        })
    })
}
