//! `pythia bench --broker redis-list|redis-streams|nats --json` against the
//! machine's Redis and NATS: both sides drain a pre-loaded queue each, in
//! processes of their own, and the report has their figures and the
//! ratios. Speed is not asserted: this is a benchmark, and test machines
//! are noisy.

mod common;

use std::process::{Command, Stdio};

use common::{PYTHIA, nats_stream_names, redis, require_nats, require_redis};
use serde_json::Value;

fn f(v: &Value, key: &str) -> f64 {
    v[key]
        .as_f64()
        .unwrap_or_else(|| panic!("`{key}` is not a number in {v}"))
}

/// What every password of these tests contains, and no output may.
const SECRET: &str = "s3cret";

/// Runs `pythia bench --broker <broker> --messages 3000 --rounds 1 --json`
/// with `env`, and checks the report; returns it with the bench's pid.
fn bench(broker: &str, env: &[(&str, &str)], brokers: &str) -> (Value, u32) {
    let child = Command::new(PYTHIA)
        .args(["bench", "--broker", broker, "--json"])
        .args(["--messages", "3000", "--rounds", "1"])
        .args(["--message-size", "64"])
        .env("RUST_LOG", "warn")
        .env_remove("PYTHIA_REDIS__URL")
        .env_remove("PYTHIA_NATS__URL")
        .envs(env.iter().copied())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run pythia bench");
    let pid = child.id();
    let output = child.wait_with_output().expect("wait for pythia bench");
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    assert!(output.status.success(), "pythia bench failed: {stderr}");
    let stdout = String::from_utf8(output.stdout).expect("utf-8 stdout");
    for text in [&stdout, &stderr] {
        assert!(!text.contains(SECRET), "a password shows: {text}");
    }
    assert_eq!(
        stdout.lines().count(),
        1,
        "stdout is one JSON line: {stdout}"
    );
    let report: Value = serde_json::from_str(&stdout).expect("JSON");
    assert_eq!(report["broker"], broker);
    assert_eq!(report["messages"], 3000);
    assert_eq!(report["message_size"], 64);
    assert_eq!(report["prefetch"], 10);
    assert_eq!(report["brokers"], brokers);

    let runs = report["runs"].as_array().expect("runs");
    let sides: Vec<(u64, &str)> = runs
        .iter()
        .map(|r| (r["round"].as_u64().unwrap(), r["side"].as_str().unwrap()))
        .collect();
    assert_eq!(
        sides,
        [(1, "raw"), (1, "pythia")],
        "both sides ran: {report}"
    );
    for run in runs {
        assert!(f(run, "msgs_per_s") > 0.0, "{run}");
        assert!(f(run, "cpu_us_per_msg") > 0.0, "{run}");
        assert!(f(run, "peak_rss_mib") > 1.0, "{run}");
    }
    for side in ["raw", "pythia"] {
        let s = &report["sides"][side];
        assert!(f(s, "msgs_per_s") > 0.0, "{side}: {s}");
        assert!(s["consumer"]["ack"].is_string(), "{side}: {s}");
    }
    for ratio in ["pythia_vs_raw", "pythia_cpu_vs_raw", "pythia_rss_vs_raw"] {
        assert!(f(&report["ratios"], ratio) > 0.0, "{ratio}: {report}");
    }
    let expected =
        f(&report["sides"]["pythia"], "msgs_per_s") / f(&report["sides"]["raw"], "msgs_per_s");
    let ratio = f(&report["ratios"], "pythia_vs_raw");
    assert!((ratio - expected).abs() < 0.01, "{ratio} vs {expected}");
    assert!(
        !stderr.contains("could not delete"),
        "queues left behind: {stderr}"
    );
    (report, pid)
}

/// The keys a bench with `pid` left on Redis.
fn keys_left(pid: u32) -> String {
    redis(&["KEYS", &format!("pythia-bench-{pid}-*")])
}

