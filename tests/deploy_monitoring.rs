//! The monitoring in `deploy/` against real processes: a worker (with some
//! retries and a dead letter) and the standalone lag exporter, scraped by a
//! real Prometheus that loads `deploy/prometheus/alerts.yml`. Every metric the
//! alert rules and the Grafana dashboard name exists, every rule evaluates
//! without error, every dashboard query returns data, the dead-letter alert
//! fires, and once the worker is gone the "no consumers" alert goes pending on
//! the exporter's lag alone. The image's health-check script answers too.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use pythia_tests::monitoring::{Prometheus, repo};
use pythia_tests::*;

const GROUP: &str = "deploy";
const TOPIC: &str = "events";
const PARTITIONS: i32 = 4;

/// The `pythia` CLI, built beside the test executables by `cargo test
/// --workspace`; built on demand when this test runs alone.
fn pythia_bin() -> PathBuf {
    let exe = std::env::current_exe().expect("current exe");
    let profile_dir = exe
        .parent()
        .and_then(|deps| deps.parent())
        .expect("test binary lives in target/<profile>/deps");
    let bin = profile_dir.join(format!("pythia{}", std::env::consts::EXE_SUFFIX));
    if !bin.exists() {
        let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
        let mut build = Command::new(cargo);
        build.args(["build", "-p", "pythia-cli", "--bin", "pythia"]);
        if profile_dir.file_name().is_some_and(|p| p == "release") {
            build.arg("--release");
        }
        assert!(
            build.status().expect("run cargo build").success(),
            "building the pythia CLI failed"
        );
    }
    bin
}

/// A child process killed (and reaped) when dropped, and signalled politely
/// with `terminate`.
struct Process(Child);

