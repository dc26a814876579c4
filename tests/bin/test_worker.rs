//! A worker process for the end-to-end tests.
//!
//! Configured like any Pythia worker (`PYTHIA_*` variables), plus:
//! - `TEST_RECORD_FILE`: appends `processed <pid> <topic> <partition> <offset> <start_us> <end_us>`
//!   after each message and `assigned <pid> <topic/partition,...>` on every assignment change;
//! - `TEST_DELAY_MS`: sleep this long in each `process` call;
//! - `TEST_FAIL_AT`: `PARTITION:OFFSET` whose processing returns an error;
//! - `TEST_PANIC_AT`: `PARTITION:OFFSET` whose processing panics;
//! - `TEST_OUTPUT`: when set, each message produces one output (its payload) to the output topic;
//! - `TEST_GATE_FILE`: `process` waits until this file exists (a blocked or hung handler).

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::sync::Mutex;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use pythia_kafka::{Config, Context, KafkaWorker, Message, Outputs, ProcessError, Raw, Worker};

struct TestWorker {
    record: Mutex<File>,
    delay: Duration,
    fail_at: Option<(i32, i64)>,
    panic_at: Option<(i32, i64)>,
    output: bool,
    gate: Option<std::path::PathBuf>,
}

fn micros() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_micros()
}

impl TestWorker {
    fn write(&self, line: String) {
        // One write per line on an O_APPEND file: whole lines even across processes.
        let mut file = self.record.lock().unwrap_or_else(|p| p.into_inner());
        let _ = file.write_all(line.as_bytes());
    }
}

impl Worker for TestWorker {
    type Input = Bytes;
    type Output = Bytes;
    type Codec = Raw;

    async fn process(
        &self,
        msg: Message<Bytes>,
        _: &Context,
    ) -> Result<Outputs<Bytes>, ProcessError> {
        if let Some(gate) = &self.gate {
            while !gate.exists() {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
        let start = micros();
        if self.fail_at == Some((msg.partition(), msg.offset())) {
            return Err(ProcessError::msg("injected failure"));
        }
        if self.panic_at == Some((msg.partition(), msg.offset())) {
            panic!("injected panic");
        }
        if !self.delay.is_zero() {
            tokio::time::sleep(self.delay).await;
        }
        self.write(format!(
            "processed {} {} {} {} {} {}\n",
            std::process::id(),
            msg.topic(),
            msg.partition(),
            msg.offset(),
            start,
            micros()
        ));
        Ok(if self.output {
            Outputs::one(msg.into_payload())
        } else {
            Outputs::none()
        })
    }
}

fn env_parse<T: std::str::FromStr>(name: &str) -> anyhow::Result<Option<T>> {
    match std::env::var(name) {
        Ok(v) => v
            .parse()
            .map(Some)
            .map_err(|_| anyhow::anyhow!("{name}={v} does not parse")),
        Err(_) => Ok(None),
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let config = Config::load()?;
    pythia_kafka::init_logs(&config.log);
    let record_path = std::env::var("TEST_RECORD_FILE").unwrap_or_else(|_| "/dev/null".into());
    let record = OpenOptions::new()
        .create(true)
        .append(true)
        .open(&record_path)?;
    let position = |name: &str| {
        std::env::var(name).ok().map(|v| {
            let (p, o) = v.split_once(':').expect("PARTITION:OFFSET");
            (p.parse().expect("partition"), o.parse().expect("offset"))
        })
    };
    let worker = TestWorker {
        record: Mutex::new(record),
        delay: Duration::from_millis(env_parse("TEST_DELAY_MS")?.unwrap_or(0)),
        fail_at: position("TEST_FAIL_AT"),
        panic_at: position("TEST_PANIC_AT"),
        output: std::env::var_os("TEST_OUTPUT").is_some(),
        gate: std::env::var_os("TEST_GATE_FILE").map(Into::into),
    };
    let instance = KafkaWorker::new(worker, config)?;
    let mut status = instance.status();
    let mut assigned_log = OpenOptions::new().append(true).open(&record_path)?;
    tokio::spawn(async move {
        while status.changed().await.is_ok() {
            let partitions: Vec<String> = status
                .borrow()
                .assigned
                .iter()
                .map(|p| p.to_string())
                .collect();
            let line = format!("assigned {} {}\n", std::process::id(), partitions.join(","));
            let _ = assigned_log.write_all(line.as_bytes());
        }
    });
    let summary = instance.run(pythia_kafka::core::shutdown::signal()).await?;
    eprintln!("test worker done: processed={}", summary.processed);
    Ok(())
}
