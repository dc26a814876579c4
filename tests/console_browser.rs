//! `pythia console` in a real browser: headless Chromium driven by
//! Playwright (`tests/console/console.test.mjs`) against an embedded broker,
//! two workers stalled on purpose, and poison messages. The page shows both
//! instances with their partitions and their stall, lag equal to
//! `pythia lag --json`, the dead letters with their reasons; replaying one
//! from the page puts it back on the input topic, confirmed here by reading
//! the topic. A console without `--allow-replay` refuses to replay, and one
//! with a replay token refuses a request without it.
//!
//! Needs `node`, Chromium (`/usr/bin/chromium`, or `CHROMIUM`) and the npm
//! package `playwright-core` in `tests/console/node_modules`: `cargo xtask
//! prerequisites` installs them.

use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use pythia_kafka::EmbeddedBroker;
use pythia_tests::*;

const GROUP: &str = "billing";
const TOPIC: &str = "orders";
const DLQ: &str = "orders.dlq";
const PARTITIONS: i32 = 4;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ has a parent")
        .to_owned()
}

/// The `pythia` CLI beside the test executables; built when missing.
fn pythia_bin() -> PathBuf {
    let exe = std::env::current_exe().expect("current exe");
    let profile_dir = exe
        .parent()
        .and_then(|deps| deps.parent())
        .expect("test binary lives in target/<profile>/deps");
    let bin = profile_dir.join("pythia");
    if !bin.exists() {
        let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
        let mut build = Command::new(cargo);
        build.args(["build", "-p", "pythia-cli", "--bin", "pythia"]);
        if profile_dir.file_name().is_some_and(|p| p == "release") {
            build.arg("--release");
        }
        assert!(
            build.status().expect("run cargo build").success(),
            "building the pythia CLI failed"
        );
    }
    bin
}

/// What the browser test needs, or a message naming what is missing.
fn browser_prerequisites() -> PathBuf {
    let chromium = std::env::var_os("CHROMIUM")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/usr/bin/chromium"));
    let node = Command::new("node").arg("--version").output();
    let package = repo().join("tests/console/node_modules/playwright-core/package.json");
    let mut missing = Vec::new();
    if !node.is_ok_and(|o| o.status.success()) {
        missing.push("`node` (Debian package `nodejs`)");
    }
    if !chromium.exists() {
        missing.push("Chromium at /usr/bin/chromium or $CHROMIUM (Debian package `chromium`)");
    }
    if !package.exists() {
        missing.push("the npm package `playwright-core` in tests/console (`npm ci` there)");
    }
    assert!(
        missing.is_empty(),
        "the console browser test needs {}; `cargo xtask prerequisites` installs them",
        missing.join(", ")
    );
    chromium
}

/// A child process killed (and reaped) when dropped.
struct Process(Child);

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts `pythia console` and returns it with its URL.
fn console(bootstrap: &str, instances: &[String], extra: &[&str], log: &Path) -> (Process, String) {
    let mut command = Command::new(pythia_bin());
    command.args(["console", "--brokers", bootstrap, "--serve", "127.0.0.1:0"]);
    for instance in instances {
        command.args(["--instance", instance]);
    }
    let mut child = command
        .args(extra)
        .env("RUST_LOG", "info,librdkafka=warn,rdkafka=warn")
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(log).expect("console log"))
        .spawn()
        .expect("spawn pythia console");
    let mut line = String::new();
    BufReader::new(child.stdout.take().expect("stdout"))
        .read_line(&mut line)
        .expect("first line");
    let url = line
        .trim()
        .strip_prefix("serving=")
        .unwrap_or_else(|| panic!("first line is not serving=...: {line:?}"))
        .to_owned();
    (Process(child), url)
}