impl Process {
    fn terminate(&self) {
        // SAFETY: signalling our own child by pid.
        unsafe { libc::kill(self.0.id() as i32, libc::SIGTERM) };
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `pythia lag --serve` on a free loopback port; returns it and its address.
fn start_exporter(dir: &Path, bootstrap: &str) -> (Process, String) {
    let mut child = Command::new(pythia_bin())
        .args(["lag", "--brokers", bootstrap, "--group", GROUP])
        .args(["--topic", TOPIC, "--serve", "127.0.0.1:0"])
        .args(["--interval", "300ms"])
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(dir.join("exporter.log")).expect("log"))
        .spawn()
        .expect("spawn pythia lag --serve");
    let mut line = String::new();
    BufReader::new(child.stdout.take().expect("stdout"))
        .read_line(&mut line)
        .expect("read the exporter's first line");
    let exporter = Process(child);
    let address = line
        .trim()
        .strip_prefix("serving=")
        .unwrap_or_else(|| panic!("first line is not serving=...: {line:?}"))
        .to_owned();
    (exporter, address)
}

fn healthcheck(env: (&str, &str), path: &str) -> bool {
    Command::new("bash")
        .arg(repo().join("deploy/docker/healthcheck.sh"))
        .arg(path)
        .env_remove("PYTHIA_METRICS__ADDRESS")
        .env_remove("PYTHIA_HEALTHCHECK_ADDRESS")
        .env(env.0, env.1)
        .status()
        .expect("run healthcheck.sh")
        .success()
}

#[test]
fn prometheus_finds_every_metric_of_the_alerts_and_dashboard_and_the_alerts_work() {
    let dir = scratch("deploy");
    let broker = broker(TOPIC, PARTITIONS);
    broker
        .create_topic(&format!("{TOPIC}.dlq"), 1)
        .expect("dead-letter topic");
    let bootstrap = broker.bootstrap_servers();

    // Offset 5 of partition 1 (message 21, in the second round below) always
    // fails: one retry, then a dead letter.
    let mut worker = WorkerSpec::new(bootstrap, GROUP, TOPIC)
        .env("PYTHIA_METRICS__ADDRESS", "127.0.0.1:0")
        .env("PYTHIA_METRICS__LAG_INTERVAL", "300ms")
        .env("PYTHIA_WORKER__RETRY__MAX_ATTEMPTS", "2")
        .env("PYTHIA_WORKER__RETRY__INITIAL_BACKOFF", "10ms")
        .env("TEST_FAIL_AT", "1:5")
        // As the Kubernetes Deployment sets it (static membership).
        .env(
            "PYTHIA_KAFKA__CONSUMER__GROUP_INSTANCE_ID",
            "pythia-worker-0",
        )
        .spawn(&dir, "worker");
    let worker_address = worker.metrics_address(Duration::from_secs(60));
    let (exporter, exporter_address) = start_exporter(&dir, bootstrap);
    let prometheus = Prometheus::start(
        &dir,
        &["deploy/prometheus/alerts.yml"],
        &[
            ("pythia-worker", vec![worker_address.clone()]),
            ("pythia-lag-exporter", vec![exporter_address.clone()]),
        ],
    );

    const N: u64 = 40;
    // Two rounds, so Prometheus has samples of the counters before the second
    // and rates over the window are above zero.
    produce(bootstrap, TOPIC, PARTITIONS, 0..N / 2);
    wait_until(
        Duration::from_secs(120),
        "Prometheus to see the first round processed",
        || {
            prometheus.value(&format!(
                r#"sum(pythia_messages_total{{topic="{TOPIC}",outcome="ok"}})"#
            )) == Some((N / 2) as f64)
        },
    );
    std::thread::sleep(Duration::from_secs(1));
    produce(bootstrap, TOPIC, PARTITIONS, N / 2..N);
    wait_until(
        Duration::from_secs(120),
        "Prometheus to see N-1 processed, 1 retried and 1 dead-lettered, and no lag",
        || {
            let outcome = |o: &str| {
                prometheus.value(&format!(
                    r#"sum(pythia_messages_total{{topic="{TOPIC}",outcome="{o}"}})"#
                ))
            };
            outcome("ok") == Some((N - 1) as f64)
                && outcome("retried") == Some(1.0)
                && outcome("dead_lettered") == Some(1.0)
                && prometheus.value(&format!(
                    r#"sum(pythia_consumer_lag{{job="pythia-lag-exporter",group="{GROUP}"}})"#
                )) == Some(0.0)
        },
    );
    // Both sources report the partition gauges.
    for job in ["pythia-worker", "pythia-lag-exporter"] {
        assert_eq!(
            prometheus.value(&format!(
                r#"count(pythia_consumer_lag{{job="{job}",group="{GROUP}"}})"#
            )),
            Some(PARTITIONS as f64),
            "{job} reports every partition"
        );
    }
    // Some scrapes after the last change, so rates have their samples.
    std::thread::sleep(Duration::from_secs(3));

    let (alert_names, alert_metrics) = prometheus.check_rules("deploy/prometheus/alerts.yml");
    for expected in [
        "PythiaConsumerLagHigh",
        "PythiaConsumerLagGrowing",
        "PythiaConsumerStalled",
        "PythiaNoConsumers",
        "PythiaErrorRateHigh",
        "PythiaDeadLetters",
        "PythiaMessagesSkipped",
        "PythiaRebalanceStorm",
    ] {
        assert!(
            alert_names.contains(expected),
            "{expected} in {alert_names:?}"
        );
    }
    assert!(alert_metrics.len() >= 6, "{alert_metrics:?}");

    // The dashboard: every metric exists, every query returns numbers.
    let dashboard_metrics = prometheus.check_dashboard("deploy/grafana/dashboard.json");
    for required in [
        "pythia_consumer_lag",
        "pythia_consumer_lag_seconds",
        "pythia_messages_total",
        "pythia_process_duration_seconds_bucket",
        "pythia_assigned_partitions",
        "pythia_rebalances_total",
    ] {
        assert!(
            dashboard_metrics.contains(required),
            "the dashboard shows {required}"
        );
    }

    // The dead letter fires its alert (no `for`); nothing says the group has
    // no consumers or that the exporter is down.
    wait_until(Duration::from_secs(30), "PythiaDeadLetters to fire", || {
        prometheus.alerts().iter().any(|a| {
            a.name == "PythiaDeadLetters" && a.state == "firing" && a.labels["topic"] == TOPIC
        })
    });
    let active: Vec<String> = prometheus.alerts().into_iter().map(|a| a.name).collect();
    for quiet in [
        "PythiaNoConsumers",
        "PythiaLagExporterDown",
        "PythiaConsumerStalled",
    ] {
        assert!(!active.iter().any(|a| a == quiet), "{quiet} in {active:?}");
    }

    // The image's health check, against the live worker and exporter.
    assert!(healthcheck(
        ("PYTHIA_METRICS__ADDRESS", &worker_address),
        "/health/live"
    ));
    assert!(healthcheck(
        ("PYTHIA_METRICS__ADDRESS", &worker_address),
        "/health/ready"
    ));
    assert!(!healthcheck(
        ("PYTHIA_METRICS__ADDRESS", &worker_address),
        "/no-such-path"
    ));
    assert!(healthcheck(
        ("PYTHIA_HEALTHCHECK_ADDRESS", &exporter_address),
        "/metrics"
    ));

    // Every worker gone and new messages arriving: only the exporter still
    // reports the lag, and "no consumers" goes pending.
    worker.terminate();
    assert!(
        worker.wait(Duration::from_secs(30)).success(),
        "{}",
        worker.log_text()
    );
    produce(bootstrap, TOPIC, PARTITIONS, N..N + 8);
    wait_until(
        Duration::from_secs(60),
        "PythiaNoConsumers to go pending on the exporter's lag",
        || {
            prometheus.alerts().iter().any(|a| {
                a.name == "PythiaNoConsumers" && a.state == "pending" && a.labels["group"] == GROUP
            })
        },
    );
    assert_eq!(
        prometheus.value(&format!(r#"sum(pythia_consumer_lag{{group="{GROUP}"}})"#)),
        Some(8.0),
        "the exporter's lag alone, once the worker's series went stale"
    );
    exporter.terminate();
    drop(prometheus);
    drop(exporter);
}
