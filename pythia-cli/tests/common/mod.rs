//! What the CLI tests share: `pythia` processes and plain HTTP GETs.

// Each test file uses its own subset.
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

pub(crate) const PYTHIA: &str = env!("CARGO_BIN_EXE_pythia");

/// A `pythia` process, killed and reaped when dropped. Its stderr is read
/// while it runs (a full pipe would block it) and handed back by `stop`.
pub(crate) struct Process {
    pub(crate) child: Child,
    log: Option<JoinHandle<String>>,
}

impl Process {
    /// Starts `pythia args` (`RUST_LOG=warn` unless `env` says otherwise) and
    /// returns it with the rest of its first stdout line, which must start
    /// with `prefix` (`bootstrap=`, `serving=`).
    pub(crate) fn start(args: &[&str], env: &[(&str, &str)], prefix: &str) -> (Self, String) {
        let mut child = Command::new(PYTHIA)
            .args(args)
            .env("RUST_LOG", "warn")
            .envs(env.iter().copied())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn pythia");
        let mut stderr = child.stderr.take().expect("stderr");
        let log = std::thread::spawn(move || {
            let mut log = String::new();
            let _ = stderr.read_to_string(&mut log);
            log
        });
        let mut line = String::new();
        BufReader::new(child.stdout.take().expect("stdout"))
            .read_line(&mut line)
            .expect("first line");
        let mut process = Self {
            child,
            log: Some(log),
        };
        let Some(value) = line.trim().strip_prefix(prefix).map(str::to_owned) else {
            let log = process.stop();
            panic!(
                "`pythia {}` printed {line:?}, not {prefix}...:\n{log}",
                args.join(" ")
            );
        };
        (process, value)
    }

    /// Sends SIGTERM.
    pub(crate) fn terminate(&self) {
        // SAFETY: kill(2) on our own child's pid.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
    }

    /// Kills the process and returns what it wrote on stderr.
    pub(crate) fn stop(&mut self) -> String {
        let _ = self.child.kill();
        let _ = self.child.wait();
        self.log
            .take()
            .and_then(|log| log.join().ok())
            .unwrap_or_default()
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A child process stopped by SIGTERM, then killed, when the test ends: a
/// fleet forwards the signal to its instances and waits for their drain.
pub(crate) struct Stoppable(pub(crate) Child);

impl Stoppable {
    /// Sends SIGTERM and waits up to `timeout` for the exit.
    pub(crate) fn terminate(&mut self, timeout: Duration) -> Option<std::process::ExitStatus> {
        // SAFETY: kill(2) on the pid of our own unreaped child.
        unsafe { libc::kill(self.0.id() as i32, libc::SIGTERM) };
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.0.try_wait() {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        None
    }
}

impl Drop for Stoppable {
    fn drop(&mut self) {
        if let Ok(None) = self.0.try_wait() {
            self.terminate(Duration::from_secs(20));
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

/// `GET path` on `address`: the status code and the body.
pub(crate) fn http_get(address: &str, path: &str) -> (u16, String) {
    let mut stream = std::net::TcpStream::connect(address).expect("connect");
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    let code = response[9..12].parse().expect("status");
    (code, response.split_once("\r\n\r\n").unwrap().1.to_owned())
}

/// The body of `GET path`, which must answer 200.
pub(crate) fn http_get_ok(address: &str, path: &str) -> String {
    let (code, body) = http_get(address, path);
    assert_eq!(code, 200, "GET {path}: {body}");
    body
}

/// Panics with what to do unless RabbitMQ answers on 127.0.0.1:5672: the
/// RabbitMQ tests need it, and `cargo xtask test` starts it.
pub(crate) fn require_rabbitmq() {
    require(
        "RabbitMQ",
        "127.0.0.1:5672",
        "service rabbitmq-server start",
    );
}

/// Panics with what to do unless Redis answers on 127.0.0.1:6379.
pub(crate) fn require_redis() {
    require(
        "Redis",
        "127.0.0.1:6379",
        "redis-server --daemonize yes --save ''",
    );
}

/// Panics with what to do unless NATS answers on 127.0.0.1:4222.
pub(crate) fn require_nats() {
    require("NATS", "127.0.0.1:4222", "nats-server -js &");
}

fn require(name: &str, address: &str, start: &str) {
    let parsed = address.parse().expect("address");
    if let Err(error) =
        std::net::TcpStream::connect_timeout(&parsed, std::time::Duration::from_secs(2))
    {
        panic!(
            "{name} does not answer on {address} ({error}): these tests need it; start it \
             with `{start}` (or `cargo xtask prerequisites`)"
        );
    }
}

/// Sends one command to the Redis on this machine and returns its raw reply.
pub(crate) fn redis(args: &[&str]) -> String {
    let mut stream = TcpStream::connect("127.0.0.1:6379").expect("connect to Redis");
    let mut command = format!("*{}\r\n", args.len());
    for arg in args {
        command.push_str(&format!("${}\r\n{arg}\r\n", arg.len()));
    }
    stream.write_all(command.as_bytes()).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_millis(500)))
        .unwrap();
    let mut reply = Vec::new();
    let mut chunk = [0u8; 4096];
    while let Ok(n) = stream.read(&mut chunk) {
        if n == 0 {
            break;
        }
        reply.extend_from_slice(&chunk[..n]);
        if reply.ends_with(b"\r\n") {
            break;
        }
    }
    String::from_utf8_lossy(&reply).into_owned()
}

/// The JetStream API's list of stream names, as the server answers it.
pub(crate) fn nats_stream_names() -> String {
    let mut stream = TcpStream::connect("127.0.0.1:4222").expect("connect to NATS");
    stream
        .set_read_timeout(Some(Duration::from_millis(500)))
        .unwrap();
    stream
        .write_all(
            b"CONNECT {\"verbose\":false}\r\nSUB _INBOX.cli-test 1\r\n\
              PUB $JS.API.STREAM.NAMES _INBOX.cli-test 0\r\n\r\n",
        )
        .unwrap();
    let mut reply = Vec::new();
    let mut chunk = [0u8; 65536];
    while let Ok(n) = stream.read(&mut chunk) {
        if n == 0 {
            break;
        }
        reply.extend_from_slice(&chunk[..n]);
        let text = String::from_utf8_lossy(&reply);
        if text.contains("stream_names_response") && text.ends_with("}\r\n") {
            break;
        }
    }
    String::from_utf8_lossy(&reply).into_owned()
}
