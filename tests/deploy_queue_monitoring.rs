//! The queue workers' monitoring in `deploy/` against real processes: workers
//! on a RabbitMQ queue, a Redis list, a Redis stream and a NATS JetStream
//! consumer (each dead-letters a poison message), scraped by a real
//! Prometheus that loads `deploy/prometheus/alerts.yml` and
//! `deploy/prometheus/queue_alerts.yml`. Every metric the queue rules and
//! the queue dashboard (`deploy/grafana/queues.json`) name exists, every
//! rule evaluates without error, every dashboard query returns data, and
//! between them they show every series the connectors export. alerts.yml's
//! dead-letter alert fires for each worker while its Kafka rules stay
//! quiet; a NATS worker killed while it holds a message leaves it to its
//! successor's last delivery, which gives up on it, and
//! PythiaQueueGivenUp fires.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use pythia_tests::monitoring::Prometheus;
use pythia_tests::queues::{self, QueueCleanup};
use pythia_tests::{http_get, sample, scratch, test_bin, wait_until};

const ALERTS: &str = "deploy/prometheus/alerts.yml";
const QUEUE_ALERTS: &str = "deploy/prometheus/queue_alerts.yml";
const DASHBOARD: &str = "deploy/grafana/queues.json";
/// The scrape job of queue workers, as the compose Prometheus names it.
const JOB: &str = "pythia-queue-worker";
/// The payload every worker fails on permanently.
const POISON: &str = "poison";

/// A free loopback address for a metrics server.
fn free_address() -> String {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port();
    format!("127.0.0.1:{port}")
}

/// One worker process: its broker, its name (also the queue's), its
/// environment and the address of its metrics server.
struct QueueWorker {
    broker: &'static str,
    name: String,
    env: Vec<(String, String)>,
    address: String,
    log: PathBuf,
    child: Option<Child>,
}

impl QueueWorker {
    fn new(dir: &Path, broker: &'static str, name: &str, env: &[(&str, &str)]) -> Self {
        let mut all: Vec<(String, String)> = [
            ("PYTHIA_WORKER__NAME", name),
            ("PYTHIA_METRICS__LAG_INTERVAL", "300ms"),
            ("TEST_FAIL", POISON),
            ("RUST_LOG", "info"),
        ]
        .iter()
        .chain(env)
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        let address = free_address();
        all.push(("PYTHIA_METRICS__ADDRESS".into(), address.clone()));
        let mut worker = Self {
            broker,
            name: name.to_owned(),
            env: all,
            address,
            log: dir.join(format!("{name}.log")),
            child: None,
        };
        worker.start();
        worker
    }

    /// Starts the process (again, on the same metrics address) and waits
    /// until it consumes.
    fn start(&mut self) {
        let consuming = match self.broker {
            "rabbitmq" => "pythia_queue_consumers",
            "redis" => "pythia_redis_unacked_messages",
            _ => "pythia_nats_consumer_pending",
        };
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .expect("worker log");
        let child = Command::new(test_bin("pythia-queue-test-worker"))
            .arg(self.broker)
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("spawn the queue test worker");
        let mut child = child;
        wait_until(
            Duration::from_secs(60),
            &format!("{} to consume", self.name),
            || {
                if let Ok(Some(status)) = child.try_wait() {
                    panic!("{} exited with {status}:\n{}", self.name, self.log_text());
                }
                // The connector's series appear once it consumes (the
                // metrics server answers before).
                matches!(http_get(&self.address, "/metrics"), Ok((200, body)) if body.contains(consuming))
            },
        );
        self.child = Some(child);
    }