#[test]
fn redis_list_bench_has_both_sides_and_leaves_no_key() {
    require_redis();
    let (report, pid) = bench("redis-list", &[], "redis://127.0.0.1:6379/0");
    assert_eq!(report["sides"]["raw"]["consumer"]["prefetch"], "1");
    assert_eq!(report["sides"]["pythia"]["consumer"]["prefetch"], "10");
    assert_eq!(keys_left(pid), "*0\r\n", "keys of the bench left on Redis");
}

#[test]
fn redis_streams_bench_has_both_sides_and_leaves_no_key() {
    require_redis();
    let (report, pid) = bench("redis-streams", &[], "redis://127.0.0.1:6379/0");
    for side in ["raw", "pythia"] {
        assert_eq!(
            report["sides"][side]["consumer"]["prefetch"], "10",
            "{side}"
        );
    }
    assert_eq!(keys_left(pid), "*0\r\n", "keys of the bench left on Redis");
}

#[test]
fn nats_bench_has_both_sides_and_leaves_no_stream() {
    require_nats();
    let (report, pid) = bench("nats", &[], "nats://127.0.0.1:4222");
    for side in ["raw", "pythia"] {
        let prefetch = &report["sides"][side]["consumer"]["prefetch"];
        assert_eq!(prefetch, "10", "{side}");
    }
    let names = nats_stream_names();
    assert!(names.contains("stream_names_response"), "{names}");
    assert!(
        !names.contains(&format!("pythia-bench-{pid}-")),
        "streams of the bench left on NATS: {names}"
    );
}

/// A Redis user of this test, deleted when dropped.
struct RedisUser(String);

impl Drop for RedisUser {
    fn drop(&mut self) {
        redis(&["ACL", "DELUSER", &self.0]);
    }
}

#[test]
fn a_redis_password_in_the_url_never_shows() {
    require_redis();
    // A user with a password, for this test only (the server needs none).
    let user = RedisUser(format!("pythia-bench-test-{}", std::process::id()));
    let created = redis(&[
        "ACL",
        "SETUSER",
        &user.0,
        "on",
        ">s3cret-pw",
        "~*",
        "&*",
        "+@all",
    ]);
    assert_eq!(created, "+OK\r\n", "ACL SETUSER (Redis 6 or later)");
    let url = format!("redis://{}:s3cret-pw@127.0.0.1:6379/0", user.0);
    let redacted = format!("redis://{}:***@127.0.0.1:6379/0", user.0);
    let (report, _) = bench("redis-list", &[("PYTHIA_REDIS__URL", &url)], &redacted);
    assert!(!report.to_string().contains(SECRET), "{report}");

    // A refused password does not show in the error either.
    let output = Command::new(PYTHIA)
        .args(["bench", "--broker", "redis-streams", "--messages", "1000"])
        .env("RUST_LOG", "warn")
        .env(
            "PYTHIA_REDIS__URL",
            format!("redis://{}:s3cret-wrong@127.0.0.1:6379/0", user.0),
        )
        .output()
        .expect("run pythia bench");
    assert!(!output.status.success());
    let all = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(!all.contains(SECRET), "the password shows: {all}");
    assert!(all.contains(":***@127.0.0.1"), "{all}");
}

#[test]
fn a_nats_password_in_the_url_never_shows() {
    require_nats();
    // A server without authorization takes any user and password, so the
    // URL's reach both sides and every line they print.
    let url = "nats://bench:s3cret-nats@127.0.0.1:4222";
    let (report, _) = bench(
        "nats",
        &[("PYTHIA_NATS__URL", url)],
        "nats://bench:***@127.0.0.1:4222",
    );
    assert!(!report.to_string().contains(SECRET), "{report}");
}

#[test]
fn kafka_flags_are_refused_with_the_queues_and_queue_flags_with_kafka() {
    let output = Command::new(PYTHIA)
        .args(["bench", "--broker", "nats", "--in-process"])
        .output()
        .expect("run pythia bench");
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("--in-process"), "{stderr}");
    assert!(stderr.contains("--broker kafka"), "{stderr}");

    let output = Command::new(PYTHIA)
        .args(["bench", "--url", "redis://127.0.0.1:6379/0"])
        .output()
        .expect("run pythia bench");
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("--url"), "{stderr}");
    assert!(stderr.contains("redis-list"), "{stderr}");
}
