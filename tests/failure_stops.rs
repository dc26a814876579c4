//! With dead letters off (`worker.dead_letter.enabled = false`), a message that
//! cannot be processed stops the worker with a clear error, and nothing at or
//! past it in its partition is committed. An output that is not delivered stops
//! the worker in every mode.

use std::time::Duration;

use pythia_tests::*;

const PARTITIONS: i32 = 4;
const N: u64 = 400;

#[test]
fn process_error_stops_the_worker_and_commits_nothing_past_it() {
    let dir = scratch("fail");
    let broker = broker("tasks", PARTITIONS);
    let bootstrap = broker.bootstrap_servers();
    produce(bootstrap, "tasks", PARTITIONS, 0..N);
    let mut worker = WorkerSpec::new(bootstrap, "fail", "tasks")
        .env("TEST_DELAY_MS", 2)
        .env("TEST_FAIL_AT", "2:30")
        .env("PYTHIA_WORKER__DEAD_LETTER__ENABLED", false)
        .env("PYTHIA_WORKER__RETRY__MAX_ATTEMPTS", 2)
        .spawn(&dir, "w");
    let log = worker.expect_failure(Duration::from_secs(60));
    assert!(
        log.contains("tasks/2@30"),
        "the error names the message: {log}"
    );
    assert!(
        log.contains("injected failure"),
        "the error carries the cause: {log}"
    );

    let committed = committed(bootstrap, "fail", "tasks", PARTITIONS);
    assert!(
        committed[2].is_some_and(|c| c <= 30),
        "partition 2 committed {:?}, past the failed offset 30",
        committed[2]
    );
    let records = worker.records();
    assert!(
        !records
            .processed
            .iter()
            .any(|r| r.partition == 2 && r.offset >= 30),
        "partition 2 went on past the failure"
    );
    // Other partitions commit exactly what they processed.
    for p in [0, 1, 3] {
        let processed_next = records
            .processed
            .iter()
            .filter(|r| r.partition == p)
            .map(|r| r.offset + 1)
            .max();
        assert_eq!(committed[p as usize], processed_next, "partition {p}");
    }
}

#[test]
fn panic_in_process_stops_the_worker_like_an_error() {
    let dir = scratch("panic");
    let broker = broker("tasks", PARTITIONS);
    let bootstrap = broker.bootstrap_servers();
    produce(bootstrap, "tasks", PARTITIONS, 0..40);
    let mut worker = WorkerSpec::new(bootstrap, "panic", "tasks")
        .env("TEST_PANIC_AT", "1:5")
        .env("PYTHIA_WORKER__DEAD_LETTER__ENABLED", false)
        .spawn(&dir, "w");
    let log = worker.expect_failure(Duration::from_secs(60));
    assert!(
        log.contains("tasks/1@5") && log.contains("injected panic"),
        "{log}"
    );
    let committed = committed(bootstrap, "panic", "tasks", PARTITIONS);
    assert!(
        committed[1].is_none_or(|c| c <= 5),
        "committed past the panic: {committed:?}"
    );
}

#[test]
fn failed_delivery_stops_the_worker_and_leaves_the_input_uncommitted() {
    let dir = scratch("delivery");
    let broker = broker("input", PARTITIONS);
    broker.create_topic("output", 1).unwrap();
    let bootstrap = broker.bootstrap_servers();
    // Every produce to `output` is refused with a non-retriable error.
    broker
        .set_topic_error(
            "output",
            rdkafka_sys::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_TOPIC_AUTHORIZATION_FAILED,
        )
        .unwrap();
    produce(bootstrap, "input", PARTITIONS, 0..20);
    let mut worker = WorkerSpec::new(bootstrap, "delivery", "input")
        .env("TEST_OUTPUT", 1)
        .env("PYTHIA_KAFKA__OUTPUT_TOPIC", "output")
        .env("PYTHIA_KAFKA__PRODUCER__MESSAGE_TIMEOUT_MS", 3000)
        .spawn(&dir, "w");
    let log = worker.expect_failure(Duration::from_secs(60));
    assert!(log.contains("was not delivered"), "{log}");
    assert!(
        !worker.records().processed.is_empty(),
        "the handler ran; only delivery failed"
    );
    let committed = committed(bootstrap, "delivery", "input", PARTITIONS);
    assert!(
        committed.iter().all(|c| c.is_none_or(|c| c == 0)),
        "input offsets were committed although no output was delivered: {committed:?}"
    );
}
