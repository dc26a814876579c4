//! The monitoring in `deploy/` against real processes: a worker (with some
//! retries and a dead letter) and the standalone lag exporter, scraped by a
//! real Prometheus that loads `deploy/prometheus/alerts.yml`. Every metric the
//! alert rules and the Grafana dashboard name exists, every rule evaluates
//! without error, every dashboard query returns data, the dead-letter alert
//! fires, and once the worker is gone the "no consumers" alert goes pending on
//! the exporter's lag alone. The image's health-check script answers too.

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use pythia_tests::*;

const GROUP: &str = "deploy";
const TOPIC: &str = "events";
const PARTITIONS: i32 = 4;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ has a parent")
        .to_owned()
}

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

/// A Prometheus server scraping the worker and the exporter under the job
/// names the deploy files use, with the alert rules loaded.
struct Prometheus {
    _process: Process,
    address: String,
}

impl Prometheus {
    fn start(dir: &Path, worker: &str, exporter: &str) -> Self {
        let rules = repo().join("deploy/prometheus/alerts.yml");
        let config = dir.join("prometheus.yml");
        std::fs::write(
            &config,
            format!(
                "global:\n  scrape_interval: 500ms\n  evaluation_interval: 500ms\n\
                 rule_files:\n  - '{}'\n\
                 scrape_configs:\n\
                 \x20 - job_name: pythia-worker\n    static_configs:\n      - targets: ['{worker}']\n\
                 \x20 - job_name: pythia-lag-exporter\n    static_configs:\n      - targets: ['{exporter}']\n",
                rules.display()
            ),
        )
        .expect("write prometheus.yml");
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("free port")
            .port();
        let address = format!("127.0.0.1:{port}");
        let log = dir.join("prometheus.log");
        let child = Command::new(pythia_tests::prometheus_server::binary())
            .arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.join("data").display()
            ))
            .arg(format!("--web.listen-address={address}"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).expect("prometheus log"))
            .spawn()
            .expect("start prometheus");
        let mut process = Process(child);
        wait_until(Duration::from_secs(60), "Prometheus to be ready", || {
            if let Ok(Some(status)) = process.0.try_wait() {
                panic!(
                    "Prometheus exited with {status}:\n{}",
                    std::fs::read_to_string(&log).unwrap_or_default()
                );
            }
            matches!(http_get(&address, "/-/ready"), Ok((200, _)))
        });
        Self {
            _process: process,
            address,
        }
    }

    /// `GET /api/v1/<path>`'s `data`, failing the test on an API error.
    fn api(&self, path: &str) -> serde_json::Value {
        let (code, body) = http_get(&self.address, &format!("/api/v1/{path}"))
            .unwrap_or_else(|e| panic!("GET /api/v1/{path}: {e}"));
        // Large answers come chunked (`http_get` speaks HTTP/1.1).
        let body = serde_json::from_str::<serde_json::Value>(&body)
            .map(|_| body.clone())
            .unwrap_or_else(|_| dechunk(&body));
        let json: serde_json::Value =
            serde_json::from_str(&body).unwrap_or_else(|_| panic!("not JSON: {body}"));
        assert_eq!(code, 200, "/api/v1/{path}: {body}");
        assert_eq!(json["status"], "success", "/api/v1/{path}: {body}");
        json["data"].clone()
    }

    /// The result vector of an instant query.
    fn query(&self, expr: &str) -> Vec<serde_json::Value> {
        let data = self.api(&format!("query?query={}", encode(expr)));
        data["result"].as_array().cloned().unwrap_or_default()
    }

    /// The sum of an instant query's samples; `None` when it yields nothing.
    fn value(&self, expr: &str) -> Option<f64> {
        let result = self.query(expr);
        (!result.is_empty()).then(|| result.iter().map(sample_value).sum())
    }

    /// Alerts pending or firing, as (name, state, labels).
    fn alerts(&self) -> Vec<(String, String, serde_json::Value)> {
        self.api("alerts")["alerts"]
            .as_array()
            .cloned()
            .unwrap_or_default()
            .into_iter()
            .map(|a| {
                (
                    a["labels"]["alertname"].as_str().unwrap_or("").to_owned(),
                    a["state"].as_str().unwrap_or("").to_owned(),
                    a["labels"].clone(),
                )
            })
            .collect()
    }
}

/// The body of a `Transfer-Encoding: chunked` response.
fn dechunk(body: &str) -> String {
    let mut rest = body.as_bytes();
    let mut out = Vec::new();
    while let Some(line_end) = rest.windows(2).position(|w| w == b"\r\n") {
        let size = std::str::from_utf8(&rest[..line_end])
            .ok()
            .and_then(|s| usize::from_str_radix(s.trim(), 16).ok())
            .unwrap_or(0);
        if size == 0 {
            break;
        }
        let start = line_end + 2;
        out.extend_from_slice(&rest[start..start + size]);
        rest = &rest[(start + size + 2).min(rest.len())..];
    }
    String::from_utf8(out).expect("UTF-8 body")
}

fn sample_value(sample: &serde_json::Value) -> f64 {
    sample["value"][1]
        .as_str()
        .and_then(|v| v.parse().ok())
        .unwrap_or(f64::NAN)
}

