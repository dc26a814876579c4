//! A worker whose metrics server cannot start exits non-zero and says why:
//! a bad address names the key, a taken port names the address. What a
//! worker tells about itself: its message spans in JSON logs, and which copy
//! of the worker it is, in its metrics, its logs and its `Context`.

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

/// The value of label `label` in the first `name{...}` series of `text`.
fn label_of(text: &str, name: &str, label: &str) -> Option<String> {
    let line = text.lines().find(|l| l.starts_with(&format!("{name}{{")))?;
    let at = line.find(&format!("{label}=\""))? + label.len() + 2;
    Some(line[at..].split('"').next()?.to_owned())
}

#[test]
fn two_copies_of_a_worker_in_one_group_tell_themselves_apart() {
    const TOPIC: &str = "copies";
    let dir = scratch("copies");
    let broker = broker(TOPIC, 2);
    let bootstrap = broker.bootstrap_servers();
    let spec = WorkerSpec::new(bootstrap, "copies", TOPIC)
        .env("PYTHIA_METRICS__ADDRESS", "127.0.0.1:0")
        .env("TEST_RECORD_IDENTITY", 1)
        // The harness's filter sometimes loses a worker's first events (see
        // poison_oversize.rs); plain `info` keeps the start line.
        .env("RUST_LOG", "info");
    let a = spec.spawn(&dir, "a");
    let b = spec.spawn(&dir, "b");
    wait_until(
        std::time::Duration::from_secs(60),
        "both workers to hold a partition",
        || !a.assigned().is_empty() && !b.assigned().is_empty(),
    );
    produce(bootstrap, TOPIC, 2, 0..20);
    // What each worker's Context said: `identity <pid> <instance> <member_id>`.
    let identity = |worker: &Worker| {
        let text = std::fs::read_to_string(&worker.record).unwrap_or_default();
        let line = text
            .lines()
            .rfind(|l| l.starts_with("identity "))?
            .to_owned();
        let fields: Vec<String> = line.split(' ').map(str::to_owned).collect();
        (fields.len() == 4).then_some(fields)
    };
    wait_until(
        std::time::Duration::from_secs(60),
        "both workers to process messages",
        || identity(&a).is_some() && identity(&b).is_some(),
    );

    let mut instances = Vec::new();
    let mut members = Vec::new();
    for worker in [&a, &b] {
        let address = worker.metrics_address(std::time::Duration::from_secs(30));
        let (status, metrics) = http_get(&address, "/metrics").expect("scrape");
        assert_eq!(status, 200);
        let instance = label_of(&metrics, "pythia_worker_info", "instance_name")
            .unwrap_or_else(|| panic!("no pythia_worker_info: {metrics}"));
        assert!(
            instance.ends_with(&format!("-{}", worker.pid())),
            "the default is <host>-<pid>: {instance}"
        );
        assert_eq!(
            label_of(&metrics, "pythia_worker_info", "worker").as_deref(),
            Some("copies")
        );
        assert!(
            !metrics.contains("instance=\""),
            "no label clashes with Prometheus' own `instance`"
        );

        let log = worker.log_text();
        let started = log
            .lines()
            .find(|l| l.contains("worker started"))
            .expect("a start line");
        assert!(
            started.contains(&format!("instance={instance}")),
            "{started}"
        );

        let [_, pid, context_instance, member] = identity(worker).unwrap().try_into().unwrap();
        assert_eq!(pid, worker.pid().to_string());
        assert_eq!(context_instance, instance, "Context::instance");
        assert_ne!(member, "-", "Context::member_id is known once assigned");
        assert!(
            log.lines()
                .any(|l| l.contains("partitions assigned")
                    && l.contains(&format!("member_id={member}"))),
            "the assignment is logged with the member id {member}: {log}"
        );
        instances.push(instance);
        members.push(member);
    }
    assert_ne!(instances[0], instances[1]);
    assert_ne!(members[0], members[1]);
}
