//! A worker process for the NATS integration tests.
//!
//! Configured like any Pythia worker on NATS (`PYTHIA_*` variables:
//! `PYTHIA_NATS__SUBJECT`, `PYTHIA_NATS__OUTPUT`, …), plus:
//! - `TEST_CODEC`: `raw` (default: bytes in, the same bytes out) or `json`
//!   (input `{"id": <u64>}`, output the same);
//! - `TEST_DELAY_MS`: sleep this long in each `process` call (I/O-bound work);
//! - `TEST_LONG_MS`: a raw payload starting with `long` sleeps this long
//!   instead (a job longer than `ack_wait`);
//! - `TEST_FAIL_ID`: a json job with this id fails with a permanent error;
//! - `TEST_OUTPUT`: when set, each message produces one output with a header
//!   `test.pid` naming this process, so the tests count from the output
//!   subject who processed what.
//!
//! It prints nothing the tests read: they count what it published.

use std::marker::PhantomData;
use std::time::Duration;

use bytes::Bytes;
use pythia_nats::{
    Config, Context, Json, Message, NatsWorker, Output, Outputs, Process, ProcessError, Raw, Worker,
};

/// What the test asked the worker to do.
struct Behaviour {
    delay: Duration,
    long: Duration,
    fail_id: Option<u64>,
    output: bool,
    pid: String,
}

/// The test worker for codec `C`, with no spec: everything comes from
/// `PYTHIA_*` variables.
struct TestWorker<C> {
    behaviour: Behaviour,
    codec: PhantomData<fn() -> C>,
}

#[derive(serde::Deserialize, serde::Serialize)]
struct Task {
    id: u64,
}

impl Behaviour {
    async fn run<T>(&self, value: T, delay: Duration) -> Outputs<T> {
        if !delay.is_zero() {
            tokio::time::sleep(delay).await;
        }
        if self.output {
            Outputs::from(vec![
                Output::new(value).header("test.pid", self.pid.clone()),
            ])
        } else {
            Outputs::none()
        }
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
        _: &Context,
    ) -> Result<Outputs<Bytes>, ProcessError> {
        let payload = msg.into_payload();
        let delay = match payload.starts_with(b"long") {
            true => self.behaviour.long,
            false => self.behaviour.delay,
        };
        Ok(self.behaviour.run(payload, delay).await)
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
        _: &Context,
    ) -> Result<Outputs<Task>, ProcessError> {
        let task = msg.into_payload();
        if Some(task.id) == self.behaviour.fail_id {
            return Err(ProcessError::permanent(format!(
                "job {} is refused by the test",
                task.id
            )));
        }
        Ok(self.behaviour.run(task, self.behaviour.delay).await)
    }
}

async fn run<W: Worker>(worker: W, config: Config) -> Result<(), pythia_core::Error> {
    let summary = NatsWorker::builder(worker)
        .config(config)
        .build()?
        .run_until_signal()
        .await?;
    eprintln!("test worker done: processed={}", summary.processed);
    Ok(())
}

fn millis(name: &str) -> Result<Duration, Box<dyn std::error::Error>> {
    Ok(match std::env::var(name) {
        Ok(ms) => Duration::from_millis(ms.parse()?),
        Err(_) => Duration::ZERO,
    })
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let config = Config::load()?;
    let behaviour = Behaviour {
        delay: millis("TEST_DELAY_MS")?,
        long: millis("TEST_LONG_MS")?,
        fail_id: match std::env::var("TEST_FAIL_ID") {
            Ok(id) => Some(id.parse()?),
            Err(_) => None,
        },
        output: std::env::var_os("TEST_OUTPUT").is_some(),
        pid: std::process::id().to_string(),
    };
    match std::env::var("TEST_CODEC").as_deref().unwrap_or("raw") {
        "raw" => {
            let worker = TestWorker::<Raw> {
                behaviour,
                codec: PhantomData,
            };
            run(worker, config).await?;
        }
        "json" => {
            let worker = TestWorker::<Json> {
                behaviour,
                codec: PhantomData,
            };
            run(worker, config).await?;
        }
        other => return Err(format!("TEST_CODEC={other}: use raw or json").into()),
    }
    Ok(())
}
