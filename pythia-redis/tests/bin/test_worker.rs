//! A worker process for the Redis integration tests.
//!
//! Configured like any Pythia worker on Redis (`PYTHIA_*` variables:
//! `PYTHIA_REDIS__INPUT`, `PYTHIA_REDIS__MODE`, `PYTHIA_REDIS__OUTPUT`, …),
//! plus:
//! - `TEST_CODEC`: `raw` (default: bytes in, the same bytes out) or `json`
//!   (input `{"id": <u64>}`, output the same);
//! - `TEST_DELAY_MS`: sleep this long in each `process` call (I/O-bound work);
//! - `TEST_SLOW`: a payload (raw codec) whose `process` sleeps
//!   `TEST_SLOW_MS` instead (a long job);
//! - `TEST_FAIL`: a payload (raw codec) or id (json codec) whose `process`
//!   fails permanently;
//! - `TEST_OUTPUT`: when set, each message produces one output with a header
//!   `test.pid` naming this process, so the tests count from the output
//!   stream or list who processed what (in list mode, where outputs carry
//!   no headers, the output is `<payload>@<pid>`).
//!
//! It prints nothing the tests read: they count what it published.

use std::marker::PhantomData;
use std::time::Duration;

use bytes::Bytes;
use pythia_redis::{
    Config, Context, Json, Message, Mode, Output, Outputs, Process, ProcessError, Raw, RedisWorker,
    Worker,
};

/// What the test asked the worker to do.
struct Behaviour {
    delay: Duration,
    output: bool,
    pid: String,
    list: bool,
    slow: Option<(Vec<u8>, Duration)>,
    fail: Option<Vec<u8>>,
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
        let payload = msg.into_payload();
        let behaviour = &self.behaviour;
        if behaviour.fail.as_deref() == Some(&payload[..]) {
            return Err(ProcessError::permanent("the test asked this job to fail"));
        }
        if let Some((slow, wait)) = &behaviour.slow
            && slow[..] == payload[..]
        {
            tokio::time::sleep(*wait).await;
        }
        let payload = match behaviour.list {
            // A list element has no headers: the pid goes in the payload.
            true => {
                let mut tagged = payload.to_vec();
                tagged.extend_from_slice(format!("@{}", behaviour.pid).as_bytes());
                Bytes::from(tagged)
            }
            false => payload,
        };
        Ok(behaviour.run(payload).await)
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
        if self.behaviour.fail.as_deref() == Some(task.id.to_string().as_bytes()) {
            return Err(ProcessError::permanent("the test asked this job to fail"));
        }
        Ok(self.behaviour.run(task).await)
    }
}

async fn run<W: Worker>(worker: W, config: Config) -> Result<(), pythia_core::Error> {
    let summary = RedisWorker::builder(worker)
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
    let slow_ms: u64 = match std::env::var("TEST_SLOW_MS") {
        Ok(ms) => ms.parse()?,
        Err(_) => 0,
    };
    let behaviour = Behaviour {
        delay,
        output: std::env::var_os("TEST_OUTPUT").is_some(),
        pid: std::process::id().to_string(),
        list: config.redis.mode == Mode::List,
        slow: std::env::var("TEST_SLOW")
            .ok()
            .map(|p| (p.into_bytes(), Duration::from_millis(slow_ms))),
        fail: std::env::var("TEST_FAIL").ok().map(String::into_bytes),
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
