//! The server itself killed and restarted mid-run (a `nats-server` of the
//! test's own, with its store on disk): the worker's readiness turns false,
//! then it reconnects by itself and finishes the stream; nothing is lost
//! (what was not acknowledged when the server went down is delivered again
//! after `ack_wait`; the file-stored streams and consumer outlive the
//! restart).

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use common::{Broker, Setup, count_ids, ids, workers};

const NATS_SERVER: &str = "/usr/sbin/nats-server";

/// A `nats-server -js` of the test's own, killed at the end.
struct Server {
    child: Option<Child>,
    port: u16,
    store: PathBuf,
}

impl Server {
    fn start(port: u16, store: &Path) -> Self {
        let child = Command::new(NATS_SERVER)
            .args(["-js", "-a", "127.0.0.1", "-p", &port.to_string(), "-sd"])
            .arg(store)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("{NATS_SERVER} must be installed for this test: {e}"));
        let end = Instant::now() + Duration::from_secs(10);
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < end, "nats-server did not listen on {port}");
            std::thread::sleep(Duration::from_millis(20));
        }
        Self {
            child: Some(child),
            port,
            store: store.to_owned(),
        }
    }

    fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    fn restart(&mut self) {
        self.kill();
        *self = Self::start(self.port, &self.store.clone());
    }

    /// Restarts with an empty store: every stream and consumer is gone.
    fn restart_empty(&mut self, store: &Path) {
        self.kill();
        *self = Self::start(self.port, store);
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.kill();
    }
}

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

