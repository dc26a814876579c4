//! `pythia loadtest`: instances as processes, counted processings, scaling.

use std::process::{Command, Output};

use serde_json::Value;

const PYTHIA: &str = env!("CARGO_BIN_EXE_pythia");

fn loadtest(args: &[&str]) -> Output {
    let output = Command::new(PYTHIA)
        .arg("loadtest")
        .args(args)
        .env("RUST_LOG", "warn")
        .env_remove("PYTHIA_CONFIG")
        .output()
        .expect("run pythia loadtest");
    assert!(
        output.status.success(),
        "pythia loadtest {args:?} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    output
}

/// The one JSON object on stdout; nothing else may be there.
fn json(output: &Output) -> Value {
    let stdout = String::from_utf8(output.stdout.clone()).expect("utf-8 stdout");
    assert_eq!(stdout.lines().count(), 1, "stdout is one line: {stdout}");
    serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("not JSON ({e}): {stdout}"))
}

fn u(run: &Value, key: &str) -> u64 {
    run[key]
        .as_u64()
        .unwrap_or_else(|| panic!("`{key}` is not a count in {run}"))
}

fn f(run: &Value, key: &str) -> f64 {
    run[key]
        .as_f64()
        .unwrap_or_else(|| panic!("`{key}` is not a number in {run}"))
}

/// Checks one run's fields and arithmetic.
fn check_run(run: &Value, instances: u64, partitions: u64, messages: u64) {
    let keys: Vec<&str> = run
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    let mut expected = vec![
        "instances",
        "partitions",
        "messages",
        "processed",
        "unique_processed",
        "duplicates",
        "lost",
        "errors",
        "seconds",
        "throughput_msgs_per_s",
        "latency_ms",
        "per_instance",
    ];
    expected.sort();
    let mut keys = keys;
    keys.sort();
    assert_eq!(keys, expected, "exactly the documented fields: {run}");
    assert_eq!(u(run, "instances"), instances);
    assert_eq!(u(run, "partitions"), partitions);
    assert_eq!(u(run, "messages"), messages);
    let processed = u(run, "processed");
    let unique = u(run, "unique_processed");
    assert_eq!(u(run, "duplicates"), processed - unique, "{run}");
    assert_eq!(u(run, "lost"), messages - unique, "{run}");
    assert_eq!(u(run, "lost"), 0, "nothing lost: {run}");
    assert_eq!(u(run, "errors"), 0, "{run}");
    let seconds = f(run, "seconds");
    assert!(seconds > 0.0, "{run}");
    let throughput = f(run, "throughput_msgs_per_s");
    // `seconds` is rounded to the millisecond in the output, so the time the
    // throughput was computed from lies within half a millisecond of it: a
    // short run's throughput may be several percent off unique/seconds.
    let slowest = unique as f64 / (seconds + 0.0005);
    let fastest = unique as f64 / (seconds - 0.0005).max(0.000_001);
    assert!(
        (slowest - 1.0..=fastest + 1.0).contains(&throughput),
        "throughput {throughput} is not unique/seconds ({slowest:.0} to {fastest:.0}): {run}"
    );
    let latency = &run["latency_ms"];
    let (p50, p99, p999) = (f(latency, "p50"), f(latency, "p99"), f(latency, "p999"));
    assert!(p50 >= 0.0 && p99 >= p50 && p999 >= p99, "{run}");
    let per_instance = run["per_instance"].as_array().expect("per_instance list");
    assert_eq!(per_instance.len() as u64, instances);
    let mut sum = 0;
    for (i, share) in per_instance.iter().enumerate() {
        assert_eq!(u(share, "instance"), i as u64);
        sum += u(share, "processed");
    }
    assert_eq!(sum, processed, "shares add up to the processings: {run}");
}

#[test]
fn json_run_counts_every_message_once_across_instances() {
    let output = loadtest(&[
        "--instances",
        "2",
        "--partitions",
        "4",
        "--messages",
        "3000",
        "--message-size",
        "64",
        "--json",
    ]);
    let run = json(&output);
    check_run(&run, 2, 4, 3000);
    // Each instance holds two of the four partitions, which get equal loads.
    for share in run["per_instance"].as_array().unwrap() {
        assert!(u(share, "processed") >= 1500, "{run}");
    }
}

