//! A handler that runs longer than `max.poll.interval.ms` completes and commits
//! without a rebalance: the consumer keeps polling on its own thread while the
//! partition's work runs.

use std::time::Duration;

use pythia_tests::*;

#[test]
fn handlers_longer_than_the_poll_interval_keep_the_member_in_the_group() {
    let dir = scratch("long");
    let broker = broker("long", 2);
    let bootstrap = broker.bootstrap_servers();
    produce(bootstrap, "long", 2, 0..4);
    // Each message takes 2.5 s, the poll interval is 1 s: a worker that polled
    // only between messages would be expelled on the first one.
    let mut worker = WorkerSpec::new(bootstrap, "long", "long")
        .env("TEST_DELAY_MS", 2500)
        .env("PYTHIA_KAFKA__CONSUMER__MAX_POLL_INTERVAL_MS", 1000)
        .spawn(&dir, "w");
    wait_until(Duration::from_secs(60), "every long job committed", || {
        committed(bootstrap, "long", "long", 2) == [Some(2), Some(2)]
    });
    worker.terminate();
    assert!(
        worker.wait(Duration::from_secs(30)).success(),
        "{}",
        worker.log_text()
    );
    let records = worker.records();
    let log = worker.log_text();
    assert_eq!(records.unique(), 4);
    assert_eq!(records.duplicates(), 0, "no job ran twice");
    // One assignment at start, the empty one at shutdown: nothing in between.
    assert_eq!(records.assignment_changes, 2, "rebalanced: {log}");
    assert!(
        !log.contains("max.poll.interval")
            && !log.contains("partitions revoked")
            && !log.contains("partitions lost"),
        "{log}"
    );
}
