//! `pythia bench --json`: runs end to end and reports sane figures. Speed is
//! not asserted: this is a benchmark, and test machines are noisy.

use std::process::Command;

const PYTHIA: &str = env!("CARGO_BIN_EXE_pythia");

#[test]
fn bench_json_has_every_figure() {
    let output = Command::new(PYTHIA)
        .args(["bench", "--json", "--messages", "20000", "--rounds", "1"])
        .env("RUST_LOG", "warn")
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
    let report: serde_json::Value = serde_json::from_str(&stdout).expect("JSON");
    let mut keys: Vec<&str> = report
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    keys.sort();
    assert_eq!(
        keys,
        [
            "allocs_per_msg",
            "pipeline_pythia_msgs_per_s",
            "pipeline_ratio",
            "pipeline_raw_msgs_per_s",
            "pythia_msgs_per_s",
            "ratio",
            "raw_msgs_per_s"
        ]
    );
    let get = |k: &str| report[k].as_f64().unwrap();
    for rate in [
        "raw_msgs_per_s",
        "pythia_msgs_per_s",
        "pipeline_raw_msgs_per_s",
        "pipeline_pythia_msgs_per_s",
    ] {
        assert!(get(rate) > 0.0, "{rate}: {report}");
    }
    let close = |a: f64, b: f64| (a - b).abs() <= 0.002 + b * 0.002;
    assert!(
        close(
            get("ratio"),
            get("pythia_msgs_per_s") / get("raw_msgs_per_s")
        ),
        "{report}"
    );
    assert!(
        close(
            get("pipeline_ratio"),
            get("pipeline_pythia_msgs_per_s") / get("pipeline_raw_msgs_per_s")
        ),
        "{report}"
    );
    // The counter sees the run's allocations (the blocks payloads are copied
    // into, at least), and there are far fewer than a hundred per message.
    let allocs = get("allocs_per_msg");
    assert!(allocs > 0.0 && allocs < 100.0, "{report}");
}
