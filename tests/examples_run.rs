//! Every example runs on the embedded broker and its summary line shows every
//! message processed and routed as its rules imply. The expected counts are
//! computed here from the rules each example documents.

use std::time::Duration;

use pythia_tests::{example_bin, run_example, scratch, spawn_example, summary_value};

const LIMIT: Duration = Duration::from_secs(180);

/// The summary line: the last line of stdout starting with `produced=`.
fn summary(stdout: &str) -> &str {
    stdout
        .lines()
        .rev()
        .find(|l| l.starts_with("produced="))
        .unwrap_or_else(|| panic!("no summary line in:\n{stdout}"))
}

fn value(line: &str, key: &str) -> i64 {
    summary_value(line, key).unwrap_or_else(|| panic!("no `{key}=` in `{line}`"))
}

#[test]
fn quickstart_processes_every_order_with_two_instances() {
    let stdout = run_example("quickstart", &[], LIMIT);
    let line = summary(&stdout);
    assert_eq!(value(line, "produced"), 10_000, "{line}");
    assert_eq!(value(line, "processed"), 10_000, "{line}");
    // Each instance got a share of the partitions and processed some orders.
    let shares = line
        .split("per_instance=[")
        .nth(1)
        .and_then(|rest| rest.split(']').next())
        .unwrap_or_else(|| panic!("no per_instance in `{line}`"));
    let shares: Vec<i64> = shares.split(',').map(|n| n.parse().unwrap()).collect();
    assert_eq!(shares.len(), 2, "{line}");
    assert!(shares.iter().all(|n| *n > 0), "{line}");
    assert_eq!(shares.iter().sum::<i64>(), 10_000, "{line}");
    // Amounts are 100 + id % 900 cents for ids 1..=10000.
    let revenue: i64 = (1..=10_000).map(|id| 100 + id % 900).sum();
    assert_eq!(value(line, "revenue_cents"), revenue, "{line}");
}

#[test]
fn fan_out_routes_each_output_to_its_sink() {
    let stdout = run_example("fan_out", &[], LIMIT);
    let line = summary(&stdout);
    // Order `id` has 1 + id % 3 items and is free (no invoice) when id % 10 == 0.
    let orders = 2_000i64;
    let items: i64 = (1..=orders).map(|id| 1 + id % 3).sum();
    let invoices = (1..=orders).filter(|id| id % 10 != 0).count() as i64;
    assert_eq!(value(line, "produced"), orders, "{line}");
    assert_eq!(value(line, "processed"), orders, "{line}");
    let routed = line
        .split(" routed ")
        .nth(1)
        .unwrap_or_else(|| panic!("no routed counts in `{line}`"));
    assert_eq!(value(routed, "orders"), orders, "{line}");
    assert_eq!(value(routed, "inventory"), items, "{line}");
    assert_eq!(value(routed, "billing"), invoices, "{line}");
}

#[test]
fn multi_topic_consumes_every_topic() {
    let stdout = run_example("multi_topic", &[], LIMIT);
    let line = summary(&stdout);
    assert_eq!(value(line, "produced"), 4_750, "{line}");
    assert_eq!(value(line, "processed"), 4_750, "{line}");
    assert_eq!(value(line, "page.views"), 3_000, "{line}");
    assert_eq!(value(line, "page.clicks"), 1_500, "{line}");
    assert_eq!(value(line, "purchases"), 250, "{line}");
}

#[test]
fn order_pipeline_in_one_process_ends_every_line_in_one_place() {
    let stdout = run_example("order_pipeline", &[], LIMIT);
    let line = summary(&stdout);
    // Line `id`: malformed when id % 50 == 0, rejected when id % 20 == 0, else stored.
    let lines = 5_000i64;
    let malformed = (1..=lines).filter(|id| id % 50 == 0).count() as i64;
    let rejected = (1..=lines)
        .filter(|id| id % 20 == 0 && id % 50 != 0)
        .count() as i64;
    assert_eq!(value(line, "produced"), lines, "{line}");
    assert_eq!(value(line, "processed"), lines, "{line}");
    assert_eq!(value(line, "malformed"), malformed, "{line}");
    assert_eq!(value(line, "rejected"), rejected, "{line}");
    assert_eq!(
        value(line, "stored"),
        lines - malformed - rejected,
        "{line}"
    );
    // Each stage saw what the previous one let through.
    assert!(line.contains(&format!("ingest:{lines}")), "{line}");
    assert!(
        line.contains(&format!("validate:{}", lines - malformed)),
        "{line}"
    );
    assert!(
        line.contains(&format!("store:{}", lines - malformed - rejected)),
        "{line}"
    );
}

#[test]
fn cpu_heavy_processes_every_image_on_the_pool() {
    let stdout = run_example("cpu_heavy", &[], LIMIT);
    let line = summary(&stdout);
    assert_eq!(value(line, "produced"), 4_000, "{line}");
    assert_eq!(value(line, "processed"), 4_000, "{line}");
    assert_eq!(value(line, "mismatched"), 0, "{line}");
}

