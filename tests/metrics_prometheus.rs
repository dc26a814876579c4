//! Lag as a real Prometheus server sees it: a blocked worker's lag equals what
//! was produced, and after it drains the lag is zero and the processed counter
//! equals what was produced.

use std::time::Duration;

use pythia_tests::prometheus_server::Prometheus;
use pythia_tests::*;

#[test]
fn prometheus_sees_lag_grow_while_blocked_and_drain_to_zero() {
    let dir = scratch("prom");
    let broker = broker("events", 4);
    let bootstrap = broker.bootstrap_servers();
    let gate = dir.join("gate");
    let mut worker = WorkerSpec::new(bootstrap, "prom", "events")
        .env("TEST_GATE_FILE", gate.display())
        .env("PYTHIA_METRICS__ADDRESS", "127.0.0.1:0")
        .env("PYTHIA_METRICS__LAG_INTERVAL", "300ms")
        .spawn(&dir, "w");
    let target = worker.metrics_address(Duration::from_secs(60));
    let prometheus = Prometheus::start(&dir, &[&target]);

    const N: u64 = 40;
    produce(bootstrap, "events", 4, 0..N);
    let lag = r#"sum(pythia_consumer_lag{group="prom"})"#;
    let mut seen = None;
    wait_until(
        Duration::from_secs(120),
        "Prometheus to report lag = N",
        || {
            seen = prometheus.query(lag);
            seen == Some(N as f64)
        },
    );
    let partitions = prometheus.query(r#"count(pythia_consumer_lag{group="prom"})"#);
    assert_eq!(partitions, Some(4.0), "one lag series per partition");
    wait_until(
        Duration::from_secs(60),
        "the age of the oldest unprocessed message to be reported",
        || {
            prometheus
                .query(r#"max(pythia_consumer_lag_seconds{group="prom"})"#)
                .is_some_and(|s| s > 0.0)
        },
    );
    assert_eq!(
        prometheus.query(r#"sum(pythia_messages_total{outcome="ok"})"#),
        Some(0.0),
        "nothing is processed while blocked"
    );

    std::fs::write(&gate, b"open").expect("open the gate");
    wait_until(
        Duration::from_secs(120),
        "Prometheus to report lag = 0 and N processed",
        || {
            prometheus.query(lag) == Some(0.0)
                && prometheus.query(r#"sum(pythia_messages_total{outcome="ok"})"#) == Some(N as f64)
        },
    );
    assert_eq!(
        prometheus.query(r#"max(pythia_consumer_lag_seconds{group="prom"})"#),
        Some(0.0)
    );
    assert_eq!(
        prometheus.query(r#"sum(pythia_process_duration_seconds_count{topic="events"})"#),
        Some(N as f64)
    );
    assert_eq!(
        prometheus.query(r#"pythia_assigned_partitions{group="prom"}"#),
        Some(4.0)
    );
    worker.terminate();
    assert!(
        worker.wait(Duration::from_secs(30)).success(),
        "{}",
        worker.log_text()
    );
    drop(prometheus);
}
