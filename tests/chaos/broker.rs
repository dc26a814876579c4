//! The broker of a chaos run, a separate process reached by address:
//! `pythia broker` (librdkafka's mock cluster) or Tansu. Either is killed when
//! dropped, also when the test panics.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdout, Command, Stdio};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use pythia_tests::Tansu;
use rdkafka::ClientConfig;
use rdkafka::client::ClientContext;
use rdkafka::config::RDKafkaLogLevel;
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext};

use crate::settings::{Broker, PARTITIONS};

/// The input topic.
pub(crate) const INPUT: &str = "in";
/// The output topic.
pub(crate) const OUTPUT: &str = "out";

/// A running broker with topics `in` and `out`.
pub(crate) enum ChaosBroker {
    /// `pythia broker`.
    Embedded(PythiaBroker),
    /// A Tansu process.
    Tansu(Tansu),
}

/// Whether the Tansu cells can run: `Ok` when a Tansu binary is at hand,
/// `Err(reason)` to skip. In CI (`CI` set) a missing Tansu fails the test.
pub(crate) fn tansu_at_hand() -> Result<(), String> {
    if Tansu::available() {
        return Ok(());
    }
    let reason = "no Tansu binary: TEST_TANSU_BIN is unset and `.ci/install-tansu` has not \
                  installed one (run it, it prints the path, and export TEST_TANSU_BIN=<path>)";
    assert!(
        std::env::var_os("CI").is_none(),
        "CI is set, so the Tansu cells must run, but there is {reason}"
    );
    Err(reason.to_owned())
}

impl ChaosBroker {
    /// Starts `kind` with `in` and `out`, `PARTITIONS` partitions each.
    pub(crate) fn start(kind: Broker, dir: &Path) -> Self {
        match kind {
            Broker::Embedded => Self::Embedded(PythiaBroker::start(dir)),
            Broker::Tansu => {
                let tansu = Tansu::start();
                tansu.create_topic(INPUT, PARTITIONS);
                tansu.create_topic(OUTPUT, PARTITIONS);
                Self::Tansu(tansu)
            }
        }
    }

    /// The `bootstrap.servers` value that reaches it.
    pub(crate) fn bootstrap(&self) -> &str {
        match self {
            Self::Embedded(b) => &b.bootstrap,
            Self::Tansu(t) => t.bootstrap_servers(),
        }
    }

    /// Whether the broker runs KIP-848 groups: a plain rdkafka consumer with
    /// `group.protocol=consumer` must get partitions of `in` within 15 s.
    /// `Err` says what the client saw instead.
    pub(crate) fn kip848(&self) -> Result<(), String> {
        let consumer: BaseConsumer<ProbeContext> = ClientConfig::new()
            .set("bootstrap.servers", self.bootstrap())
            .set("group.id", "chaos-kip848-probe")
            .set("group.protocol", "consumer")
            .set("enable.auto.commit", "false")
            .set("debug", "cgrp,protocol")
            .set_log_level(RDKafkaLogLevel::Debug)
            .create_with_context(ProbeContext::default())
            .map_err(|e| format!("cannot create a KIP-848 consumer: {e}"))?;
        consumer
            .subscribe(&[INPUT])
            .map_err(|e| format!("subscribe: {e}"))?;
        let deadline = Instant::now() + Duration::from_secs(15);
        let mut errors = Vec::new();
        while Instant::now() < deadline {
            if let Some(Err(e)) = consumer.poll(Duration::from_millis(100)) {
                errors.push(e.to_string());
            }
            if consumer.assignment().is_ok_and(|a| a.count() > 0) {
                return Ok(());
            }
            let logs = consumer.context().logs.lock().expect("probe logs").clone();
            let said_no = errors
                .iter()
                .chain(&logs)
                .any(|l| l.to_lowercase().contains("unsupported") || l.contains("not support"));
            if said_no {
                break;
            }
        }
        let logs = consumer.context().logs.lock().expect("probe logs").clone();
        Err(format!(
            "a plain rdkafka consumer with group.protocol=consumer got no partitions \
             (errors: {errors:?}; client log: {logs:?})"
        ))
    }
}

/// Collects what librdkafka logs at warning level and above, and its debug
/// lines about ConsumerGroupHeartbeat (the KIP-848 request).
#[derive(Default)]
struct ProbeContext {
    logs: Mutex<Vec<String>>,
}

