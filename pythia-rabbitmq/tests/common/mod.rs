//! What the integration tests share: the broker (which must answer: a test
//! fails, never skips, when it does not), uniquely named queues deleted at
//! the end, and worker processes stopped at the end.

#![allow(dead_code, unreachable_pub)]

use std::collections::HashMap;
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
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

/// A unique queue name for this test run.
pub fn unique(name: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .subsec_nanos();
    format!("pythia-it-{name}-{}-{nanos}", std::process::id())
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

/// A message taken from a queue.
#[derive(Debug, Clone)]
pub struct Taken {
    pub payload: Vec<u8>,
    pub headers: HashMap<String, String>,
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

/// Counts of ids taken: how many distinct, and how many more than once.
pub fn count_ids(taken: &[Taken]) -> (usize, usize) {
    let mut seen: HashMap<&[u8], usize> = HashMap::new();
    for t in taken {
        *seen.entry(&t.payload).or_default() += 1;
    }
    let duplicates = seen.values().map(|n| n - 1).sum();
    (seen.len(), duplicates)
}

/// Worker processes, killed at the end of the test if still running.
#[derive(Default)]
pub struct Workers {
    children: Vec<Child>,
    logs: Vec<PathBuf>,
}

impl Workers {
    /// Starts a worker with `env` (and no other `PYTHIA_*` variable of this
    /// process); its stderr goes to a log file kept for a failing test.
    pub fn spawn(&mut self, env: &[(&str, String)]) -> usize {
        let log = std::env::temp_dir().join(format!(
            "pythia-rabbitmq-worker-{}-{}.log",
            std::process::id(),
            self.children.len()
        ));
        let mut command = Command::new(env!("CARGO_BIN_EXE_pythia-rabbitmq-test-worker"));
        for (name, _) in std::env::vars() {
            if name.starts_with("PYTHIA_") {
                command.env_remove(name);
            }
        }
        command
            .env("PYTHIA_RABBITMQ__URL", url())
            .env("RUST_LOG", "info")
            .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).expect("log file"));
        self.children
            .push(command.spawn().expect("the test worker starts"));
        self.logs.push(log);
        self.children.len() - 1
    }

    /// The process id of worker `i`.
    pub fn pid(&self, i: usize) -> u32 {
        self.children[i].id()
    }

    /// Sends `signal` to worker `i`.
    pub fn signal(&self, i: usize, signal: i32) {
        // SAFETY: kill(2) with a pid of a child this test started.
        let rc = unsafe { libc::kill(self.children[i].id() as i32, signal) };
        assert_eq!(rc, 0, "kill failed");
    }

    /// Waits for worker `i` to exit, at most `within`.
    pub fn wait(&mut self, i: usize, within: Duration) -> ExitStatus {
        let end = Instant::now() + within;
        loop {
            if let Some(status) = self.children[i].try_wait().expect("wait") {
                return status;
            }
            assert!(
                Instant::now() < end,
                "worker {i} did not exit in {within:?}:\n{}",
                self.log(i)
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// What worker `i` logged, for a failure message.
    pub fn log(&self, i: usize) -> String {
        let bytes = std::fs::read(&self.logs[i]).unwrap_or_default();
        let start = bytes.len().saturating_sub(4000);
        String::from_utf8_lossy(&bytes[start..]).into_owned()
    }

    /// Stops every running worker with SIGTERM and waits for them.
    pub fn stop_all(&mut self) {
        for i in 0..self.children.len() {
            if self.children[i].try_wait().ok().flatten().is_none() {
                self.signal(i, libc::SIGTERM);
            }
        }
        for i in 0..self.children.len() {
            let _ = self.wait(i, Duration::from_secs(30));
        }
    }
}

impl Drop for Workers {
    fn drop(&mut self) {
        for child in &mut self.children {
            let _ = child.kill();
            let _ = child.wait();
        }
        if !std::thread::panicking() {
            for log in &self.logs {
                let _ = std::fs::remove_file(log);
            }
        }
    }
}

/// The payloads `0..n` as text.
pub fn ids(n: u64) -> impl Iterator<Item = Vec<u8>> {
    (0..n).map(|i| i.to_string().into_bytes())
}
