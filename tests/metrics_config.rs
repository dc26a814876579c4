//! A worker whose metrics server cannot start exits non-zero and says why:
//! a bad address names the key, a taken port names the address.

use std::process::Command;

use pythia_tests::*;

fn run_with(extra: &[(&str, &str)]) -> (bool, String) {
    let dir = scratch("metrics-config");
    let mut command = Command::new(worker_bin());
    command
        .env_clear()
        .current_dir(&dir)
        .env("RUST_LOG", "off")
        .env("PYTHIA_KAFKA__BROKERS", "127.0.0.1:1")
        .env("PYTHIA_KAFKA__GROUP", "g")
        .env("PYTHIA_KAFKA__TOPICS", "t");
    for (k, v) in extra {
        command.env(k, v);
    }
    let output = command.output().expect("run worker");
    (
        output.status.success(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

#[test]
fn a_bad_metrics_address_names_the_key() {
    let (ok, stderr) = run_with(&[("PYTHIA_METRICS__ADDRESS", "localhost")]);
    assert!(!ok);
    assert!(stderr.contains("metrics.address"), "{stderr}");
    assert!(stderr.contains("IP:PORT"), "{stderr}");
}

#[test]
fn a_taken_metrics_port_is_a_clear_error() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let address = taken.local_addr().unwrap().to_string();
    let (ok, stderr) = run_with(&[("PYTHIA_METRICS__ADDRESS", &address)]);
    assert!(!ok);
    assert!(stderr.contains(&address), "{stderr}");
    assert!(stderr.contains("metrics.address"), "{stderr}");
    assert!(stderr.contains("free port"), "{stderr}");
}

#[test]
fn json_logs_carry_the_message_span() {
    let dir = scratch("json-logs");
    let broker = broker("jsonlogs", 1);
    let bootstrap = broker.bootstrap_servers();
    produce(bootstrap, "jsonlogs", 1, 0..1);
    let mut worker = WorkerSpec::new(bootstrap, "jsonlogs", "jsonlogs")
        .env("PYTHIA_LOG__FORMAT", "json")
        .env("TEST_OUTPUT", 1)
        .env("PYTHIA_KAFKA__OUTPUT_TOPIC", "jsonlogs")
        .env("RUST_LOG", "info,pythia_core::lane=debug,librdkafka=warn")
        .spawn(&dir, "w");
    wait_until(
        std::time::Duration::from_secs(60),
        "a message span in the log",
        || worker.log_text().contains("outputs sent"),
    );
    worker.kill();
    let log = worker.log_text();
    let line = log
        .lines()
        .find(|l| l.contains("outputs sent"))
        .expect("the event");
    let event: serde_json::Value = serde_json::from_str(line).expect("a JSON log line");
    let span = &event["span"];
    assert_eq!(span["name"], "message", "{line}");
    assert_eq!(span["topic"], "jsonlogs", "{line}");
    assert_eq!(span["partition"], 0, "{line}");
    assert!(span["offset"].is_number(), "{line}");
    assert!(span["worker"].is_string(), "{line}");
}