    /// One sample of its own `/metrics`, summed over the matching series.
    fn metric(&self, name: &str) -> Option<f64> {
        let (_, body) = http_get(&self.address, "/metrics").ok()?;
        sample(&body, name, &[])
    }

    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// SIGTERM, and the exit status within 30 s.
    fn stop(&mut self) -> std::process::ExitStatus {
        let mut child = self.child.take().expect("running");
        // SAFETY: signalling our own child by pid.
        unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = child.try_wait().expect("wait") {
                return status;
            }
            if std::time::Instant::now() > deadline {
                let _ = child.kill();
                panic!(
                    "{} did not stop on SIGTERM:\n{}",
                    self.name,
                    self.log_text()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Publishes payloads to its queue.
    fn publish(&self, payloads: &[&str]) {
        match self.broker {
            "rabbitmq" => queues::rabbitmq_publish(&self.name, payloads),
            "nats" => queues::nats_publish(&self.name, payloads),
            _ => {
                let stream = self
                    .env
                    .iter()
                    .any(|(k, v)| k == "PYTHIA_REDIS__MODE" && v == "stream");
                queues::redis_push(&self.name, stream, payloads)
            }
        }
    }
}

impl Drop for QueueWorker {
    fn drop(&mut self) {
        self.kill();
    }
}

fn payloads(round: usize, n: usize) -> Vec<String> {
    (0..n).map(|i| format!("job-{round}-{i}")).collect()
}

#[test]
fn prometheus_finds_every_metric_of_the_queue_alerts_and_dashboard_and_the_alerts_work() {
    if !queues::available() {
        return;
    }
    let dir = scratch("deploy-queues");
    let mut cleanup = QueueCleanup::default();

    let rabbit = queues::unique_name("pythia-dq-rabbit");
    cleanup.rabbitmq_queue(&rabbit);
    cleanup.rabbitmq_queue(&format!("{rabbit}.dlq"));
    let list = queues::unique_name("pythia-dq-list");
    cleanup.redis_prefix(&list);
    let stream = queues::unique_name("pythia-dq-stream");
    cleanup.redis_prefix(&stream);
    let subject = queues::unique_name("pythia-dq-nats");
    cleanup.nats_stream(&subject);
    cleanup.nats_stream(&format!("{subject}_DLQ"));

    let mut workers = vec![
        QueueWorker::new(
            &dir,
            "rabbitmq",
            &rabbit,
            &[
                ("PYTHIA_RABBITMQ__URL", queues::RABBITMQ_URL),
                ("PYTHIA_RABBITMQ__QUEUE", &rabbit),
            ],
        ),
        QueueWorker::new(
            &dir,
            "redis",
            &list,
            &[
                ("PYTHIA_REDIS__URL", queues::REDIS_URL),
                ("PYTHIA_REDIS__MODE", "list"),
                ("PYTHIA_REDIS__INPUT", &list),
            ],
        ),
        QueueWorker::new(
            &dir,
            "redis",
            &stream,
            &[
                ("PYTHIA_REDIS__URL", queues::REDIS_URL),
                ("PYTHIA_REDIS__MODE", "stream"),
                ("PYTHIA_REDIS__INPUT", &stream),
            ],
        ),
        // Its last delivery is the second: a message whose instance died
        // holding it is given up on by the next one.
        QueueWorker::new(
            &dir,
            "nats",
            &subject,
            &[
                ("PYTHIA_NATS__URL", queues::NATS_URL),
                ("PYTHIA_NATS__SUBJECT", &subject),
                ("PYTHIA_NATS__MAX_DELIVER", "2"),
                ("PYTHIA_NATS__ACK_WAIT", "1s"),
                ("TEST_SLOW_MS", "600000"),
            ],
        ),
    ];
    let targets: Vec<String> = workers.iter().map(|w| w.address.clone()).collect();
    let prometheus = Prometheus::start(&dir, &[ALERTS, QUEUE_ALERTS], &[(JOB, targets)]);

    // Two rounds, so Prometheus has samples of the counters before the
    // second and rates over the window are above zero; the poison in the
    // second.
    const N: usize = 10;
    for worker in &workers {
        let round = payloads(1, N);
        worker.publish(&round.iter().map(String::as_str).collect::<Vec<_>>());
    }
    let outcome = |worker: &QueueWorker, outcome: &str| {
        prometheus.value(&format!(
            r#"sum(pythia_messages_total{{worker="{}",topic="{}",outcome="{outcome}"}})"#,
            worker.name, worker.name
        ))
    };
    wait_until(
        Duration::from_secs(120),
        "Prometheus to see the first round processed",
        || workers.iter().all(|w| outcome(w, "ok") == Some(N as f64)),
    );
    std::thread::sleep(Duration::from_secs(1));
    for worker in &workers {
        let mut round = payloads(2, N);
        round.push(POISON.into());
        worker.publish(&round.iter().map(String::as_str).collect::<Vec<_>>());
    }
    wait_until(
        Duration::from_secs(120),
        "Prometheus to see 2N processed and the poison dead-lettered by every worker",
        || {
            workers.iter().all(|w| {
                outcome(w, "ok") == Some((2 * N) as f64) && outcome(w, "dead_lettered") == Some(1.0)
            })
        },
    );

    // A NATS instance dies holding a message; its successor (same address,
    // so the same series) gets the last delivery and gives up on it.
    let nats = workers.last_mut().expect("the NATS worker");
    nats.publish(&["slow-1"]);
    wait_until(
        Duration::from_secs(30),
        "the NATS worker to hold the slow message",
        || nats.metric("pythia_nats_unacked_messages") == Some(1.0),
    );
    // Prometheus has seen the counter at 0 from this instance.
    std::thread::sleep(Duration::from_secs(1));
    nats.kill();
    nats.start();
    let given_up = format!(r#"sum(pythia_nats_given_up_total{{group="{subject}"}})"#);
    wait_until(
        Duration::from_secs(60),
        "Prometheus to see the NATS message given up",
        || prometheus.value(&given_up) == Some(1.0),
    );
    // Fresh samples of every counter, so rates over the last minute have two.
    for worker in &workers {
        let round = payloads(3, N);
        worker.publish(&round.iter().map(String::as_str).collect::<Vec<_>>());
    }
    // The NATS counters restarted with its second instance.
    wait_until(
        Duration::from_secs(120),
        "Prometheus to see the third round processed",
        || {
            workers.iter().all(|w| {
                let rounds = if w.broker == "nats" { 1 } else { 3 };
                outcome(w, "ok") == Some((rounds * N) as f64)
            })
        },
    );
    std::thread::sleep(Duration::from_secs(3));

    // The rules: both files load and evaluate; the queue rules name only
    // metrics the workers export.
    for rule in prometheus.evaluated_rules(ALERTS) {
        assert_eq!(rule["health"], "ok", "rule evaluates: {rule}");
    }
    let (alert_names, rule_metrics) = prometheus.check_rules(QUEUE_ALERTS);
    for expected in [
        "PythiaQueueNoConsumers",
        "PythiaQueueBacklogNotDraining",
        "PythiaQueueGivenUp",
        "PythiaQueueRedeliveriesHigh",
        "PythiaQueueWorkerDown",
    ] {
        assert!(
            alert_names.contains(expected),
            "{expected} in {alert_names:?}"
        );
    }

    // The dashboard: every variable has values, every query returns data,
    // and with the rules it shows every series the connectors export.
    let dashboard_metrics = prometheus.check_dashboard(DASHBOARD);
    let shown: BTreeSet<&str> = dashboard_metrics
        .iter()
        .chain(&rule_metrics)
        .map(String::as_str)
        .collect();
    for name in pythia_rabbitmq::metrics::ALL
        .iter()
        .chain(pythia_redis::metrics::ALL)
        .chain(pythia_nats::metrics::ALL)
    {
        assert!(
            dashboard_metrics.contains(*name),
            "{DASHBOARD} shows {name}"
        );
    }
    for required in [
        "pythia_messages_total",
        "pythia_process_duration_seconds_bucket",
        "pythia_in_flight_messages",
    ] {
        assert!(shown.contains(required), "{DASHBOARD} shows {required}");
    }

    // The given-up message fires its alert (no `for`); every worker's dead
    // letter fires alerts.yml's; nothing says a queue has no consumers or
    // is not draining, and alerts.yml's Kafka rules stay quiet.
    wait_until(
        Duration::from_secs(30),
        "PythiaQueueGivenUp and PythiaDeadLetters to fire",
        || {
            let alerts = prometheus.alerts();
            let firing = |name: &str, label: &str, value: &str| {
                alerts
                    .iter()
                    .any(|a| a.name == name && a.state == "firing" && a.labels[label] == value)
            };
            firing("PythiaQueueGivenUp", "stream", &subject)
                && workers
                    .iter()
                    .all(|w| firing("PythiaDeadLetters", "topic", &w.name))
        },
    );
    let active: Vec<String> = prometheus.alerts().into_iter().map(|a| a.name).collect();
    for quiet in [
        "PythiaQueueNoConsumers",
        "PythiaQueueBacklogNotDraining",
        "PythiaNoConsumers",
        "PythiaLagExporterDown",
        "PythiaWorkerDown",
    ] {
        assert!(!active.iter().any(|a| a == quiet), "{quiet} in {active:?}");
    }

    // Every worker stops cleanly on SIGTERM.
    for worker in &mut workers {
        let status = worker.stop();
        assert!(status.success(), "{}:\n{}", worker.name, worker.log_text());
    }
    drop(prometheus);
    drop(cleanup);
}