impl ClientContext for ProbeContext {
    fn log(&self, level: RDKafkaLogLevel, fac: &str, log_message: &str) {
        if (level as i32) <= (RDKafkaLogLevel::Warning as i32)
            || log_message.contains("ConsumerGroupHeartbeat")
        {
            let mut logs = self.logs.lock().unwrap_or_else(|p| p.into_inner());
            if logs.len() < 20 {
                logs.push(format!("{fac}: {log_message}"));
            }
        }
    }
}

impl ConsumerContext for ProbeContext {}

/// `pythia broker --topic in:8 --topic out:8` as a child process.
pub(crate) struct PythiaBroker {
    child: Child,
    bootstrap: String,
    // Kept open: the broker's stdout is a pipe to us.
    _stdout: BufReader<ChildStdout>,
}

impl PythiaBroker {
    fn start(dir: &Path) -> Self {
        let log = dir.join("broker.log");
        let mut command = Command::new(pythia_bin());
        command
            .arg("broker")
            .args(["--topic", &format!("{INPUT}:{PARTITIONS}")])
            .args(["--topic", &format!("{OUTPUT}:{PARTITIONS}")])
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&log).expect("broker log"));
        // If the test process dies without unwinding, the broker goes with it
        // (the signal fires when the spawning thread ends; the broker is dropped
        // before the test's thread ends anyway).
        // SAFETY: prctl is async-signal-safe and touches no parent state.
        unsafe {
            use std::os::unix::process::CommandExt;
            command.pre_exec(|| {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                Ok(())
            });
        }
        let mut child = command.spawn().expect("spawn `pythia broker`");
        // Its first line, read on a thread so that a broker that never prints
        // fails the test instead of hanging it.
        let (tx, rx) = std::sync::mpsc::channel();
        let stdout = child.stdout.take().expect("broker stdout");
        std::thread::spawn(move || {
            let mut stdout = BufReader::new(stdout);
            let mut line = String::new();
            let _ = stdout.read_line(&mut line);
            let _ = tx.send((line, stdout));
        });
        let first = rx.recv_timeout(Duration::from_secs(30));
        let (bootstrap, stdout) = match first {
            Ok((line, stdout)) if line.starts_with("bootstrap=") => {
                (line.trim()["bootstrap=".len()..].to_owned(), stdout)
            }
            other => {
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "`pythia broker` did not print bootstrap=... within 30 s (got {:?}); log:\n{}",
                    other.map(|(line, _)| line),
                    std::fs::read_to_string(&log).unwrap_or_default()
                );
            }
        };
        assert!(
            bootstrap.starts_with("127.0.0.1:"),
            "the embedded broker listens on {bootstrap}, not on loopback"
        );
        Self {
            child,
            bootstrap,
            _stdout: stdout,
        }
    }
}

impl Drop for PythiaBroker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The `pythia` CLI (package `pythia-kafka`), built beside the test
/// executables. The tests crate cannot depend on another package's binary, so
/// it is built here, once per test process, with the test's own profile and
/// target directory (a no-op when it is up to date).
fn pythia_bin() -> PathBuf {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        let exe = std::env::current_exe().expect("current exe");
        let profile_dir = exe
            .parent()
            .and_then(|deps| deps.parent())
            .expect("test binary lives in target/<profile>/deps");
        let target_dir = profile_dir.parent().expect("target/<profile> has a parent");
        let bin = profile_dir.join(format!("pythia{}", std::env::consts::EXE_SUFFIX));
        let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
        let mut build = Command::new(&cargo);
        build
            .args(["build", "--quiet", "-p", "pythia-cli", "--bin", "pythia"])
            .arg("--target-dir")
            .arg(target_dir)
            .current_dir(env!("CARGO_MANIFEST_DIR"));
        if profile_dir.file_name().is_some_and(|p| p == "release") {
            build.arg("--release");
        }
        let built = build.status().map(|s| s.success()).unwrap_or(false);
        assert!(
            built && bin.is_file(),
            "the chaos suite needs the `pythia` CLI (package pythia-kafka) at {}; building it \
             with `{} build -p pythia-cli --bin pythia --target-dir {}` failed: run that \
             command and look at its errors",
            bin.display(),
            cargo.to_string_lossy(),
            target_dir.display()
        );
        bin
    })
    .clone()
}