#[test]
fn rabbitmq_to_kafka_produces_every_job_and_dead_letters_the_malformed_one_to_kafka() {
    // Its own queue on the machine's RabbitMQ, deleted afterwards; Kafka is
    // the example's embedded broker.
    let queue = format!("pythia-example-to-kafka-{}", std::process::id());
    let run = std::panic::catch_unwind(|| {
        run_example(
            "rabbitmq_to_kafka",
            &[("PYTHIA_RABBITMQ__QUEUE", &queue)],
            LIMIT,
        )
    });
    let _ = std::process::Command::new("rabbitmqctl")
        .args(["delete_queue", &queue])
        .output();
    let stdout = run.unwrap_or_else(|panic| std::panic::resume_unwind(panic));
    let line = stdout
        .lines()
        .rev()
        .find(|l| l.starts_with("enqueued="))
        .unwrap_or_else(|| panic!("no summary line in:\n{stdout}"));
    // 1,000 jobs and one that is not JSON, dead-lettered to Kafka.
    assert_eq!(value(line, "enqueued"), 1_001, "{line}");
    assert_eq!(value(line, "processed"), 1_000, "{line}");
    assert_eq!(value(line, "results"), 1_000, "{line}");
    assert_eq!(value(line, "dead_letters"), 1, "{line}");
}

#[test]
fn rabbitmq_jobs_writes_each_job_once_across_two_instances() {
    // Its own queue on the machine's RabbitMQ (the example fails, naming
    // the broker, when RabbitMQ does not answer); deleted afterwards.
    let queue = format!("pythia-example-jobs-{}", std::process::id());
    let run = std::panic::catch_unwind(|| {
        run_example(
            "rabbitmq_jobs",
            &[("PYTHIA_RABBITMQ__QUEUE", &queue)],
            LIMIT,
        )
    });
    for name in [queue.clone(), format!("{queue}.dlq")] {
        let _ = std::process::Command::new("rabbitmqctl")
            .args(["delete_queue", &name])
            .output();
    }
    let stdout = run.unwrap_or_else(|panic| std::panic::resume_unwind(panic));
    let line = stdout
        .lines()
        .rev()
        .find(|l| l.starts_with("enqueued="))
        .unwrap_or_else(|| panic!("no summary line in:\n{stdout}"));
    // 2,000 jobs, every 100th enqueued twice: 20 duplicates, written once.
    assert_eq!(value(line, "enqueued"), 2_020, "{line}");
    assert_eq!(value(line, "processed"), 2_020, "{line}");
    assert_eq!(value(line, "documents"), 2_000, "{line}");
    assert_eq!(value(line, "duplicates"), 20, "{line}");
    assert_eq!(value(line, "stale"), 0, "{line}");
    let shares = line
        .split("per_instance=[")
        .nth(1)
        .and_then(|rest| rest.split(']').next())
        .unwrap_or_else(|| panic!("no per_instance in `{line}`"));
    let shares: Vec<i64> = shares.split(',').map(|n| n.parse().unwrap()).collect();
    assert_eq!(shares.len(), 2, "{line}");
    assert!(
        shares.iter().all(|n| *n > 0),
        "both instances worked: {line}"
    );
}

