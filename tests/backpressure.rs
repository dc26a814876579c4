//! Backpressure: `max_in_flight` bounds concurrent processing, and a slow worker
//! pauses fetching instead of buffering without bound, while its consumer keeps
//! polling so the group never expels it.

use std::time::Duration;

use pythia_tests::*;

/// The most messages whose processing intervals overlap at one instant.
fn max_overlap(records: &Records) -> usize {
    let mut edges: Vec<(u128, i32)> = records
        .processed
        .iter()
        .flat_map(|p| [(p.start_us, 1), (p.end_us, -1)])
        .collect();
    // At equal times, count ends before starts.
    edges.sort();
    let (mut now, mut max) = (0i32, 0i32);
    for (_, delta) in edges {
        now += delta;
        max = max.max(now);
    }
    max as usize
}

#[test]
fn max_in_flight_bounds_concurrent_processing() {
    let dir = scratch("inflight");
    let broker = broker("work", 8);
    let bootstrap = broker.bootstrap_servers();
    produce(bootstrap, "work", 8, 0..160);
    let mut worker = WorkerSpec::new(bootstrap, "inflight", "work")
        .env("TEST_DELAY_MS", 20)
        .env("PYTHIA_WORKER__MAX_IN_FLIGHT", 2)
        .spawn(&dir, "w");
    wait_until(Duration::from_secs(60), "all processed", || {
        worker.records().unique() == 160
    });
    worker.terminate();
    assert!(worker.wait(Duration::from_secs(30)).success());
    let overlap = max_overlap(&worker.records());
    assert!(
        overlap <= 2,
        "{overlap} messages processed at once with max_in_flight = 2"
    );
    assert_eq!(overlap, 2, "two partitions should have overlapped");
}

#[test]
fn slow_worker_pauses_fetching_and_is_never_expelled() {
    let dir = scratch("slow");
    let broker = broker("slow", 2);
    let bootstrap = broker.bootstrap_servers();
    const N: u64 = 300;
    produce(bootstrap, "slow", 2, 0..N);
    // 150 messages x 20 ms per partition: 3 s of handling, longer than
    // max.poll.interval.ms, with a buffer far smaller than the backlog.
    let mut worker = WorkerSpec::new(bootstrap, "slow", "slow")
        .env("TEST_DELAY_MS", 20)
        .env("PYTHIA_WORKER__PARTITION_BUFFER", 20)
        .env("PYTHIA_KAFKA__CONSUMER__MAX_POLL_INTERVAL_MS", 2000)
        .env(
            "RUST_LOG",
            "info,pythia_core::runtime=debug,librdkafka=warn,rdkafka=warn",
        )
        .spawn(&dir, "w");
    wait_until(Duration::from_secs(60), "all processed", || {
        worker.records().unique() == N as usize
    });
    worker.terminate();
    assert!(
        worker.wait(Duration::from_secs(30)).success(),
        "{}",
        worker.log_text()
    );

    let log = worker.log_text();
    let records = worker.records();
    assert_eq!(records.duplicates(), 0, "messages were redelivered");
    assert!(
        log.contains("pausing fetch"),
        "a full buffer should pause its partition:\n{log}"
    );
    assert!(
        log.contains("resuming fetch"),
        "a drained buffer should resume:\n{log}"
    );
    assert!(
        !log.contains("partitions revoked") && !log.contains("partitions lost"),
        "the member lost its partitions while busy:\n{log}"
    );
}

#[test]
fn outputs_awaiting_delivery_never_starve_the_permits() {
    let dir = scratch("permits");
    let broker = broker("in", 8);
    broker.create_topic("out", 8).unwrap();
    let bootstrap = broker.bootstrap_servers();
    const N: u64 = 400;
    produce(bootstrap, "in", 8, 0..N);
    // Each message holds a permit until its output is delivered; with two
    // permits, lanes must settle their own deliveries while waiting for one.
    let mut worker = WorkerSpec::new(bootstrap, "permits", "in")
        .env("TEST_OUTPUT", 1)
        .env("PYTHIA_KAFKA__OUTPUT_TOPIC", "out")
        .env("PYTHIA_WORKER__MAX_IN_FLIGHT", 2)
        .env("PYTHIA_KAFKA__PRODUCER__LINGER_MS", 20)
        .spawn(&dir, "w");
    let expected: Vec<Option<i64>> = spread(N, 8).into_iter().map(Some).collect();
    wait_until(Duration::from_secs(60), "every input committed", || {
        committed(bootstrap, "permits", "in", 8) == expected
    });
    worker.terminate();
    assert!(
        worker.wait(Duration::from_secs(30)).success(),
        "{}",
        worker.log_text()
    );
    assert_eq!(worker.records().unique(), N as usize);
    assert_eq!(
        high_watermarks(bootstrap, "out", 8).iter().sum::<i64>(),
        N as i64,
        "one output per input"
    );
}