fn post(url: &str, path: &str, body: &str) -> (u16, String) {
    let address = url.trim_start_matches("http://");
    let mut stream = std::net::TcpStream::connect(address).expect("connect");
    write!(
        stream,
        "POST {path} HTTP/1.1\r\nHost: {address}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    let code = response[9..12].parse().expect("status");
    (code, response.split_once("\r\n\r\n").unwrap().1.to_owned())
}

#[test]
fn console_shows_instances_lag_and_dead_letters_and_replays_from_the_browser() {
    let chromium = browser_prerequisites();
    let dir = scratch("console-browser");
    let shots = repo().join("target/console-screenshots");
    std::fs::create_dir_all(&shots).expect("screenshot dir");
    let broker = EmbeddedBroker::with_topics([(TOPIC, PARTITIONS), (DLQ, 1)]).expect("broker");
    let bootstrap = broker.bootstrap_servers().to_owned();

    // Two JSON workers whose handlers wait on a gate that never opens: what
    // decodes stays in flight (stable lag, and both instances stall); what
    // does not decode is dead-lettered before the handler.
    let gate = dir.join("gate-never-opens");
    let workers: Vec<Worker> = (0..2)
        .map(|i| {
            WorkerSpec::new(&bootstrap, GROUP, TOPIC)
                .env("TEST_CODEC", "json")
                .env("TEST_GATE_FILE", gate.display())
                .env("PYTHIA_WORKER__INSTANCE", i)
                .env("PYTHIA_METRICS__ADDRESS", "127.0.0.1:0")
                .env("PYTHIA_METRICS__LAG_INTERVAL", "500ms")
                .env("PYTHIA_HEALTH__STALL_TIMEOUT", "2s")
                .spawn(&dir, &format!("worker-{i}"))
        })
        .collect();
    let instances: Vec<String> = workers
        .iter()
        .map(|w| w.metrics_address(Duration::from_secs(60)))
        .collect();
    wait_until(
        Duration::from_secs(60),
        "both workers ready with partitions",
        || {
            instances.iter().all(|address| {
                matches!(http_get(address, "/status"), Ok((200, body))
                if body.contains(r#""ready":true"#) && body.contains(r#""partition""#))
            })
        },
    );

    // Poison first (one per partition 0..3), then valid orders that stay in flight.
    let poison: Vec<(i32, Option<Vec<u8>>)> = (0..3)
        .map(|p| (p, Some(format!("not json #{p}").into_bytes())))
        .collect();
    produce_records(&bootstrap, TOPIC, &poison);
    wait_until(Duration::from_secs(60), "three dead letters", || {
        high_watermarks(&bootstrap, DLQ, 1) == [3]
    });
    produce(&bootstrap, TOPIC, PARTITIONS, 0..40);
    // Committed offsets settle past the poison: lag is the 40 orders.
    let lag_json = || -> serde_json::Value {
        let out = Command::new(pythia_bin())
            .args(["lag", "--json", "--brokers", &bootstrap, "--group", GROUP])
            .env("RUST_LOG", "warn")
            .output()
            .expect("pythia lag");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).expect("lag JSON")
    };
    wait_until(Duration::from_secs(60), "lag of the 40 orders only", || {
        lag_json()["lag"] == 40
    });
    let lag = lag_json();
    assert_eq!(lag["partitions"].as_array().map(Vec::len), Some(4), "{lag}");

    let (console_process, url) = console(
        &bootstrap,
        &instances,
        &["--allow-replay"],
        &dir.join("console.log"),
    );
    let expected = serde_json::json!({
        "lag": lag,
        "clients": ["billing-0", "billing-1"],
        "dead_letters": 3,
    });
    let script = repo().join("tests/console/console.test.mjs");
    let out = Command::new("node")
        .arg(&script)
        .current_dir(repo().join("tests/console"))
        .env("CONSOLE_URL", &url)
        .env("EXPECTED", expected.to_string())
        .env("SCREENSHOTS", &shots)
        .env("CHROMIUM", &chromium)
        .output()
        .expect("run node");
    assert!(
        out.status.success(),
        "the browser test failed:\n{}\n{}\nconsole log:\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
        std::fs::read_to_string(dir.join("console.log")).unwrap_or_default()
    );
    let result: serde_json::Value = serde_json::from_slice(
        out.stdout
            .split(|b| *b == b'\n')
            .rfind(|l| l.starts_with(b"{"))
            .expect("a JSON line from the browser test"),
    )
    .expect("JSON");
    let replayed = result["replayed"].as_array().expect("the replayed letters");
    assert_eq!(replayed.len(), 2, "{result}");

    // The replayed dead letters are back on the input topic: each payload
    // twice (the original and the replay), the copy without pythia.dlq.*
    // headers.
    let on_topic = consume_all(&bootstrap, TOPIC, PARTITIONS, 45, Duration::from_secs(30));
    for letter in replayed {
        let payload = letter["payload"].as_str().expect("payload");
        let copies: Vec<&Consumed> = on_topic
            .iter()
            .filter(|m| m.payload.as_deref() == Some(payload.as_bytes()))
            .collect();
        assert_eq!(copies.len(), 2, "{payload} on {TOPIC}: {copies:?}");
        assert!(
            copies
                .iter()
                .all(|c| c.headers.iter().all(|(k, _)| !k.starts_with("pythia.dlq.")))
        );
    }
    // The one not chosen is there once.
    assert_eq!(
        on_topic
            .iter()
            .filter(|m| m
                .payload
                .as_deref()
                .is_some_and(|p| p.starts_with(b"not json")))
            .count(),
        5
    );
    // Each replay left an audit line.
    let log = std::fs::read_to_string(dir.join("console.log")).unwrap_or_default();
    for letter in replayed {
        let messages = format!("messages={}@{}", letter["partition"], letter["offset"]);
        assert!(
            log.lines().any(|l| l.contains("pythia::audit")
                && l.contains("dead letters replayed")
                && l.contains(&messages)),
            "no audit line with {messages} in:\n{log}"
        );
    }
    drop(console_process);

    // Read-only unless asked: the API refuses to replay.
    let (read_only, url) = console(&bootstrap, &instances, &[], &dir.join("console-ro.log"));
    let (code, body) = post(
        &url,
        "/api/dlq/replay",
        r#"{"topic":"orders.dlq","messages":[{"partition":0,"offset":0}]}"#,
    );
    assert_eq!(code, 403, "{body}");
    assert!(body.contains("--allow-replay"), "{body}");
    drop(read_only);

    // With a token file, a replay without the token is refused.
    let token = dir.join("replay-token");
    std::fs::write(&token, "s3cret-token\n").expect("token file");
    let (guarded, url) = console(
        &bootstrap,
        &instances,
        &[
            "--allow-replay",
            "--replay-token-file",
            &token.display().to_string(),
        ],
        &dir.join("console-token.log"),
    );
    let (code, body) = post(
        &url,
        "/api/dlq/replay",
        r#"{"topic":"orders.dlq","messages":[{"partition":0,"offset":0}]}"#,
    );
    assert_eq!(code, 401, "{body}");
    assert!(body.contains("x-pythia-token"), "{body}");
    drop(guarded);
    drop(workers);
}
