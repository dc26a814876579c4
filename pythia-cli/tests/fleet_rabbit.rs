//! `pythia fleet --queue`: real RabbitMQ worker processes (`pythia
//! loadtest-queue-worker`) under the supervisor against the machine's
//! RabbitMQ, scaled on the queue's backlog (ready + unacknowledged), counted
//! from outside: the output queue read by a fresh consumer.

mod common;

use std::collections::HashMap;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{PYTHIA, Stoppable as Process, require_rabbitmq};
use futures::StreamExt as _;
use lapin::options::{
    BasicConsumeOptions, ConfirmSelectOptions, QueueDeclareOptions, QueueDeleteOptions,
};
use lapin::types::FieldTable;
use lapin::{BasicProperties, Connection, ConnectionProperties};
use serde_json::Value;

const URL: &str = "amqp://guest:guest@127.0.0.1:5672/%2f";

/// The test's queues, deleted when it ends, passed or not.
struct Queues {
    runtime: tokio::runtime::Runtime,
    names: Vec<String>,
}

impl Drop for Queues {
    fn drop(&mut self) {
        self.runtime.block_on(async {
            let Ok(connection) = Connection::connect(URL, ConnectionProperties::default()).await
            else {
                return;
            };
            for name in &self.names {
                if let Ok(channel) = connection.create_channel().await {
                    let _ = channel
                        .queue_delete(name.as_str().into(), QueueDeleteOptions::default())
                        .await;
                }
            }
            let _ = connection.close(200, "test done".into()).await;
        });
    }
}

fn status(control: &str) -> Result<Value, String> {
    let out = Command::new(PYTHIA)
        .args(["fleet", "status", "--json", "--control", control])
        .env("RUST_LOG", "warn")
        .output()
        .unwrap();
    if !out.status.success() {
        return Err(String::from_utf8_lossy(&out.stderr).into_owned());
    }
    serde_json::from_slice(&out.stdout).map_err(|e| format!("status is not JSON: {e}"))
}

fn count(status: &Value) -> usize {
    status["instances"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|i| i["state"] == "running")
        .count()
}

