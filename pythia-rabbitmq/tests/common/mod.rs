//! What the integration tests share: the broker (which must answer: a test
//! fails, never skips, when it does not), uniquely named queues deleted at
//! the end, and worker processes stopped at the end.

#![allow(dead_code, unreachable_pub, unused_imports)]

use std::collections::HashMap;
use std::time::{Duration, Instant};

use futures::StreamExt;
use lapin::options::{
    BasicConsumeOptions, ConfirmSelectOptions, QueueDeclareOptions, QueueDeleteOptions,
};
use lapin::types::{AMQPValue, FieldTable};
use lapin::{BasicProperties, Channel, Connection, ConnectionProperties};

/// The broker the tests use.
pub fn url() -> String {
    std::env::var("PYTHIA_TEST_AMQP_URL").unwrap_or_else(|_| pythia_rabbitmq::DEFAULT_URL.into())
}

pub use pythia_core::testing::{Taken, Workers, count_ids, ids, unique};

/// Test worker processes on the server of [`url`].
pub fn workers() -> Workers {
    Workers::new(env!("CARGO_BIN_EXE_pythia-rabbitmq-test-worker"))
        .env("PYTHIA_RABBITMQ__URL", url())
}

/// A connection with a confirm channel.
pub struct Broker {
    connection: Connection,
    channel: Channel,
    /// Queues deleted when the broker handle is dropped.
    owned: Vec<String>,
}

impl Broker {
    /// Connects; panics with what to do when RabbitMQ does not answer.
    pub async fn connect() -> Self {
        let connection = Connection::connect(&url(), ConnectionProperties::default())
            .await
            .unwrap_or_else(|e| {
                panic!(
                    "RabbitMQ does not answer at 127.0.0.1:5672 ({e}): these tests need it; start it with \
                     `service rabbitmq-server start` (or `cargo xtask prereq`)"
                )
            });
        let channel = connection.create_channel().await.expect("channel");
        channel
            .confirm_select(ConfirmSelectOptions::default())
            .await
            .expect("confirm.select");
        Self {
            connection,
            channel,
            owned: Vec::new(),
        }
    }

    /// Declares a durable queue deleted at the end of the test.
    pub async fn queue(&mut self, name: &str) {
        self.queue_with(name, FieldTable::default()).await;
    }

    /// Declares a durable queue with `arguments`, deleted at the end.
    pub async fn queue_with(&mut self, name: &str, arguments: FieldTable) {
        self.channel
            .queue_declare(name.into(), QueueDeclareOptions::durable(), arguments)
            .await
            .expect("queue.declare");
        self.own(name);
    }

    /// Deletes `name` at the end (a queue the worker declares).
    pub fn own(&mut self, name: &str) {
        if !self.owned.iter().any(|q| q == name) {
            self.owned.push(name.to_owned());
        }
    }

    /// Publishes every payload to `queue`, persistent, and waits for the confirms.
    pub async fn publish(&self, queue: &str, payloads: impl IntoIterator<Item = Vec<u8>>) {
        let mut pending = 0;
        for payload in payloads {
            self.channel
                .basic_publish(
                    "".into(),
                    queue.into(),
                    Default::default(),
                    &payload,
                    BasicProperties::default().with_delivery_mode(2),
                )
                .await
                .expect("basic.publish");
            pending += 1;
            if pending == 500 {
                self.confirm().await;
                pending = 0;
            }
        }
        self.confirm().await;
    }

    async fn confirm(&self) {
        let returned = self.channel.wait_for_confirms().await.expect("confirms");
        assert!(returned.is_empty(), "test messages were returned");
    }

    /// Ready messages and consumers of `queue`.
    pub async fn depth(&self, queue: &str) -> (u32, u32) {
        let channel = self.connection.create_channel().await.expect("channel");
        let options = QueueDeclareOptions {
            passive: true,
            ..Default::default()
        };
        let found = channel
            .queue_declare(queue.into(), options, FieldTable::default())
            .await
            .expect("the queue exists");
        let _ = channel.close(200, "".into()).await;
        (found.message_count(), found.consumer_count())
    }

    /// Whether `queue` exists (a passive declare, on a channel of its own).
    pub async fn exists(&self, queue: &str) -> bool {
        let channel = self.connection.create_channel().await.expect("channel");
        let options = QueueDeclareOptions {
            passive: true,
            ..Default::default()
        };
        let found = channel
            .queue_declare(queue.into(), options, FieldTable::default())
            .await
            .is_ok();
        let _ = channel.close(200, "".into()).await;
        found
    }

    /// Waits until `queue` has `consumers` consumers.
    pub async fn wait_for_consumers(&self, queue: &str, consumers: u32, within: Duration) {
        let end = Instant::now() + within;
        loop {
            if self.depth(queue).await.1 == consumers {
                return;
            }
            assert!(
                Instant::now() < end,
                "{queue} did not get {consumers} consumers in {within:?}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Takes messages from `queue` (acknowledged at once) until `expected`
    /// arrived and `quiet` passed without another, or until `within`.
    pub async fn take(
        &self,
        queue: &str,
        expected: usize,
        quiet: Duration,
        within: Duration,
    ) -> Vec<Taken> {
        let channel = self.connection.create_channel().await.expect("channel");
        let options = BasicConsumeOptions {
            no_ack: true,
            ..Default::default()
        };
        let mut consumer = channel
            .basic_consume(queue.into(), "".into(), options, FieldTable::default())
            .await
            .expect("basic.consume");
        let end = Instant::now() + within;
        let mut taken = Vec::new();
        loop {
            let now = Instant::now();
            if now >= end {
                break;
            }
            let wait = if taken.len() >= expected {
                quiet
            } else {
                end - now
            };
            match tokio::time::timeout(wait.min(end - now), consumer.next()).await {
                Ok(Some(Ok(delivery))) => taken.push(Taken {
                    payload: delivery.data.clone(),
                    headers: headers(delivery.properties.headers().as_ref()),
                }),
                Ok(_) => panic!("the consumer of {queue} ended"),
                Err(_) if taken.len() >= expected => break,
                Err(_) => {}
            }
        }
        let _ = channel.close(200, "".into()).await;
        taken
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        let queues = std::mem::take(&mut self.owned);
        // A fresh runtime on its own thread: drop can run inside the test's.
        let _ = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            runtime.block_on(async {
                let Ok(connection) =
                    Connection::connect(&url(), ConnectionProperties::default()).await
                else {
                    return;
                };
                if let Ok(channel) = connection.create_channel().await {
                    for queue in &queues {
                        let _ = channel
                            .queue_delete(queue.as_str().into(), QueueDeleteOptions::default())
                            .await;
                    }
                }
                let _ = connection.close(200, "".into()).await;
            });
        })
        .join();
    }
}

fn headers(table: Option<&FieldTable>) -> HashMap<String, String> {
    let mut out = HashMap::new();
    for (name, value) in table.map(|t| t.inner().iter()).into_iter().flatten() {
        let text = match value {
            AMQPValue::LongString(s) => String::from_utf8_lossy(s.as_bytes()).into_owned(),
            AMQPValue::ShortString(s) => s.as_str().to_owned(),
            other => format!("{other:?}"),
        };
        out.insert(name.as_str().to_owned(), text);
    }
    out
}
