//! A worker process for the end-to-end tests.
//!
//! Configured like any Pythia worker (`PYTHIA_*` variables), plus:
//! - `TEST_RECORD_FILE`: appends `processed <pid> <topic> <partition> <offset> <start_us> <end_us>`
//!   after each processed message, `failed <pid> <topic> <partition> <offset>` after each
//!   failed attempt, and `assigned <pid> <topic/partition,...>` on every assignment change;
//! - `TEST_CODEC`: `raw` (default, bytes in and out), `json` (input `{"id": <u64>}`) or
//!   `utf8` (input a string);
//! - `TEST_DELAY_MS`: sleep this long in each `process` call;
//! - `TEST_FAIL_AT`: `PARTITION:OFFSET[,PARTITION:OFFSET...]` whose processing returns an error;
//! - `TEST_FAIL_TIMES`: fail only the first this many attempts there (default: every attempt);
//! - `TEST_FAIL_PERMANENT`: when set, those errors are permanent (not retried);
//! - `TEST_PANIC_AT`: `PARTITION:OFFSET` whose processing panics;
//! - `TEST_OUTPUT`: when set, each message produces one output (its payload) to the output topic;
//! - `TEST_GATE_FILE`: `process` waits until this file exists (a blocked or hung handler);
//! - `TEST_CPU_MS`: spend this long busy on the runtime's CPU pool (`Context::compute`)
//!   in each `process` call;
//! - `TEST_CPU_PANIC_AT`: `PARTITION:OFFSET` whose CPU work panics;
//! - `TEST_RECORD_IDENTITY`: when set, also appends `identity <pid> <instance> <member_id>`
//!   after each processed message (`-` while the member id is unknown), from its `Context`.

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::marker::PhantomData;
use std::sync::Mutex;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use pythia_kafka::{
    Config, Context, Json, KafkaWorker, Message, Outputs, Process, ProcessError, Raw, Utf8, Worker,
};

/// What the test asked the worker to do.
struct Behaviour {
    record: Mutex<File>,
    delay: Duration,
    fail_at: Vec<(i32, i64)>,
    fail_times: Option<u32>,
    fail_permanent: bool,
    failures: Mutex<HashMap<(i32, i64), u32>>,
    panic_at: Option<(i32, i64)>,
    output: bool,
    /// `process` waits until this file exists.
    gate: Option<std::path::PathBuf>,
    cpu: Duration,
    cpu_panic_at: Option<(i32, i64)>,
    identity: bool,
}

/// The test worker for codec `C`; declared by hand, with no spec: everything
/// comes from `PYTHIA_*` variables.
struct TestWorker<C> {
    behaviour: Behaviour,
    codec: PhantomData<fn() -> C>,
}

#[derive(serde::Deserialize, serde::Serialize)]
struct Task {
    id: u64,
}

fn micros() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_micros()
}

impl Behaviour {
    fn write(&self, line: String) {
        // One write per line on an O_APPEND file: whole lines even across processes.
        let mut file = self.record.lock().unwrap_or_else(|p| p.into_inner());
        let _ = file.write_all(line.as_bytes());
    }