fn encode(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// The metric names (`pythia_…`) an expression mentions.
fn metric_names(expr: &str) -> BTreeSet<String> {
    let bytes = expr.as_bytes();
    let ident = |b: u8| b.is_ascii_alphanumeric() || b == b'_' || b == b':';
    let mut names = BTreeSet::new();
    let mut i = 0;
    while let Some(at) = expr[i..].find("pythia_") {
        let start = i + at;
        let mut end = start;
        while end < bytes.len() && ident(bytes[end]) {
            end += 1;
        }
        if start == 0 || !ident(bytes[start - 1]) {
            names.insert(expr[start..end].to_owned());
        }
        i = end;
    }
    names
}

/// A dashboard query made concrete: Grafana's interval variables become a
/// minute (or five for the range), template variables match everything.
fn concrete(expr: &str, variables: &[String]) -> String {
    let mut out = expr
        .replace("$__rate_interval", "1m")
        .replace("$__interval", "1m")
        .replace("$__range", "5m");
    for name in variables {
        out = out
            .replace(&format!("${{{name}}}"), ".*")
            .replace(&format!("${name}"), ".*");
    }
    assert!(
        !out.contains('$'),
        "a variable the dashboard does not define: {expr}"
    );
    out
}

/// Every panel query of the dashboard, as (panel title, expression).
fn dashboard_queries(dashboard: &serde_json::Value) -> Vec<(String, String)> {
    let mut queries = Vec::new();
    for panel in dashboard["panels"].as_array().expect("panels") {
        let nested = panel["panels"].as_array().cloned().unwrap_or_default();
        for p in std::iter::once(panel).chain(nested.iter()) {
            for target in p["targets"].as_array().into_iter().flatten() {
                if let Some(expr) = target["expr"].as_str() {
                    queries.push((p["title"].as_str().unwrap_or("").to_owned(), expr.into()));
                }
            }
        }
    }
    queries
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
    let prometheus = Prometheus::start(&dir, &worker_address, &exporter_address);

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

    let known: BTreeSet<String> = prometheus
        .api("label/__name__/values")
        .as_array()
        .expect("names")
        .iter()
        .filter_map(|n| n.as_str().map(str::to_owned))
        .collect();

    // The alert rules, as Prometheus loaded them.
    let mut rules = Vec::new();
    wait_until(
        Duration::from_secs(30),
        "every rule to have been evaluated",
        || {
            rules = prometheus.api("rules")["groups"]
                .as_array()
                .expect("rule groups")
                .iter()
                .flat_map(|g| g["rules"].as_array().cloned().unwrap_or_default())
                .collect();
            !rules.is_empty()
                && rules.iter().all(|r| {
                    r["lastEvaluation"]
                        .as_str()
                        .is_some_and(|t| !t.starts_with("0001"))
                })
        },
    );
    let alert_names: BTreeSet<&str> = rules.iter().filter_map(|r| r["name"].as_str()).collect();
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
    let mut alert_metrics = BTreeSet::new();
    for rule in &rules {
        let name = rule["name"].as_str().unwrap_or_default();
        assert_eq!(rule["health"], "ok", "rule {name} evaluates: {rule}");
        for annotation in ["summary", "runbook"] {
            assert!(
                rule["annotations"][annotation]
                    .as_str()
                    .is_some_and(|a| !a.is_empty()),
                "rule {name} has a {annotation}"
            );
        }
        alert_metrics.extend(metric_names(rule["query"].as_str().expect("query")));
    }
    assert!(alert_metrics.len() >= 6, "{alert_metrics:?}");
    for name in &alert_metrics {
        assert!(
            known.contains(name),
            "alerts.yml uses {name}, which Prometheus does not have: {known:?}"
        );
    }

    // The dashboard: every metric exists, every query returns numbers.
    let dashboard: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(repo().join("deploy/grafana/dashboard.json"))
            .expect("read dashboard.json"),
    )
    .expect("dashboard.json is JSON");
    let templating = dashboard["templating"]["list"]
        .as_array()
        .expect("templating");
    let variables: Vec<String> = templating
        .iter()
        .filter_map(|v| v["name"].as_str().map(str::to_owned))
        .collect();
    let mut dashboard_metrics = BTreeSet::new();
    for variable in templating.iter().filter(|v| v["type"] == "query") {
        let query = variable["query"]["query"]
            .as_str()
            .or(variable["query"].as_str())
            .expect("variable query");
        let inner = query
            .strip_prefix("label_values(")
            .and_then(|q| q.strip_suffix(')'))
            .expect("label_values(<series>, <label>)");
        let (series, label) = inner.rsplit_once(',').expect("series, label");
        let series = concrete(series.trim(), &variables);
        let values = prometheus.api(&format!(
            "label/{}/values?match[]={}",
            label.trim(),
            encode(&series)
        ));
        assert!(
            values.as_array().is_some_and(|v| !v.is_empty()),
            "variable {query} has values"
        );
        dashboard_metrics.extend(metric_names(&series));
    }
    let queries = dashboard_queries(&dashboard);
    assert!(queries.len() >= 10, "{} queries", queries.len());
    for (title, expr) in &queries {
        dashboard_metrics.extend(metric_names(expr));
        let query = concrete(expr, &variables);
        let result = prometheus.query(&query);
        assert!(
            result.iter().any(|s| sample_value(s).is_finite()),
            "panel {title:?}: {query} returns no data: {result:?}"
        );
    }
    for name in &dashboard_metrics {
        assert!(
            known.contains(name),
            "dashboard.json uses {name}, which Prometheus does not have"
        );
    }
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
        prometheus.alerts().iter().any(|(name, state, labels)| {
            name == "PythiaDeadLetters" && state == "firing" && labels["topic"] == TOPIC
        })
    });
    let active: Vec<String> = prometheus.alerts().into_iter().map(|a| a.0).collect();
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
            prometheus.alerts().iter().any(|(name, state, labels)| {
                name == "PythiaNoConsumers" && state == "pending" && labels["group"] == GROUP
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
