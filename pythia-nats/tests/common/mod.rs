//! What the integration tests share: the server (which must answer: a test
//! fails, never skips, when it does not), uniquely named streams deleted at
//! the end, and worker processes stopped at the end.

#![allow(dead_code, unreachable_pub, unused_imports)]

use std::collections::HashMap;
use std::time::{Duration, Instant};

use async_nats::jetstream::consumer::{AckPolicy, DeliverPolicy, pull};
use async_nats::jetstream::{self, stream};
use futures::StreamExt;

/// The server the tests use.
pub fn url() -> String {
    std::env::var("PYTHIA_TEST_NATS_URL").unwrap_or_else(|_| pythia_nats::DEFAULT_URL.into())
}

pub use pythia_core::testing::{Taken, Workers, count_ids, ids, unique};

/// Test worker processes on the server of [`url`].
pub fn workers() -> Workers {
    Workers::new(env!("CARGO_BIN_EXE_pythia-nats-test-worker")).env("PYTHIA_NATS__URL", url())
}

/// A JetStream client of the test's own, counting from outside the workers.
pub struct Broker {
    url: String,
    js: jetstream::Context,
    /// Streams deleted when the handle is dropped.
    owned: Vec<String>,
}

impl Broker {
    /// Connects to the shared server; panics with what to do when it does not answer.
    pub async fn connect() -> Self {
        Self::connect_to(&url()).await
    }

    /// Connects to `url`; panics with what to do when it does not answer.
    pub async fn connect_to(url: &str) -> Self {
        let client = async_nats::ConnectOptions::new()
            .connection_timeout(Duration::from_secs(5))
            .connect(url)
            .await
            .unwrap_or_else(|e| {
                panic!(
                    "NATS does not answer at {url} ({e}): these tests need a server with JetStream; \
                     start one with `nats-server -js` (on 127.0.0.1:4222) or point PYTHIA_TEST_NATS_URL at one"
                )
            });
        let js = jetstream::new(client);
        Self {
            url: url.to_owned(),
            js,
            owned: Vec::new(),
        }
    }

    /// The JetStream context.
    pub fn js(&self) -> &jetstream::Context {
        &self.js
    }

    /// Creates a stream holding `subject` (limits retention, file storage),
    /// deleted at the end of the test.
    pub async fn stream(&mut self, name: &str, subject: &str) {
        self.js
            .create_stream(stream::Config {
                name: name.to_owned(),
                subjects: vec![subject.to_owned()],
                storage: stream::StorageType::File,
                ..Default::default()
            })
            .await
            .unwrap_or_else(|e| {
                panic!(
                    "cannot create stream {name} at {} ({e}): the server must run with JetStream (-js)",
                    self.url
                )
            });
        self.own(name);
    }

    /// Deletes stream `name` at the end (one the worker creates).
    pub fn own(&mut self, name: &str) {
        if !self.owned.iter().any(|s| s == name) {
            self.owned.push(name.to_owned());
        }
    }

    /// Publishes every payload to `subject` and waits for the PubAcks.
    pub async fn publish(&self, subject: &str, payloads: impl IntoIterator<Item = Vec<u8>>) {
        let mut pending = Vec::new();
        for payload in payloads {
            let ack = self
                .js
                .publish(subject.to_owned(), payload.into())
                .await
                .expect("publish");
            pending.push(ack);
            if pending.len() == 500 {
                for ack in pending.drain(..) {
                    ack.await.expect("PubAck");
                }
            }
        }
        for ack in pending {
            ack.await.expect("PubAck");
        }
    }

    /// The consumer's info, if it exists.
    pub async fn consumer(
        &self,
        stream: &str,
        consumer: &str,
    ) -> Option<jetstream::consumer::Info> {
        let stream = self.js.get_stream_no_info(stream).await.ok()?;
        stream.consumer_info(consumer).await.ok()
    }

    /// Messages in `stream` (a work-queue stream drops acknowledged ones).
    pub async fn messages(&self, stream: &str) -> u64 {
        let mut stream = self.js.get_stream(stream).await.expect("the stream exists");
        stream.info().await.expect("stream info").state.messages
    }

