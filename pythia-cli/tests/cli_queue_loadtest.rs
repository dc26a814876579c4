//! `pythia loadtest --broker rabbitmq|redis-list|redis-streams|nats --json`
//! against the machine's servers: two worker processes share one input with
//! a prefetch, and what they wrote to the output adds up — nothing lost,
//! nothing twice, both busy — and the run leaves nothing behind.

mod common;

use std::process::{Command, Stdio};

use common::{PYTHIA, nats_stream_names, redis, require_nats, require_rabbitmq, require_redis};
use serde_json::Value;

fn u(v: &Value, key: &str) -> u64 {
    v[key]
        .as_u64()
        .unwrap_or_else(|| panic!("`{key}` is not a count in {v}"))
}

/// Runs two instances on `broker` over 2,000 messages of 2 ms of I/O each,
/// checks the report, and returns the load test's pid.
fn two_instances(broker: &str) -> u32 {
    let messages = 2000;
    let child = Command::new(PYTHIA)
        .args(["loadtest", "--broker", broker, "--json"])
        .args(["--instances", "2", "--messages", &messages.to_string()])
        .args(["--work", "io:2ms", "--prefetch", "10"])
        .env("RUST_LOG", "warn")
        .env_remove("PYTHIA_RABBITMQ__URL")
        .env_remove("PYTHIA_REDIS__URL")
        .env_remove("PYTHIA_NATS__URL")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run pythia loadtest");
    let pid = child.id();
    let output = child.wait_with_output().expect("wait for pythia loadtest");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "pythia loadtest failed: {stderr}");
    assert!(!stderr.contains("could not delete"), "{stderr}");
    let stdout = String::from_utf8(output.stdout).expect("utf-8 stdout");
    let report: Value = serde_json::from_str(stdout.trim()).expect("one JSON object");
    assert_eq!(u(&report, "messages"), messages);
    assert_eq!(u(&report, "unique_processed"), messages, "{report}");
    assert_eq!(u(&report, "lost"), 0, "{report}");
    assert_eq!(u(&report, "duplicates"), 0, "{report}");
    assert_eq!(u(&report, "errors"), 0, "{report}");
    assert_eq!(u(&report, "instances"), 2);
    assert_eq!(u(&report, "partitions"), 1, "a queue has no partitions");
    let shares: Vec<u64> = report["per_instance"]
        .as_array()
        .expect("per_instance")
        .iter()
        .map(|s| u(s, "processed"))
        .collect();
    assert_eq!(shares.len(), 2, "{report}");
    assert_eq!(shares.iter().sum::<u64>(), messages);
    for share in &shares {
        // Equal work and a prefetch of 10 each: near half each.
        assert!(
            (messages * 3 / 10..=messages * 7 / 10).contains(share),
            "split {shares:?} is not near 50/50: {report}"
        );
    }
    let latency = &report["latency_ms"];
    assert!(
        latency["p50"].as_f64().unwrap() >= 2.0,
        "io:2ms per message: {latency}"
    );
    assert!(latency["p99"].as_f64().unwrap() >= latency["p50"].as_f64().unwrap());
    assert!(report["throughput_msgs_per_s"].as_f64().unwrap() > 0.0);
    pid
}

#[test]
fn rabbitmq_instances_split_the_queue_with_nothing_lost_or_repeated() {
    require_rabbitmq();
    two_instances("rabbitmq");
}

#[test]
fn redis_list_instances_split_the_list_and_leave_no_key() {
    require_redis();
    let pid = two_instances("redis-list");
    let left = redis(&["KEYS", &format!("pythia-loadtest-{pid}-*")]);
    assert_eq!(left, "*0\r\n", "keys of the load test left on Redis");
}

#[test]
fn redis_streams_instances_split_the_stream_and_leave_no_key() {
    require_redis();
    let pid = two_instances("redis-streams");
    let left = redis(&["KEYS", &format!("pythia-loadtest-{pid}-*")]);
    assert_eq!(left, "*0\r\n", "keys of the load test left on Redis");
}

#[test]
fn nats_instances_split_the_consumer_and_leave_no_stream() {
    require_nats();
    let pid = two_instances("nats");
    let names = nats_stream_names();
    assert!(names.contains("stream_names_response"), "{names}");
    assert!(
        !names.contains(&format!("pythia-loadtest-{pid}-")),
        "streams of the load test left on NATS: {names}"
    );
}

#[test]
fn a_small_message_size_is_refused_with_the_flag_and_the_fix() {
    for broker in ["rabbitmq", "redis-list", "nats"] {
        let output = Command::new(PYTHIA)
            .args(["loadtest", "--broker", broker, "--message-size", "8"])
            .output()
            .expect("run pythia loadtest");
        assert!(!output.status.success());
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(stderr.contains("--message-size 16"), "{broker}: {stderr}");
        assert!(stderr.contains(broker), "{broker}: {stderr}");
    }
}

#[test]
fn kafka_flags_and_bad_urls_are_refused_with_the_fix() {
    let output = Command::new(PYTHIA)
        .args(["loadtest", "--broker", "redis-streams", "--partitions", "4"])
        .output()
        .expect("run pythia loadtest");
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("--partitions is a Kafka option"),
        "{stderr}"
    );

    let output = Command::new(PYTHIA)
        .args(["loadtest", "--broker", "nats", "--url", "http://nats:4222"])
        .output()
        .expect("run pythia loadtest");
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("nats://"), "{stderr}");
}

#[test]
fn a_server_that_does_not_answer_is_named_with_the_fix() {
    // A port nothing listens on.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port();
    let output = Command::new(PYTHIA)
        .args(["loadtest", "--broker", "redis-list"])
        .args(["--url", &format!("redis://127.0.0.1:{port}/0")])
        .output()
        .expect("run pythia loadtest");
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("Redis does not answer"), "{stderr}");
}
