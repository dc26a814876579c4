//! A worker process for the RabbitMQ integration tests.
//!
//! Configured like any Pythia worker on RabbitMQ (`PYTHIA_*` variables:
//! `PYTHIA_RABBITMQ__QUEUE`, `PYTHIA_RABBITMQ__OUTPUT`, …), plus:
//! - `TEST_CODEC`: `raw` (default: bytes in, the same bytes out) or `json`
//!   (input `{"id": <u64>}`, output the same);
//! - `TEST_DELAY_MS`: sleep this long in each `process` call (I/O-bound work);
//! - `TEST_OUTPUT`: when set, each message produces one output with a header
//!   `test.pid` naming this process, so the tests count from the output
//!   queue who processed what.
//!
//! It prints nothing the tests read: they count what it published.

use std::marker::PhantomData;
use std::time::Duration;

use bytes::Bytes;
use pythia_rabbitmq::{
    Config, Context, Json, Message, Output, Outputs, Process, ProcessError, RabbitWorker, Raw,
    Worker,
};

/// What the test asked the worker to do.
struct Behaviour {
    delay: Duration,
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
    async fn run<T>(&self, value: T) -> Outputs<T> {
        if !self.delay.is_zero() {
            tokio::time::sleep(self.delay).await;
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
        Ok(self.behaviour.run(msg.into_payload()).await)
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
        Ok(self.behaviour.run(msg.into_payload()).await)
    }
}

async fn run<W: Worker>(worker: W, config: Config) -> Result<(), pythia_core::Error> {
    let summary = RabbitWorker::builder(worker)
        .config(config)
        .build()?
        .run_until_signal()
        .await?;
    eprintln!("test worker done: processed={}", summary.processed);
    Ok(())
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let config = Config::load()?;
    let delay = match std::env::var("TEST_DELAY_MS") {
        Ok(ms) => Duration::from_millis(ms.parse()?),
        Err(_) => Duration::ZERO,
    };
    let behaviour = Behaviour {
        delay,
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
