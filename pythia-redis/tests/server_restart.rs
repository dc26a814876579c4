//! The server restarted mid-run: the worker's readiness turns false while
//! Redis is down, then it reconnects by itself and finishes the input;
//! nothing is lost (the test's own server keeps its data in an append-only
//! file across the restart; what was taken and not acknowledged stays
//! pending for the worker, or in its processing list). For a stream and for
//! a list.
//!
//! Each test starts its own `redis-server` on a free port, so the shared
//! server is never disturbed.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{Mode, Redis, count_ids, free_port, ids, unique, worker_env, workers};

/// A `redis-server` of the test's own, with its data in a temporary directory.
struct Server {
    port: u16,
    dir: PathBuf,
    child: Option<Child>,
}

impl Server {
    fn start(port: u16, dir: PathBuf) -> Self {
        let mut server = Self {
            port,
            dir,
            child: None,
        };
        server.restart();
        server
    }

    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/0", self.port)
    }

    /// Starts the server (again) on its port and directory, and waits until it answers.
    fn restart(&mut self) {
        std::fs::create_dir_all(&self.dir).expect("the server's directory");
        let child = Command::new("redis-server")
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1"])
            .args([
                "--save",
                "",
                "--appendonly",
                "yes",
                "--appendfsync",
                "always",
            ])
            .arg("--dir")
            .arg(&self.dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server runs (the tests need the server's own binary)");
        self.child = Some(child);
        let end = Instant::now() + Duration::from_secs(10);
        while TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(
                Instant::now() < end,
                "redis-server did not start on {}",
                self.port
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Kills the server (SIGKILL) and waits for it.
    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.kill();
        let _ = std::fs::remove_dir_all(&self.dir);
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

/// The status code of `GET /health/ready` of the worker, or `None` if nothing answers.
fn ready(port: u16) -> Option<u16> {
    get(port, "/health/ready")?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

/// Waits until the worker's `/metrics` has `line`.
fn wait_series(port: u16, line: &str, within: Duration) -> Result<(), String> {
    let end = Instant::now() + within;
    loop {
        let text = get(port, "/metrics").unwrap_or_default();
        if text.lines().any(|l| l == line) {
            return Ok(());
        }
        if Instant::now() >= end {
            return Err(text);
        }
        std::thread::sleep(Duration::from_millis(50));
    }
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

async fn server_restart_mid_run(mode: Mode) {
    const JOBS: u64 = 3_000;
    let name = unique(&format!("restart-{}", mode.as_str()));
    let mut server = Server::start(free_port(), std::env::temp_dir().join(&name));
    let mut redis = Redis::connect_to(&server.url())
        .await
        .expect("the test's redis-server answers");
    let input = name.clone();
    let output = format!("{input}.out");
    let metrics = free_port();
    let mut env = worker_env(mode, &input, &output);
    env.extend([
        ("PYTHIA_REDIS__URL", server.url()),
        ("PYTHIA_REDIS__RECONNECT_MAX", "500ms".into()),
        ("PYTHIA_REDIS__COMMAND_TIMEOUT", "2s".into()),
        ("PYTHIA_METRICS__ADDRESS", format!("127.0.0.1:{metrics}")),
        ("PYTHIA_METRICS__LAG_INTERVAL", "200ms".into()),
        ("TEST_DELAY_MS", "5".into()),
    ]);
    let mut workers = workers();
    let worker = workers.spawn(&env);
    assert!(
        wait_ready(metrics, true, Duration::from_secs(30)),
        "the worker never got ready:\n{}",
        workers.log(worker)
    );
    redis.publish(mode, &input, ids(JOBS)).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let before = redis.count(mode, &output).await;
    assert!(
        before < JOBS as usize - 500,
        "the input drained before the restart: slow the worker down"
    );
    drop(redis);
    server.kill();
    assert!(
        wait_ready(metrics, false, Duration::from_secs(15)),
        "readiness stayed true while Redis was down:\n{}",
        workers.log(worker)
    );
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(
        ready(metrics),
        Some(503),
        "still not ready while Redis is down"
    );
    server.restart();
    assert!(
        wait_ready(metrics, true, Duration::from_secs(30)),
        "the worker did not get ready again after the restart:\n{}",
        workers.log(worker)
    );
    let mut redis = Redis::connect_to(&server.url())
        .await
        .expect("the restarted server answers");
    let taken = redis
        .take(
            mode,
            &output,
            JOBS as usize,
            Duration::from_secs(3),
            Duration::from_secs(120),
        )
        .await;
    let (distinct, duplicates) = count_ids(&taken);
    println!(
        "{} mode: {before} of {JOBS} done before the restart; after it {distinct} done, {duplicates} duplicates",
        mode.as_str()
    );
    assert_eq!(
        distinct,
        JOBS as usize,
        "jobs lost:\n{}",
        workers.log(worker)
    );
    // The input's series, read from the server after the restart.
    let series = match mode {
        Mode::Stream => vec![
            format!(r#"pythia_redis_stream_length{{group="{input}",stream="{input}"}} {JOBS}"#),
            format!(r#"pythia_redis_group_pending{{group="{input}",stream="{input}"}} 0"#),
            format!(r#"pythia_redis_group_lag{{group="{input}",stream="{input}"}} 0"#),
            format!(r#"pythia_redis_unacked_messages{{group="{input}",input="{input}"}} 0"#),
        ],
        Mode::List => vec![
            format!(r#"pythia_redis_list_length{{group="{input}",list="{input}"}} 0"#),
            format!(r#"pythia_redis_unacked_messages{{group="{input}",input="{input}"}} 0"#),
        ],
    };
    for line in &series {
        if let Err(text) = wait_series(metrics, line, Duration::from_secs(10)) {
            panic!("{line} not in\n{text}");
        }
    }
    workers.stop_all();
    assert_eq!(redis.left(mode, &input, &input).await, 0, "nothing left");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stream_server_restart_flips_readiness_and_the_worker_resumes_losing_nothing() {
    server_restart_mid_run(Mode::Stream).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn list_server_restart_flips_readiness_and_the_worker_resumes_losing_nothing() {
    server_restart_mid_run(Mode::List).await;
}
