//! `pythia loadtest --broker rabbitmq --json` against the machine's RabbitMQ:
//! two worker processes share one queue with prefetch, and what they wrote
//! to the output queue adds up — nothing lost, nothing twice, both busy.

mod common;

use std::process::Command;

use common::{PYTHIA, require_rabbitmq};
use serde_json::Value;

fn u(v: &Value, key: &str) -> u64 {
    v[key]
        .as_u64()
        .unwrap_or_else(|| panic!("`{key}` is not a count in {v}"))
}

#[test]
fn two_instances_split_the_queue_with_nothing_lost_or_repeated() {
    require_rabbitmq();
    let messages = 2000;
    let output = Command::new(PYTHIA)
        .args(["loadtest", "--broker", "rabbitmq", "--json"])
        .args(["--instances", "2", "--messages", &messages.to_string()])
        .args(["--work", "io:2ms", "--prefetch", "10"])
        .env("RUST_LOG", "warn")
        .env_remove("PYTHIA_RABBITMQ__URL")
        .output()
        .expect("run pythia loadtest");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "pythia loadtest failed: {stderr}");
    let stdout = String::from_utf8(output.stdout).expect("utf-8 stdout");
    let report: Value = serde_json::from_str(stdout.trim()).expect("one JSON object");
    assert_eq!(u(&report, "messages"), messages);
    assert_eq!(u(&report, "unique_processed"), messages, "{report}");
    assert_eq!(u(&report, "lost"), 0, "{report}");
    assert_eq!(u(&report, "duplicates"), 0, "{report}");
    assert_eq!(u(&report, "errors"), 0, "{report}");
    assert_eq!(u(&report, "instances"), 2);
    let shares: Vec<u64> = report["per_instance"]
        .as_array()
        .expect("per_instance")
        .iter()
        .map(|s| u(s, "processed"))
        .collect();
    assert_eq!(shares.len(), 2, "{report}");
    assert_eq!(shares.iter().sum::<u64>(), messages);
    for share in &shares {
        // Fair dispatch at prefetch 10 with equal work: near half each.
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
}

#[test]
fn a_small_message_size_is_refused_with_the_flag_and_the_fix() {
    let output = Command::new(PYTHIA)
        .args(["loadtest", "--broker", "rabbitmq", "--message-size", "8"])
        .output()
        .expect("run pythia loadtest");
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("--message-size 16"), "{stderr}");
}