    /// Waits until the consumer has `waiting` pull requests open: that many
    /// instances are fetching.
    pub async fn wait_for_fetchers(
        &self,
        stream: &str,
        consumer: &str,
        waiting: usize,
        within: Duration,
    ) {
        let end = Instant::now() + within;
        loop {
            if let Some(info) = self.consumer(stream, consumer).await
                && info.num_waiting >= waiting
            {
                return;
            }
            assert!(
                Instant::now() < end,
                "{consumer} on {stream} did not get {waiting} fetching instances in {within:?}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Reads `stream` from its start until `expected` messages arrived and
    /// `quiet` passed without another, or until `within`.
    pub async fn take(
        &self,
        stream: &str,
        expected: usize,
        quiet: Duration,
        within: Duration,
    ) -> Vec<Taken> {
        let stream = self.js.get_stream(stream).await.expect("the stream exists");
        let consumer = stream
            .create_consumer(pull::Config {
                deliver_policy: DeliverPolicy::All,
                ack_policy: AckPolicy::None,
                ..Default::default()
            })
            .await
            .expect("a reader of the stream");
        let mut messages = consumer.messages().await.expect("read the stream");
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
            match tokio::time::timeout(wait.min(end - now), messages.next()).await {
                Ok(Some(Ok(message))) => {
                    let mut headers = HashMap::new();
                    for (name, values) in message.headers.iter().flat_map(|h| h.iter()) {
                        if let Some(value) = values.last() {
                            headers.insert(name.to_string(), value.as_str().to_owned());
                        }
                    }
                    taken.push(Taken {
                        payload: message.payload.to_vec(),
                        headers,
                    });
                }
                Ok(Some(Err(error))) => {
                    panic!("reading {}: {error}", stream.cached_info().config.name)
                }
                Ok(None) => panic!("the reader of {} ended", stream.cached_info().config.name),
                Err(_) if taken.len() >= expected => break,
                Err(_) => {}
            }
        }
        taken
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        let streams = std::mem::take(&mut self.owned);
        let url = self.url.clone();
        // A fresh runtime on its own thread: drop can run inside the test's.
        let _ = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            runtime.block_on(async {
                let connect = async_nats::ConnectOptions::new()
                    .connection_timeout(Duration::from_secs(2))
                    .connect(url);
                let Ok(client) = connect.await else { return };
                let js = jetstream::new(client);
                for stream in &streams {
                    let _ = js.delete_stream(stream).await;
                }
            });
        })
        .join();
    }
}

/// The input subject, output subject and their streams of one test, and
/// the worker settings that use them.
pub struct Setup {
    pub input: String,
    pub output: String,
    pub stream: String,
    pub output_stream: String,
    pub consumer: String,
}

impl Setup {
    /// Names for test `name`; creates the output stream and owns the
    /// streams the worker creates (input and dead letters).
    pub async fn new(broker: &mut Broker, name: &str) -> Self {
        let input = unique(name);
        let setup = Self {
            output: format!("{input}.out"),
            stream: input.clone(),
            output_stream: format!("{input}_OUT"),
            consumer: format!("{input}-workers"),
            input,
        };
        broker.stream(&setup.output_stream, &setup.output).await;
        broker.own(&setup.stream);
        broker.own(&format!("{}_DLQ", setup.stream));
        setup
    }

    /// The dead-letter subject and stream.
    pub fn dead_letters(&self) -> (String, String) {
        (
            format!("{}.dlq", self.input),
            format!("{}_DLQ", self.stream),
        )
    }

    /// The worker's settings: subject, stream, consumer, output, and `extra`.
    pub fn env(&self, extra: &[(&'static str, &str)]) -> Vec<(&'static str, String)> {
        let mut env = vec![
            ("PYTHIA_NATS__SUBJECT", self.input.clone()),
            ("PYTHIA_NATS__STREAM", self.stream.clone()),
            ("PYTHIA_NATS__CONSUMER", self.consumer.clone()),
            ("PYTHIA_NATS__OUTPUT", self.output.clone()),
            ("TEST_OUTPUT", "1".into()),
        ];
        env.extend(extra.iter().map(|(k, v)| (*k, (*v).to_owned())));
        env
    }
}
