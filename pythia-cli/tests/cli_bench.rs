//! `pythia bench --json`: runs end to end, every side in a process of its
//! own against `pythia broker`, and reports sane figures. Speed is not
//! asserted: this is a benchmark, and test machines are noisy.

use std::process::Command;

use serde_json::Value;

const PYTHIA: &str = env!("CARGO_BIN_EXE_pythia");

fn f(v: &Value, key: &str) -> f64 {
    v[key]
        .as_f64()
        .unwrap_or_else(|| panic!("`{key}` is not a number in {v}"))
}

#[test]
fn bench_json_has_every_side_with_cpu_memory_and_properties() {
    let output = Command::new(PYTHIA)
        .args(["bench", "--json", "--messages", "20000", "--rounds", "2"])
        .args(["--partitions", "2", "--in-process"])
        .env("RUST_LOG", "warn")
        .env_remove("PYTHIA_CONFIG")
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
    let sides = [
        "raw",
        "fastest",
        "pythia",
        "pipeline-raw",
        "pipeline-pythia",
    ];

    // Every side ran once a round, in a process of its own.
    let runs = report["runs"].as_array().expect("runs");
    assert_eq!(runs.len(), 2 * sides.len(), "{report}");
    for run in runs {
        assert!(f(run, "msgs_per_s") > 0.0, "{run}");
        assert!(f(run, "cpu_us_per_msg") > 0.0, "{run}");
        assert!(f(run, "peak_rss_mib") > 1.0, "{run}");
        let cpu = f(run, "user_s") + f(run, "system_s");
        let per_msg = cpu * 1e6 / 20_000.0;
        assert!(
            (per_msg - f(run, "cpu_us_per_msg")).abs() <= per_msg * 0.01 + 0.01,
            "CPU per message is the process's CPU time over the messages: {run}"
        );
    }
    let first: Vec<&str> = runs[..5]
        .iter()
        .map(|r| r["side"].as_str().unwrap())
        .collect();
    let second: Vec<&str> = runs[5..]
        .iter()
        .map(|r| r["side"].as_str().unwrap())
        .collect();
    assert_eq!(first[0], "raw");
    assert_eq!(
        second[0], "pythia",
        "rounds alternate which side goes first"
    );

    // Medians, with the properties each side set.
    for side in sides {
        let s = &report["sides"][side];
        assert!(f(s, "msgs_per_s") > 0.0, "{side}: {report}");
        let consumer = &s["consumer"];
        assert!(consumer["bootstrap.servers"].is_string(), "{side}: {s}");
        assert!(consumer["group.id"].is_string(), "{side}: {s}");
    }
    let raw = &report["sides"]["raw"]["consumer"];
    assert!(
        raw.get("queued.max.messages.kbytes").is_none(),
        "the baseline keeps librdkafka's defaults: {raw}"
    );
    let pythia = &report["sides"]["pythia"]["consumer"];
    assert_eq!(pythia["enable.auto.commit"], "false", "{pythia}");
    assert!(report["sides"]["pipeline-pythia"]["producer"]["enable.idempotence"].is_string());

    let ratios = &report["ratios"];
    let close = |a: f64, b: f64| (a - b).abs() <= 0.002 + b * 0.002;
    let median = |side: &str, key: &str| f(&report["sides"][side], key);
    assert!(
        close(
            f(ratios, "pythia_vs_raw"),
            median("pythia", "msgs_per_s") / median("raw", "msgs_per_s")
        ),
        "{ratios}"
    );
    assert!(
        close(
            f(ratios, "pythia_cpu_vs_raw"),
            median("pythia", "cpu_us_per_msg") / median("raw", "cpu_us_per_msg")
        ),
        "{ratios}"
    );
    assert!(
        close(
            f(ratios, "pipeline_vs_raw"),
            median("pipeline-pythia", "msgs_per_s") / median("pipeline-raw", "msgs_per_s")
        ),
        "{ratios}"
    );

    // The in-process table, as before.
    let in_process = &report["in_process"];
    assert!(f(in_process, "ratio") > 0.0, "{in_process}");
    let allocs = f(in_process, "allocs_per_msg");
    assert!(allocs > 0.0 && allocs < 100.0, "{in_process}");
}

#[test]
fn bench_refuses_in_process_options_without_in_process() {
    let output = Command::new(PYTHIA)
        .args(["bench", "--max-in-flight", "10"])
        .output()
        .expect("run pythia bench");
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("--in-process"));
}
