//! `pythia bench --broker rabbitmq --json` against the machine's RabbitMQ:
//! both sides drain a pre-loaded queue each, in processes of their own, and
//! the report has their figures and the ratio. Speed is not asserted: this
//! is a benchmark, and test machines are noisy.

mod common;

use std::process::Command;

use common::{PYTHIA, require_rabbitmq};
use serde_json::Value;

fn f(v: &Value, key: &str) -> f64 {
    v[key]
        .as_f64()
        .unwrap_or_else(|| panic!("`{key}` is not a number in {v}"))
}

#[test]
fn bench_json_has_both_sides_every_run_and_the_ratio() {
    require_rabbitmq();
    let output = Command::new(PYTHIA)
        .args(["bench", "--broker", "rabbitmq", "--json"])
        .args(["--messages", "3000", "--rounds", "2", "--prefetch", "20"])
        .args(["--message-size", "64"])
        .env("RUST_LOG", "warn")
        .env_remove("PYTHIA_RABBITMQ__URL")
        .output()
        .expect("run pythia bench");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "pythia bench failed: {stderr}");
    let stdout = String::from_utf8(output.stdout).expect("utf-8 stdout");
    assert_eq!(
        stdout.lines().count(),
        1,
        "stdout is one JSON line: {stdout}"
    );
    let report: Value = serde_json::from_str(&stdout).expect("JSON");
    assert_eq!(report["broker"], "rabbitmq");
    assert_eq!(report["messages"], 3000);
    assert_eq!(report["prefetch"], 20);
    assert_eq!(report["brokers"], "amqp://127.0.0.1:5672/%2f");

    let runs = report["runs"].as_array().expect("runs");
    let sides: Vec<(u64, &str)> = runs
        .iter()
        .map(|r| (r["round"].as_u64().unwrap(), r["side"].as_str().unwrap()))
        .collect();
    assert_eq!(
        sides,
        [(1, "raw"), (1, "pythia"), (2, "pythia"), (2, "raw")],
        "every round runs both sides, alternating which goes first"
    );
    for run in runs {
        assert!(f(run, "msgs_per_s") > 0.0, "{run}");
        assert!(f(run, "cpu_us_per_msg") > 0.0, "{run}");
        assert!(f(run, "peak_rss_mib") > 1.0, "{run}");
    }
    for side in ["raw", "pythia"] {
        let s = &report["sides"][side];
        assert!(f(s, "msgs_per_s") > 0.0, "{side}: {s}");
        assert_eq!(s["consumer"]["prefetch"], "20", "{side}: {s}");
    }
    let ratio = f(&report["ratios"], "pythia_vs_raw");
    let expected =
        f(&report["sides"]["pythia"], "msgs_per_s") / f(&report["sides"]["raw"], "msgs_per_s");
    assert!((ratio - expected).abs() < 0.01, "{ratio} vs {expected}");
    assert!(f(&report["ratios"], "pythia_cpu_vs_raw") > 0.0);
    // Every queue of the bench was deleted, whatever its pid.
    assert!(
        !stderr.contains("could not delete"),
        "queues left behind: {stderr}"
    );
}

#[test]
fn kafka_flags_are_refused_with_rabbitmq_and_named() {
    let output = Command::new(PYTHIA)
        .args(["bench", "--broker", "rabbitmq", "--partitions", "4"])
        .output()
        .expect("run pythia bench");
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("--partitions"), "{stderr}");
    assert!(stderr.contains("--broker kafka"), "{stderr}");
}
