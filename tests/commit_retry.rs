//! Offset commits the group refuses: a worker process on the classic
//! protocol, reaching the embedded broker by address, while the broker
//! refuses OffsetCommit requests. Counted from outside: the group's
//! committed offsets as a fresh client reads them, the worker's exit status,
//! its metrics and its log.

use std::time::{Duration, Instant};

use pythia_tests::pythia_kafka::EmbeddedBroker;
use pythia_tests::*;
use rdkafka::types::RDKafkaRespErr;

const PARTITIONS: i32 = 4;
/// Kafka's API key of OffsetCommit.
const OFFSET_COMMIT: i16 = 8;
const REFUSED: RDKafkaRespErr = RDKafkaRespErr::RD_KAFKA_RESP_ERR_REBALANCE_IN_PROGRESS;

/// A classic-protocol worker on `topic`, committing every 200 ms.
fn classic_worker(bootstrap: &str, group: &str, dir: &std::path::Path) -> Worker {
    WorkerSpec::new(bootstrap, group, "work")
        .env("PYTHIA_KAFKA__GROUP_PROTOCOL", "classic")
        .env("PYTHIA_KAFKA__SESSION_TIMEOUT", "6s")
        .env("PYTHIA_KAFKA__COMMIT_INTERVAL", "200ms")
        .env("PYTHIA_WORKER__SHUTDOWN_TIMEOUT", "5s")
        .env("PYTHIA_METRICS__ADDRESS", "127.0.0.1:0")
        .spawn(dir, group)
}

fn all_committed(bootstrap: &str, group: &str) -> bool {
    let highs = high_watermarks(bootstrap, "work", PARTITIONS);
    committed(bootstrap, group, "work", PARTITIONS)
        .iter()
        .zip(&highs)
        .all(|(c, h)| *c == Some(*h))
}

/// Starts the broker and a worker, and waits until it processed and
/// committed a first batch: the group is stable from here on.
fn settled(group: &str) -> (EmbeddedBroker, String, Worker) {
    let dir = scratch(group);
    let broker = broker("work", PARTITIONS);
    let bootstrap = broker.bootstrap_servers().to_owned();
    produce(&bootstrap, "work", PARTITIONS, 0..200);
    let worker = classic_worker(&bootstrap, group, &dir);
    wait_until(Duration::from_secs(60), "the first 200 processed", || {
        worker.records().unique() == 200
    });
    wait_until(Duration::from_secs(30), "the first 200 committed", || {
        all_committed(&bootstrap, group)
    });
    (broker, bootstrap, worker)
}

#[test]
fn a_refused_commit_is_sent_again_until_the_broker_accepts_it() {
    let (broker, bootstrap, mut worker) = settled("refused");
    let address = worker.metrics_address(Duration::from_secs(10));
    let (_, before) = http_get(&address, "/metrics").expect("metrics");

    // The next five commits are refused. Everything after this is processed
    // within a few commit intervals, so without retries the partitions would
    // have finished and never be committed again.
    broker.fail_requests(OFFSET_COMMIT, &[REFUSED; 5]);
    produce(&bootstrap, "work", PARTITIONS, 200..400);
    wait_until(Duration::from_secs(30), "all 400 processed", || {
        worker.records().unique() == 400
    });
    let finished = Instant::now();
    wait_until(
        Duration::from_secs(15),
        "everything committed despite the refusals",
        || all_committed(&bootstrap, "refused"),
    );
    eprintln!("committed {:?} after the last message", finished.elapsed());

    assert_eq!(
        sample(
            &before,
            "pythia_commit_failures_total",
            &[("group", "refused")]
        ),
        Some(0.0),
        "the failure counter is exported before the first failure"
    );
    let (_, text) = http_get(&address, "/metrics").expect("metrics");
    let failures = sample(
        &text,
        "pythia_commit_failures_total",
        &[("group", "refused")],
    )
    .unwrap_or(0.0);
    assert!(failures >= 1.0, "refusals are counted: {failures}");
    let log = worker.log_text();
    let logged = log
        .lines()
        .filter(|l| l.contains("offset commit failed; will retry"))
        .count();
    assert!(
        logged >= 1 && (logged as f64) < failures.max(2.0),
        "a run of refusals is logged once, not per refusal: {logged} lines for {failures} failures\n{log}"
    );
    assert!(
        log.contains("RebalanceInProgress"),
        "the log names the code"
    );

    worker.terminate();
    assert!(worker.wait(Duration::from_secs(20)).success());
}

#[test]
fn an_idle_member_leaves_cleanly_while_commits_are_refused() {
    let (broker, bootstrap, mut worker) = settled("idle");
    // Everything is committed: the final commit has nothing to send, so
    // refusals cannot fail it.
    broker.fail_requests(OFFSET_COMMIT, &[REFUSED; 500]);
    let stopping = Instant::now();
    worker.terminate();
    let status = worker.wait(Duration::from_secs(20));
    broker.clear_request_errors(OFFSET_COMMIT);
    assert!(
        status.success(),
        "an idle member exits 0 ({status}) after {:?}:\n{}",
        stopping.elapsed(),
        worker.log_text()
    );
    assert!(all_committed(&bootstrap, "idle"));
}

#[test]
fn a_final_commit_refused_to_the_end_is_bounded_and_names_what_is_left() {
    let (broker, bootstrap, mut worker) = settled("final");
    broker.fail_requests(OFFSET_COMMIT, &[REFUSED; 5000]);
    produce(&bootstrap, "work", PARTITIONS, 200..400);
    wait_until(Duration::from_secs(30), "all 400 processed", || {
        worker.records().unique() == 400
    });
    let stopping = Instant::now();
    worker.terminate();
    let status = worker.wait(Duration::from_secs(30));
    let took = stopping.elapsed();
    broker.clear_request_errors(OFFSET_COMMIT);
    let log = worker.log_text();
    assert!(!status.success(), "nothing could be committed: {status}");
    assert!(
        took < Duration::from_secs(9),
        "bounded by shutdown_timeout (5 s) plus leaving: {took:?}"
    );
    assert!(
        log.contains("not committed: work/"),
        "the log says which partitions and offsets are left:\n{log}"
    );
    // The next member starts where the last accepted commit left off:
    // nothing is lost, the refused part is processed again.
    assert!(!all_committed(&bootstrap, "final"));
    let dir = scratch("final-next");
    let mut next = classic_worker(&bootstrap, "final", &dir);
    wait_until(Duration::from_secs(60), "the rest committed", || {
        all_committed(&bootstrap, "final")
    });
    let mut ids: Vec<(i32, i64)> = worker.records().counts().into_keys().collect();
    ids.extend(next.records().counts().into_keys());
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), 400, "every message processed at least once");
    next.terminate();
    assert!(next.wait(Duration::from_secs(20)).success());
}