/// The status code of `GET /health/ready`, or `None` if nothing answers.
fn ready(port: u16) -> Option<u16> {
    get(port, "/health/ready")?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

fn wait_ready(port: u16, within: Duration) -> bool {
    let end = Instant::now() + within;
    while Instant::now() < end {
        if ready(port) == Some(200) {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    false
}

/// Watches readiness every 20 ms on a thread of its own: whether it was
/// seen not ready, and ready again after that.
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

    fn finish(self, within: Duration) -> (bool, bool) {
        let end = Instant::now() + within;
        while !self.thread.is_finished() && Instant::now() < end {
            std::thread::sleep(Duration::from_millis(50));
        }
        self.stop.store(true, Ordering::Relaxed);
        self.thread.join().expect("the watch thread")
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// The value of the series `name{…}` in `/metrics`.
fn series(port: u16, name: &str) -> Option<f64> {
    let text = get(port, "/metrics")?;
    text.lines()
        .filter(|line| line.starts_with(&format!("{name}{{")))
        .find_map(|line| line.rsplit(' ').next()?.trim().parse().ok())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_server_turns_readiness_false_then_the_worker_resumes_and_loses_nothing() {
    const JOBS: u64 = 3_000;
    let store = std::env::temp_dir().join(format!("pythia-nats-restart-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&store);
    std::fs::create_dir_all(&store).expect("a store directory");
    let mut server = Server::start(free_port(), &store);
    let mut broker = Broker::connect_to(&server.url()).await;
    let setup = Setup::new(&mut broker, "restart").await;
    let metrics_port = free_port();
    let url = server.url();
    let metrics = format!("127.0.0.1:{metrics_port}");
    let mut workers = workers();
    let worker = workers.spawn(&setup.env(&[
        ("PYTHIA_NATS__URL", &url),
        ("PYTHIA_NATS__ACK_WAIT", "3s"),
        ("PYTHIA_NATS__CONCURRENCY", "8"),
        ("PYTHIA_NATS__RECONNECT_MIN", "200ms"),
        ("PYTHIA_NATS__RECONNECT_MAX", "1s"),
        ("PYTHIA_METRICS__ADDRESS", &metrics),
        ("PYTHIA_METRICS__LAG_INTERVAL", "200ms"),
        ("TEST_DELAY_MS", "3"),
    ]));
    broker
        .wait_for_fetchers(&setup.stream, &setup.consumer, 1, Duration::from_secs(30))
        .await;
    assert!(
        wait_ready(metrics_port, Duration::from_secs(10)),
        "ready once fetching:\n{}",
        workers.log(worker)
    );
    broker.publish(&setup.input, ids(JOBS)).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let watch = Watch::start(metrics_port);
    server.kill();
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_ne!(
        ready(metrics_port),
        Some(200),
        "not ready while the server is down:\n{}",
        workers.log(worker)
    );
    server.restart();
    let (down, back) = watch.finish(Duration::from_secs(30));
    assert!(
        down,
        "not ready while the server was down:\n{}",
        workers.log(worker)
    );
    assert!(
        back,
        "ready again after the restart:\n{}",
        workers.log(worker)
    );
    let broker = Broker::connect_to(&server.url()).await;
    let taken = broker
        .take(
            &setup.output_stream,
            JOBS as usize,
            Duration::from_secs(5),
            Duration::from_secs(120),
        )
        .await;
    let (distinct, duplicates) = count_ids(&taken);
    println!("{JOBS} jobs across a server restart: {distinct} done, {duplicates} duplicates");
    assert_eq!(
        distinct,
        JOBS as usize,
        "jobs lost:\n{}",
        workers.log(worker)
    );
    let info = broker
        .consumer(&setup.stream, &setup.consumer)
        .await
        .expect("the consumer outlived the restart");
    println!(
        "after the restart: consumer pending {}, ack pending {}, redelivered {}; messages left in the work-queue stream {}",
        info.num_pending,
        info.num_ack_pending,
        info.num_redelivered,
        broker.messages(&setup.stream).await
    );
    assert_eq!(
        (info.num_pending, info.num_ack_pending),
        (0, 0),
        "everything delivered and acknowledged"
    );
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(
        series(metrics_port, "pythia_nats_consumer_pending"),
        Some(0.0)
    );
    assert_eq!(
        series(metrics_port, "pythia_nats_unacked_messages"),
        Some(0.0)
    );
    workers.stop_all();
    drop(broker);
    server.kill();
    let _ = std::fs::remove_dir_all(&store);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_restarted_without_its_store_gets_the_stream_and_consumer_again() {
    const JOBS: u64 = 500;
    let base = std::env::temp_dir().join(format!("pythia-nats-empty-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&base);
    let (first_store, second_store) = (base.join("first"), base.join("second"));
    std::fs::create_dir_all(&first_store).expect("a store directory");
    std::fs::create_dir_all(&second_store).expect("a store directory");
    let mut server = Server::start(free_port(), &first_store);
    let mut broker = Broker::connect_to(&server.url()).await;
    let setup = Setup::new(&mut broker, "empty").await;
    let metrics_port = free_port();
    let url = server.url();
    let metrics = format!("127.0.0.1:{metrics_port}");
    let mut workers = workers();
    let worker = workers.spawn(&setup.env(&[
        ("PYTHIA_NATS__URL", &url),
        ("PYTHIA_NATS__RECONNECT_MIN", "200ms"),
        ("PYTHIA_NATS__RECONNECT_MAX", "1s"),
        ("PYTHIA_NATS__FETCH_WAIT", "500ms"),
        ("PYTHIA_METRICS__ADDRESS", &metrics),
    ]));
    broker
        .wait_for_fetchers(&setup.stream, &setup.consumer, 1, Duration::from_secs(30))
        .await;
    assert!(wait_ready(metrics_port, Duration::from_secs(10)));
    server.restart_empty(&second_store);
    let mut broker = Broker::connect_to(&server.url()).await;
    broker.stream(&setup.output_stream, &setup.output).await;
    broker
        .wait_for_fetchers(&setup.stream, &setup.consumer, 1, Duration::from_secs(60))
        .await;
    broker.publish(&setup.input, ids(JOBS)).await;
    let taken = broker
        .take(
            &setup.output_stream,
            JOBS as usize,
            Duration::from_secs(2),
            Duration::from_secs(60),
        )
        .await;
    assert_eq!(
        count_ids(&taken),
        (JOBS as usize, 0),
        "{}",
        workers.log(worker)
    );
    assert!(
        wait_ready(metrics_port, Duration::from_secs(10)),
        "ready again"
    );
    workers.stop_all();
    drop(broker);
    server.kill();
    let _ = std::fs::remove_dir_all(&base);
}