    /// Everything but the output: delays, injected failures, the record line.
    async fn run<T>(&self, msg: &Message<T>, ctx: &Context) -> Result<(), ProcessError> {
        if let Some(gate) = &self.gate {
            while !gate.exists() {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
        let start = micros();
        let at = (msg.partition(), msg.offset());
        if self.fail_at.contains(&at) {
            let mut failures = self.failures.lock().unwrap_or_else(|p| p.into_inner());
            let count = failures.entry(at).or_default();
            if self.fail_times.is_none_or(|times| *count < times) {
                *count += 1;
                drop(failures);
                self.write(format!(
                    "failed {} {} {} {}\n",
                    std::process::id(),
                    msg.topic(),
                    msg.partition(),
                    msg.offset()
                ));
                return Err(if self.fail_permanent {
                    ProcessError::permanent("injected permanent failure")
                } else {
                    ProcessError::msg("injected failure")
                });
            }
        }
        if self.panic_at == Some(at) {
            panic!("injected panic");
        }
        if !self.delay.is_zero() {
            tokio::time::sleep(self.delay).await;
        }
        if !self.cpu.is_zero() || self.cpu_panic_at.is_some() {
            let (busy, panics) = (self.cpu, self.cpu_panic_at == Some(at));
            ctx.compute(move || {
                assert!(!panics, "injected CPU panic");
                let until = std::time::Instant::now() + busy;
                let mut x = 0u64;
                while std::time::Instant::now() < until {
                    x = x.wrapping_mul(6364136223846793005).wrapping_add(1);
                }
                std::hint::black_box(x)
            })
            .await?;
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
        if self.identity {
            self.write(format!(
                "identity {} {} {}\n",
                std::process::id(),
                ctx.instance(),
                ctx.member_id().as_deref().unwrap_or("-")
            ));
        }
        Ok(())
    }
}

impl Worker for TestWorker<Raw> {
    type Codec = Raw;
}

impl Process for TestWorker<Raw> {
    type Input = Bytes;
    type Output = Bytes;

    async fn process(
        &self,
        msg: Message<Bytes>,
        ctx: &Context,
    ) -> Result<Outputs<Bytes>, ProcessError> {
        self.behaviour.run(&msg, ctx).await?;
        Ok(if self.behaviour.output {
            Outputs::one(msg.into_payload())
        } else {
            Outputs::none()
        })
    }
}

impl Worker for TestWorker<Json> {
    type Codec = Json;
}

impl Process for TestWorker<Json> {
    type Input = Task;
    type Output = Task;

    async fn process(
        &self,
        msg: Message<Task>,
        ctx: &Context,
    ) -> Result<Outputs<Task>, ProcessError> {
        self.behaviour.run(&msg, ctx).await?;
        Ok(if self.behaviour.output {
            Outputs::one(msg.into_payload())
        } else {
            Outputs::none()
        })
    }
}

impl Worker for TestWorker<Utf8> {
    type Codec = Utf8;
}

impl Process for TestWorker<Utf8> {
    type Input = String;
    type Output = String;

    async fn process(
        &self,
        msg: Message<String>,
        ctx: &Context,
    ) -> Result<Outputs<String>, ProcessError> {
        self.behaviour.run(&msg, ctx).await?;
        Ok(if self.behaviour.output {
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

fn positions(name: &str) -> Vec<(i32, i64)> {
    std::env::var(name)
        .map(|v| {
            v.split(',')
                .map(|at| {
                    let (p, o) = at.split_once(':').expect("PARTITION:OFFSET");
                    (p.parse().expect("partition"), o.parse().expect("offset"))
                })
                .collect()
        })
        .unwrap_or_default()
}

async fn run<W: Worker>(worker: W, config: Config, record_path: &str) -> anyhow::Result<()> {
    let instance = KafkaWorker::builder(worker).config(config).build()?;
    let mut status = instance.status();
    let mut assigned_log = OpenOptions::new().append(true).open(record_path)?;
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

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let config = Config::load()?;
    pythia_kafka::init_logs(&config.log);
    let record_path = std::env::var("TEST_RECORD_FILE").unwrap_or_else(|_| "/dev/null".into());
    let record = OpenOptions::new()
        .create(true)
        .append(true)
        .open(&record_path)?;
    let behaviour = Behaviour {
        record: Mutex::new(record),
        delay: Duration::from_millis(env_parse("TEST_DELAY_MS")?.unwrap_or(0)),
        fail_at: positions("TEST_FAIL_AT"),
        fail_times: env_parse("TEST_FAIL_TIMES")?,
        fail_permanent: std::env::var_os("TEST_FAIL_PERMANENT").is_some(),
        failures: Mutex::default(),
        panic_at: positions("TEST_PANIC_AT").first().copied(),
        output: std::env::var_os("TEST_OUTPUT").is_some(),
        gate: std::env::var_os("TEST_GATE_FILE").map(Into::into),
        cpu: Duration::from_millis(env_parse("TEST_CPU_MS")?.unwrap_or(0)),
        cpu_panic_at: positions("TEST_CPU_PANIC_AT").first().copied(),
        identity: std::env::var_os("TEST_RECORD_IDENTITY").is_some(),
    };
    match std::env::var("TEST_CODEC").as_deref().unwrap_or("raw") {
        "raw" => {
            run(
                TestWorker::<Raw> {
                    behaviour,
                    codec: PhantomData,
                },
                config,
                &record_path,
            )
            .await
        }
        "json" => {
            run(
                TestWorker::<Json> {
                    behaviour,
                    codec: PhantomData,
                },
                config,
                &record_path,
            )
            .await
        }
        "utf8" => {
            run(
                TestWorker::<Utf8> {
                    behaviour,
                    codec: PhantomData,
                },
                config,
                &record_path,
            )
            .await
        }
        other => anyhow::bail!("TEST_CODEC={other}: use raw, json or utf8"),
    }
}