#[test]
fn scale_with_io_work_raises_throughput_with_instances() {
    let output = loadtest(&[
        "--work",
        "io:5ms",
        "--partitions",
        "4",
        "--concurrency",
        "1",
        "--messages",
        "800",
        "--scale",
        "1,2,4",
        "--json",
    ]);
    let report = json(&output);
    let runs = report["runs"].as_array().expect("runs");
    assert_eq!(runs.len(), 3);
    for (run, n) in runs.iter().zip([1, 2, 4]) {
        check_run(run, n, 4, 800);
    }
    let throughput: Vec<f64> = runs.iter().map(|r| f(r, "throughput_msgs_per_s")).collect();
    // One message at a time per instance on waiting work: each instance adds
    // its own rate (ideally ×2 per step). Generous bounds: the first fetch's
    // fixed delay weighs on the shortest run, and other tests share the CPUs.
    assert!(
        throughput[1] > 1.2 * throughput[0] && throughput[2] > 1.2 * throughput[1],
        "throughput does not rise with instances: {throughput:?}"
    );
    let efficiency: Vec<f64> = report["efficiency"]
        .as_array()
        .expect("efficiency")
        .iter()
        .map(|e| e.as_f64().unwrap())
        .collect();
    assert_eq!(efficiency.len(), 3);
    assert_eq!(efficiency[0], 1.0);
    for (i, n) in [(1, 2.0), (2, 4.0)] {
        let expected = throughput[i] / (n * throughput[0]);
        assert!(
            (efficiency[i] - expected).abs() < 0.01,
            "{efficiency:?} vs {throughput:?}"
        );
    }
}

#[test]
fn human_output_has_the_summary_and_the_plot_is_written() {
    let dir = std::env::temp_dir().join(format!("pythia-loadtest-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let plot = dir.join("load.svg");
    let output = loadtest(&[
        "--rate",
        "2000",
        "--duration",
        "1s",
        "--plot",
        plot.to_str().unwrap(),
        "--target-rate",
        "5000",
    ]);
    let stdout = String::from_utf8_lossy(&output.stdout);
    for expected in [
        "processed   2000 (unique 2000, duplicates 0, lost 0",
        "throughput",
        "p99",
        "per instance #0 2000",
        "advice for 5000 msg/s",
        "lagThreshold",
    ] {
        assert!(
            stdout.contains(expected),
            "`{expected}` missing from:\n{stdout}"
        );
    }
    assert!(!stdout.contains('\r'), "no progress bar off a terminal");
    let svg = std::fs::read_to_string(&plot).expect("plot written");
    assert!(
        svg.starts_with("<svg") && svg.contains("<polyline"),
        "{svg}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn bad_options_are_refused_with_a_reason() {
    for (args, says) in [
        (&["--work", "sleep:5ms"][..], "io:<duration>"),
        (&["--message-size", "4"][..], "--message-size"),
        (&["--rate", "100"][..], "--duration"),
        (&["--plot", "load.png"][..], ".svg"),
        (&["--instances", "0"][..], "--instances"),
        (&["--duration", "5s"][..], "--rate"),
        (&["--latency", "--work", "io:1ms"][..], "--work noop"),
    ] {
        let output = Command::new(PYTHIA)
            .arg("loadtest")
            .args(args)
            .output()
            .expect("run pythia loadtest");
        assert!(!output.status.success(), "{args:?} was accepted");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(
            stderr.contains(says),
            "{args:?}: `{says}` missing from {stderr}"
        );
    }
}

#[test]
fn latency_is_measured_for_pythia_beside_the_raw_loop_at_half_the_maximum() {
    let output = loadtest(&[
        "--latency",
        "--messages",
        "20000",
        "--duration",
        "2s",
        "--json",
    ]);
    let report = json(&output);
    let max = f(&report, "max_msgs_per_s");
    let rate = f(&report, "rate_msgs_per_s");
    assert!(max > 0.0, "{report}");
    assert!(
        (rate - max / 2.0).abs() <= 1.0,
        "half the maximum: {report}"
    );
    for side in ["pythia", "raw"] {
        let side = &report[side];
        assert_eq!(u(side, "lost"), 0, "{report}");
        let latency = &side["latency_ms"];
        let (p50, p99, p999) = (f(latency, "p50"), f(latency, "p99"), f(latency, "p999"));
        assert!(p50 > 0.0 && p99 >= p50 && p999 >= p99, "{report}");
    }
    let over = f(&report, "p99_over_raw_ms");
    let expected =
        f(&report["pythia"]["latency_ms"], "p99") - f(&report["raw"]["latency_ms"], "p99");
    assert!((over - expected).abs() < 0.01, "{report}");
}

#[test]
fn handoff_is_measured_for_each_group_protocol() {
    // Long enough for a classic join on the embedded broker (two rounds of
    // its rebalance, each the session timeout less 1 s) within the load.
    let output = loadtest(&[
        "--handoff",
        "--rate",
        "1000",
        "--duration",
        "24s",
        "--partitions",
        "4",
        "--json",
    ]);
    let report = json(&output);
    let runs = report.as_array().expect("one entry per protocol");
    let protocols: Vec<&str> = runs
        .iter()
        .map(|r| r["protocol"].as_str().unwrap())
        .collect();
    assert_eq!(protocols, ["consumer", "classic"]);
    for run in runs {
        assert_eq!(u(run, "lost"), 0, "{run}");
        let assigned = f(run, "assigned_after_s");
        let first = f(run, "first_message_after_s");
        assert!(assigned > 0.0 && first >= assigned, "{run}");
        let caught_up = f(run, "caught_up_after_s");
        assert!(caught_up >= 0.0, "{run}");
        assert!(f(run, "longest_pause_s") >= 0.0, "{run}");
        for key in ["backlog_before", "backlog_peak", "duplicates"] {
            u(run, key);
        }
    }
}
