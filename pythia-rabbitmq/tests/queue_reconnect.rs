//! A cut connection, and the broker itself restarted: the worker's readiness
//! turns false, then it reconnects by itself and finishes the queue; nothing
//! is lost (what was not acknowledged when the connection dropped is
//! delivered again; the durable queues and persistent messages outlive a
//! restart), and the queue's series say so.
//!
//! The two tests disturb the shared broker, so they take turns.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use common::{Broker, count_ids, ids, unique, workers};

/// One test at a time: each cuts what the other relies on.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// The response to `GET path` from the worker's endpoint, or `None` if
/// nothing answers.
fn get(port: u16, path: &str) -> Option<String> {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    let request = format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).ok()?;
    let mut response = String::new();
    let _ = stream.read_to_string(&mut response);
    Some(response)
}

/// The value of the series `name{group="…",queue="…"}` in `/metrics`.
fn series(port: u16, name: &str, queue: &str) -> Option<f64> {
    let text = get(port, "/metrics")?;
    let prefix = format!(r#"{name}{{group="{queue}",queue="{queue}"}} "#);
    text.lines()
        .find_map(|line| line.strip_prefix(prefix.as_str()))
        .and_then(|value| value.trim().parse().ok())
}

/// The status code of `GET /health/ready`, or `None` if nothing answers.
fn ready(port: u16) -> Option<u16> {
    get(port, "/health/ready")?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

/// Waits until readiness is `want` (`true`: 200), polling every 20 ms.
fn wait_ready(port: u16, want: bool, within: Duration) -> bool {
    let end = Instant::now() + within;
    while Instant::now() < end {
        if (ready(port) == Some(200)) == want {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    false
}

/// Watches readiness every 20 ms on a thread of its own, from before the cut
/// (closing the connections one by one takes longer than the worker's
/// reconnect): whether it was seen not ready, and ready again after that.
struct Watch {
    stop: Arc<AtomicBool>,
    thread: std::thread::JoinHandle<(bool, bool)>,
}

impl Watch {
    fn start(port: u16) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let stopping = stop.clone();
        let thread = std::thread::spawn(move || {
            let (mut down, mut back) = (false, false);
            while !stopping.load(Ordering::Relaxed) && !back {
                let ready = ready(port) == Some(200);
                down |= !ready;
                back |= down && ready;
                std::thread::sleep(Duration::from_millis(20));
            }
            (down, back)
        });
        Self { stop, thread }
    }

    /// Waits up to `within` for readiness to go down and come back.
    fn finish(self, within: Duration) -> (bool, bool) {
        let end = Instant::now() + within;
        while !self.thread.is_finished() && Instant::now() < end {
            std::thread::sleep(Duration::from_millis(50));
        }
        self.stop.store(true, Ordering::Relaxed);
        self.thread.join().expect("the watch thread")
    }
}

/// Closes every broker connection whose name contains `name`; returns how many.
fn cut_connections(name: &str) -> usize {
    let listed = Command::new("rabbitmqctl")
        .args([
            "list_connections",
            "pid",
            "client_properties",
            "-q",
            "--no-table-headers",
        ])
        .output()
        .expect("rabbitmqctl runs (the tests need the broker's own tools)");
    let text = String::from_utf8_lossy(&listed.stdout);
    let pids: Vec<&str> = text
        .lines()
        .filter(|line| line.contains(name))
        .filter_map(|line| line.split_whitespace().next())
        .collect();
    for pid in &pids {
        let closed = Command::new("rabbitmqctl")
            .args(["close_connection", pid, "connection cut by a test"])
            .output()
            .expect("rabbitmqctl runs");
        assert!(
            closed.status.success(),
            "{}",
            String::from_utf8_lossy(&closed.stderr)
        );
    }
    pids.len()
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cut_connection_turns_readiness_false_then_the_worker_resumes_and_loses_nothing() {
    let _serial = SERIAL.lock().await;
    const JOBS: u64 = 5_000;
    let mut broker = Broker::connect().await;
    let input = unique("cut");
    let output = format!("{input}.out");
    broker.queue(&input).await;
    broker.queue(&output).await;
    broker.own(&format!("{input}.dlq"));
    let port = free_port();
    let mut workers = workers();
    let worker = workers.spawn(&[
        ("PYTHIA_RABBITMQ__QUEUE", input.clone()),
        ("PYTHIA_RABBITMQ__OUTPUT", output.clone()),
        ("PYTHIA_RABBITMQ__RECONNECT_MIN", "1s".into()),
        ("PYTHIA_METRICS__ADDRESS", format!("127.0.0.1:{port}")),
        ("PYTHIA_METRICS__LAG_INTERVAL", "200ms".into()),
        ("TEST_OUTPUT", "1".into()),
        ("TEST_DELAY_MS", "3".into()),
    ]);
    broker
        .wait_for_consumers(&input, 1, Duration::from_secs(30))
        .await;
    assert!(
        wait_ready(port, true, Duration::from_secs(10)),
        "ready once consuming:\n{}",
        workers.log(worker)
    );
    broker.publish(&input, ids(JOBS)).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let watch = Watch::start(port);
    let cut = cut_connections(&input);
    assert!(
        cut >= 2,
        "the worker's consumer and publisher connections were found ({cut})"
    );
    let (down, back) = watch.finish(Duration::from_secs(30));
    assert!(
        down,
        "not ready while disconnected:\n{}",
        workers.log(worker)
    );
    assert!(
        back,
        "ready again after reconnecting:\n{}",
        workers.log(worker)
    );
    let taken = broker
        .take(
            &output,
            JOBS as usize,
            Duration::from_secs(3),
            Duration::from_secs(120),
        )
        .await;
    let (distinct, duplicates) = count_ids(&taken);
    println!("{JOBS} jobs across a cut connection: {distinct} done, {duplicates} duplicates");
    assert_eq!(
        distinct,
        JOBS as usize,
        "jobs lost:\n{}",
        workers.log(worker)
    );
    let (ready_left, consumers) = broker.depth(&input).await;
    assert_eq!(
        (ready_left, consumers),
        (0, 1),
        "drained, and consuming again"
    );
    // The queue's series, as the worker exports them once it is idle.
    tokio::time::sleep(Duration::from_millis(600)).await;
    let value = |name: &str| {
        series(port, name, &input).unwrap_or_else(|| panic!("{name} is exported for {input}"))
    };
    assert_eq!(value("pythia_queue_messages_ready"), 0.0);
    assert_eq!(value("pythia_queue_unacked_messages"), 0.0);
    assert_eq!(value("pythia_queue_consumers"), 1.0);
    let redelivered = value("pythia_queue_redeliveries_total");
    println!("redeliveries after the cut: {redelivered}");
    assert!(
        redelivered >= 1.0,
        "what the worker held at the cut came back redelivered"
    );
    workers.stop_all();
}

/// Runs `rabbitmqctl <args>`, which must succeed.
fn rabbitmqctl(args: &[&str]) {
    let out = Command::new("rabbitmqctl")
        .args(args)
        .output()
        .expect("rabbitmqctl runs (the tests need the broker's own tools)");
    assert!(
        out.status.success(),
        "rabbitmqctl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Stops the broker application; starts it again when dropped, so a failing
/// test never leaves the machine's broker down.
struct Stopped;

impl Stopped {
    fn broker() -> Self {
        rabbitmqctl(&["stop_app"]);
        Self
    }
}

impl Drop for Stopped {
    fn drop(&mut self) {
        rabbitmqctl(&["start_app"]);
        rabbitmqctl(&["await_startup"]);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_broker_turns_readiness_false_then_the_worker_resumes_and_loses_nothing() {
    const JOBS: u64 = 3_000;
    let _serial = SERIAL.lock().await;
    let mut before = Broker::connect().await;
    let input = unique("restart");
    let output = format!("{input}.out");
    before.queue(&input).await;
    before.queue(&output).await;
    let port = free_port();
    let mut workers = workers();
    let worker = workers.spawn(&[
        ("PYTHIA_RABBITMQ__QUEUE", input.clone()),
        ("PYTHIA_RABBITMQ__OUTPUT", output.clone()),
        ("PYTHIA_RABBITMQ__RECONNECT_MIN", "500ms".into()),
        ("PYTHIA_METRICS__ADDRESS", format!("127.0.0.1:{port}")),
        ("TEST_OUTPUT", "1".into()),
        ("TEST_DELAY_MS", "3".into()),
    ]);
    before
        .wait_for_consumers(&input, 1, Duration::from_secs(30))
        .await;
    assert!(
        wait_ready(port, true, Duration::from_secs(10)),
        "ready once consuming:\n{}",
        workers.log(worker)
    );
    before.publish(&input, ids(JOBS)).await;
    tokio::time::sleep(Duration::from_millis(500)).await;

    let stopped = Stopped::broker();
    let away = Instant::now();
    assert!(
        wait_ready(port, false, Duration::from_secs(20)),
        "not ready while the broker is down:\n{}",
        workers.log(worker)
    );
    // Away for longer than a few reconnect attempts.
    tokio::time::sleep(Duration::from_secs(2)).await;
    drop(stopped);
    println!("broker away for {:?}", away.elapsed());
    assert!(
        wait_ready(port, true, Duration::from_secs(60)),
        "ready again once the broker is back:\n{}",
        workers.log(worker)
    );

    // The old connection died with the broker: a new one reads the results
    // (and deletes the queues at the end).
    let mut after = Broker::connect().await;
    after.own(&input);
    after.own(&output);
    after.own(&format!("{input}.dlq"));
    let taken = after
        .take(
            &output,
            JOBS as usize,
            Duration::from_secs(3),
            Duration::from_secs(120),
        )
        .await;
    let (distinct, duplicates) = count_ids(&taken);
    println!("{JOBS} jobs across a broker restart: {distinct} done, {duplicates} duplicates");
    assert_eq!(
        distinct,
        JOBS as usize,
        "jobs lost:\n{}",
        workers.log(worker)
    );
    assert_eq!(
        after.depth(&input).await,
        (0, 1),
        "drained, and consuming again"
    );
    workers.stop_all();
}