/// `rabbitmq_jobs <args>` with `env`, to its end; its stdout.
fn jobs_command(args: &[&str], env: &[(&str, &str)]) -> String {
    let out = std::process::Command::new(example_bin("rabbitmq_jobs"))
        .args(args)
        .envs(env.iter().copied())
        .env("RUST_LOG", "warn")
        .output()
        .expect("run rabbitmq_jobs");
    assert!(
        out.status.success(),
        "rabbitmq_jobs {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Consumers of `queue`, from the broker's own tool (0 while it is missing).
fn consumers(queue: &str) -> i64 {
    let out = std::process::Command::new("rabbitmqctl")
        .args([
            "list_queues",
            "name",
            "consumers",
            "-q",
            "--no-table-headers",
        ])
        .output()
        .expect("rabbitmqctl runs (the tests need the broker's own tools)");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .find_map(|line| {
            let mut words = line.split_whitespace();
            (words.next() == Some(queue)).then(|| words.next()?.parse().ok())?
        })
        .unwrap_or(0)
}

#[test]
fn rabbitmq_jobs_as_processes_share_the_queue_and_write_each_job_once() {
    // The compose layout: two worker processes, a one-shot enqueue, a report
    // from Redis; a queue and a Redis namespace of its own, deleted at the end.
    let queue = format!("pythia-example-jobq-{}", std::process::id());
    let namespace = format!("pythia-example:jobs-processes:{}", std::process::id());
    let env = [
        ("PYTHIA_RABBITMQ__QUEUE", queue.as_str()),
        ("JOBS_NAMESPACE", namespace.as_str()),
    ];
    let dir = scratch("rabbitmq_jobs_processes");
    let mut workers: Vec<_> = (0..2)
        .map(|i| spawn_example(&dir, &format!("w{i}"), "rabbitmq_jobs", &["worker"], &env))
        .collect();
    let run = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        while consumers(&queue) < 2 {
            assert!(
                std::time::Instant::now() < deadline,
                "two workers consuming {queue}:\n{}\n{}",
                workers[0].log_text(),
                workers[1].log_text()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        let enqueued = jobs_command(&["enqueue", "1000"], &env);
        assert_eq!(
            summary_value(&enqueued, "enqueued"),
            Some(1010),
            "{enqueued}"
        );
        let deadline = std::time::Instant::now() + Duration::from_secs(120);
        let report = loop {
            let report = jobs_command(&["report"], &env);
            if summary_value(&report, "processed") == Some(1010) {
                break report;
            }
            assert!(std::time::Instant::now() < deadline, "{report}");
            std::thread::sleep(Duration::from_millis(200));
        };
        // Every 100th job went in twice: written once, counted a duplicate.
        assert_eq!(summary_value(&report, "documents"), Some(1000), "{report}");
        assert_eq!(summary_value(&report, "duplicates"), Some(10), "{report}");
        let mut shares = Vec::new();
        for (i, worker) in workers.iter_mut().enumerate() {
            worker.terminate();
            assert!(
                worker.wait(Duration::from_secs(30)).success(),
                "{}",
                worker.log_text()
            );
            let out = std::fs::read_to_string(dir.join(format!("w{i}.out"))).unwrap_or_default();
            shares.push(summary_value(&out, "processed").unwrap_or_else(|| panic!("w{i}: {out}")));
        }
        assert_eq!(shares.iter().sum::<i64>(), 1010, "{shares:?}");
        assert!(
            shares.iter().all(|&n| n > 0),
            "both workers worked: {shares:?}"
        );
    }));
    let _ = jobs_command(&["clear"], &env);
    for name in [queue.clone(), format!("{queue}.dlq")] {
        let _ = std::process::Command::new("rabbitmqctl")
            .args(["delete_queue", &name])
            .output();
    }
    if let Err(panic) = run {
        std::panic::resume_unwind(panic);
    }
}

/// The last line of stdout starting with `first`.
fn line_starting<'a>(stdout: &'a str, first: &str) -> &'a str {
    stdout
        .lines()
        .rev()
        .find(|l| l.starts_with(first))
        .unwrap_or_else(|| panic!("no `{first}` line in:\n{stdout}"))
}

#[test]
fn redis_strategy_runs_does_each_run_once_across_two_instances() {
    // Lists of its own on the machine's Redis, deleted by the example.
    let stdout = run_example("redis_strategy_runs", &[], LIMIT);
    let line = line_starting(&stdout, "enqueued=");
    assert_eq!(value(line, "enqueued"), 1_000, "{line}");
    assert_eq!(value(line, "results"), 1_000, "{line}");
    assert_eq!(value(line, "distinct"), 1_000, "{line}");
    assert_eq!(value(line, "waiting"), 0, "{line}");
    let shares = line
        .split("per_instance=[")
        .nth(1)
        .and_then(|rest| rest.split(']').next())
        .unwrap_or_else(|| panic!("no per_instance in `{line}`"));
    let shares: Vec<i64> = shares.split(',').map(|n| n.parse().unwrap()).collect();
    assert_eq!(shares.len(), 2, "{line}");
    assert!(shares.iter().all(|n| *n > 0), "both instances ran: {line}");
    assert_eq!(shares.iter().sum::<i64>(), 1_000, "{line}");
}

#[test]
fn nats_job_queues_keeps_each_pool_within_its_concurrency() {
    // Streams of its own on the machine's NATS, deleted by the example.
    let stdout = run_example("nats_job_queues", &[], LIMIT);
    for (queue, concurrency) in [("general", 4), ("cpu", 2), ("io", 8)] {
        let line = stdout
            .lines()
            .find(|l| l.starts_with(&format!("queue={queue} ")))
            .unwrap_or_else(|| panic!("no line for queue {queue} in:\n{stdout}"));
        assert_eq!(value(line, "concurrency"), concurrency, "{line}");
        assert_eq!(value(line, "processed"), 200, "{line}");
        let peak = value(line, "peak_in_flight");
        assert!(
            (1..=concurrency).contains(&peak),
            "queue {queue} ran {peak} jobs at once, its concurrency is {concurrency}: {line}"
        );
    }
    // The I/O pool, whose jobs wait, fills its 8 slots.
    let io = stdout.lines().find(|l| l.starts_with("queue=io ")).unwrap();
    assert!(value(io, "peak_in_flight") > 4, "{io}");
}