/// Polls `check` on the fleet's status until it holds.
fn wait_status(
    control: &str,
    log: &str,
    what: &str,
    timeout: Duration,
    check: impl Fn(&Value) -> bool,
) -> Value {
    let deadline = Instant::now() + timeout;
    loop {
        let s = status(control);
        if let Ok(s) = &s
            && check(s)
        {
            return s.clone();
        }
        assert!(
            Instant::now() < deadline,
            "{what} within {timeout:?}; last status {s:?}; fleet log {log}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn now_us() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_micros() as i64
}

/// Declares `queue` durable, as the worker does.
async fn declare(connection: &Connection, queue: &str) -> u32 {
    let channel = connection.create_channel().await.unwrap();
    let found = channel
        .queue_declare(
            queue.into(),
            QueueDeclareOptions::durable(),
            FieldTable::default(),
        )
        .await
        .unwrap_or_else(|e| panic!("declaring {queue}: {e}"));
    found.message_count()
}

/// Publishes messages `0..n` (the id, then the send time, as the load
/// test's worker reads them), persistent and confirmed.
async fn publish(connection: &Connection, queue: &str, n: u64) {
    let channel = connection.create_channel().await.unwrap();
    channel
        .confirm_select(ConfirmSelectOptions::default())
        .await
        .unwrap();
    for id in 0..n {
        let mut payload = id.to_le_bytes().to_vec();
        payload.extend_from_slice(&now_us().to_le_bytes());
        channel
            .basic_publish(
                "".into(),
                queue.into(),
                Default::default(),
                &payload,
                BasicProperties::default().with_delivery_mode(2),
            )
            .await
            .unwrap();
    }
    let returned = channel.wait_for_confirms().await.unwrap();
    assert!(returned.is_empty(), "the broker returned messages");
}

/// Reads the output queue until `expected` distinct ids arrived and a second
/// passes with nothing new; returns (unique, total).
async fn outputs(connection: &Connection, queue: &str, expected: u64) -> (u64, u64) {
    let channel = connection.create_channel().await.unwrap();
    let mut consumer = channel
        .basic_consume(
            queue.into(),
            "fleet-rabbit-test-reader".into(),
            BasicConsumeOptions {
                no_ack: true,
                ..BasicConsumeOptions::default()
            },
            FieldTable::default(),
        )
        .await
        .unwrap();
    let mut seen: HashMap<u64, u64> = HashMap::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        match tokio::time::timeout(Duration::from_secs(1), consumer.next()).await {
            Ok(Some(Ok(delivery))) => {
                let id = u64::from_le_bytes(delivery.data[..8].try_into().unwrap());
                *seen.entry(id).or_default() += 1;
            }
            Ok(Some(Err(e))) => panic!("reading outputs: {e}"),
            Ok(None) => break,
            // A quiet second.
            Err(_) if seen.len() as u64 >= expected => break,
            Err(_) => {}
        }
    }
    (seen.len() as u64, seen.values().sum())
}

#[test]
fn a_burst_on_a_queue_scales_up_to_max_drains_and_scales_back_without_loss_or_duplicates() {
    require_rabbitmq();
    let started = Instant::now();
    let id = std::process::id();
    let input = format!("pythia-fleet-rabbit-in-{id}");
    let output = format!("pythia-fleet-rabbit-out-{id}");
    let queues = Queues {
        runtime: tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap(),
        names: vec![input.clone(), output.clone(), format!("{input}.dlq")],
    };
    let rt = &queues.runtime;
    let connection = rt
        .block_on(Connection::connect(URL, ConnectionProperties::default()))
        .expect("connect to RabbitMQ");
    rt.block_on(async {
        declare(&connection, &input).await;
        declare(&connection, &output).await;
    });

    let control = format!("/tmp/fleet-rabbit-test-{id}.sock");
    let log = "/tmp/fleet-rabbit-test-burst.log".to_owned();
    let child = Command::new(PYTHIA)
        .args(["fleet", "run", "--queue", &input])
        .args(["--min", "1", "--max", "3", "--backlog-per-instance", "100"])
        .args(["--period", "1s", "--scale-down-window", "3s"])
        .args(["--control", &control, "--restart-backoff", "200ms"])
        .args([
            "--",
            PYTHIA,
            "loadtest-queue-worker",
            "--broker",
            "rabbitmq",
        ])
        .args(["--work", "io:5ms"])
        .args(["--instance", "0"])
        .env("RUST_LOG", "info,lapin=warn")
        .env("PYTHIA_RABBITMQ__OUTPUT", &output)
        // Few deliveries each, so that the burst outlasts the scale-up.
        .env("PYTHIA_RABBITMQ__PREFETCH", "2")
        .env("PYTHIA_WORKER__NAME", "fleet-rabbit")
        // The fleet has its instances refresh pythia_queue_unacked_messages
        // twice a --period.
        .env_remove("PYTHIA_METRICS__LAG_INTERVAL")
        .env_remove("PYTHIA_RABBITMQ__URL")
        .env_remove("PYTHIA_CONFIG")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .expect("start pythia fleet");
    let mut fleet = Process(child);

    let s = wait_status(
        &control,
        &log,
        "one instance consumes the queue",
        Duration::from_secs(30),
        |s| count(s) == 1 && s["consumers"] == 1,
    );
    assert_eq!(s["queue"], input.as_str(), "{s}");
    assert_eq!(s["autoscale"]["max"], 3, "{s}");
    assert_eq!(s["autoscale"]["backlog_per_instance"], 100, "{s}");
    assert_eq!(s["ready"], 0, "{s}");

    const N: u64 = 6000;
    rt.block_on(publish(&connection, &input, N));
    let s = wait_status(
        &control,
        &log,
        "the fleet scales up to 3",
        Duration::from_secs(30),
        |s| count(s) == 3,
    );
    for key in ["ready", "unacked", "consumers", "backlog"] {
        assert!(s[key].is_u64(), "`{key}` is a count in {s}");
    }
    wait_status(
        &control,
        &log,
        "the backlog drains and the fleet is back to 1",
        Duration::from_secs(60),
        |s| count(s) == 1 && s["instances"].as_array().unwrap().len() == 1 && s["backlog"] == 0,
    );

    let (unique, total) = rt.block_on(outputs(&connection, &output, N));
    assert_eq!(unique, N, "lost {} messages; fleet log {log}", N - unique);
    assert_eq!(
        total,
        unique,
        "{} duplicates; fleet log {log}",
        total - unique
    );
    let (left, dead) = rt.block_on(async {
        (
            declare(&connection, &input).await,
            declare(&connection, &format!("{input}.dlq")).await,
        )
    });
    assert_eq!((left, dead), (0, 0), "nothing left in the queue or its DLQ");

    let text = std::fs::read_to_string(&log).unwrap();
    assert!(
        text.contains("scaling 1 -> 2: backlog "),
        "decisions are logged with their numbers: {log}"
    );
    // Up by 100 % per period (capped at max), down by 50 %, each step
    // with the numbers behind it.
    assert!(text.contains("scaling 2 -> 3: backlog "), "{log}");
    assert!(text.contains("scaling 3 -> 2: backlog "), "{log}");
    assert!(text.contains("scaling 2 -> 1: backlog "), "{log}");
    assert!(text.contains("over 2 instance(s)"), "{log}");
    // What the workers hold is part of the backlog: some decision saw it.
    let unacked_seen = text
        .lines()
        .filter_map(|l| {
            l.split("+ unacked ")
                .nth(1)?
                .split(')')
                .next()?
                .parse::<u64>()
                .ok()
        })
        .max();
    assert!(
        unacked_seen.is_some_and(|n| n > 0),
        "no decision counted unacked messages: {log}"
    );
    let status = fleet
        .terminate(Duration::from_secs(60))
        .expect("the fleet stops on SIGTERM");
    assert!(status.success(), "{status}; {log}");
    rt.block_on(async {
        let _ = connection.close(200, "done".into()).await;
    });
    println!(
        "fleet on a queue: messages={N} duplicates={} in {:?}",
        total - unique,
        started.elapsed()
    );
}

/// `fleet run` with `args`, stopped by SIGTERM after `run_for` if still
/// running; returns (success, stderr).
fn fleet_briefly(args: &[&str], run_for: Duration) -> (bool, String) {
    let log = format!("/tmp/fleet-rabbit-test-flags-{}.log", std::process::id());
    let child = Command::new(PYTHIA)
        .args(["fleet", "run"])
        .args(args)
        .env("RUST_LOG", "info")
        .env("RUST_BACKTRACE", "0")
        .env_remove("PYTHIA_KAFKA__BROKERS")
        .env_remove("PYTHIA_RABBITMQ__URL")
        .env_remove("PYTHIA_CONFIG")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .expect("start pythia fleet");
    let mut fleet = Process(child);
    let deadline = Instant::now() + run_for;
    while Instant::now() < deadline {
        if let Ok(Some(_)) = fleet.0.try_wait() {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let status = fleet
        .terminate(Duration::from_secs(20))
        .expect("the fleet stops");
    (status.success(), std::fs::read_to_string(&log).unwrap())
}

#[test]
fn one_signal_is_required_and_named_and_the_password_never_shows() {
    let control = format!("/tmp/fleet-rabbit-test-flags-{}.sock", std::process::id());
    let both = [
        "--queue",
        "jobs",
        "--group",
        "g",
        "--min",
        "1",
        "--max",
        "2",
        "--control",
        &control,
        "--",
        "true",
    ];
    let (ok, stderr) = fleet_briefly(&both, Duration::from_secs(10));
    assert!(!ok, "{stderr}");
    assert!(
        stderr.contains("--queue") && stderr.contains("--group/--topic"),
        "{stderr}"
    );
    let neither = [
        "--min",
        "1",
        "--max",
        "2",
        "--control",
        &control,
        "--",
        "true",
    ];
    let (ok, stderr) = fleet_briefly(&neither, Duration::from_secs(10));
    assert!(!ok, "{stderr}");
    assert!(
        stderr.contains("--group/--topic") && stderr.contains("--queue"),
        "{stderr}"
    );
    // Nothing answers on port 1: the depth cannot be read, the count holds,
    // and the warning names the broker without its password.
    let unreachable = [
        "--queue",
        "jobs",
        "--url",
        "amqp://guest:hunter2@127.0.0.1:1/%2f",
        "--min",
        "1",
        "--max",
        "2",
        "--period",
        "200ms",
        "--control",
        &control,
        "--",
        // An instance that stops cleanly on SIGTERM, as a worker does.
        "sh",
        "-c",
        "trap 'exit 0' TERM; while :; do sleep 0.1; done",
    ];
    let (ok, stderr) = fleet_briefly(&unreachable, Duration::from_secs(2));
    assert!(ok, "a SIGTERM stops the fleet cleanly: {stderr}");
    assert!(
        stderr.contains("the backlog cannot be read: keeping the count"),
        "{stderr}"
    );
    assert!(stderr.contains("guest:***"), "{stderr}");
    assert!(!stderr.contains("hunter2"), "{stderr}");
}
