//! A worker stopped with SIGTERM commits what it processed; a new instance
//! resumes from there with nothing lost and nothing processed twice. Runs on
//! the broker `TEST_BROKER` selects.

use std::collections::HashSet;
use std::time::Duration;

use pythia_tests::*;

const PARTITIONS: i32 = 8;
const N: u64 = 1200;
const STOP_AFTER: usize = 300;

#[test]
fn sigterm_commits_processed_messages_and_restart_resumes_without_duplicates() {
    let dir = scratch("restart");
    let Some(broker) = selected_broker("jobs", PARTITIONS) else {
        return;
    };
    let bootstrap = broker.bootstrap_servers();
    produce(bootstrap, "jobs", PARTITIONS, 0..N);
    // Slow enough that SIGTERM lands mid-stream with messages in flight.
    let spec = broker.worker("restart", "jobs").env("TEST_DELAY_MS", 5);

    let mut first = spec.spawn(&dir, "first");
    wait_until(
        Duration::from_secs(60),
        "the first worker to process some messages",
        || first.records().processed.len() >= STOP_AFTER,
    );
    first.terminate();
    let status = first.wait(Duration::from_secs(30));
    assert!(
        status.success(),
        "exit {status:?}; log:\n{}",
        first.log_text()
    );
    let before = first.records();
    assert!(
        before.processed.len() < N as usize,
        "the first worker finished everything before SIGTERM; the test proves nothing"
    );

    // What was processed is exactly what was committed.
    let committed = committed(bootstrap, "restart", "jobs", PARTITIONS);
    for p in 0..PARTITIONS {
        let processed_next = before
            .processed
            .iter()
            .filter(|r| r.partition == p)
            .map(|r| r.offset + 1)
            .max();
        assert_eq!(
            committed[p as usize], processed_next,
            "partition {p}: committed offset is not one past the last processed"
        );
    }

    let mut second = spec.spawn(&dir, "second");
    wait_until(Duration::from_secs(60), "the rest to be processed", || {
        Records::read([&first.record, &second.record]).unique() == N as usize
    });
    second.terminate();
    assert!(
        second.wait(Duration::from_secs(30)).success(),
        "{}",
        second.log_text()
    );

    let all = Records::read([&first.record, &second.record]);
    assert_eq!(all.unique(), N as usize, "nothing lost");
    assert_eq!(all.duplicates(), 0, "nothing processed twice");
    let seen: HashSet<(i32, i64)> = all.counts().keys().copied().collect();
    assert_eq!(
        seen,
        all_offsets(&spread(N, PARTITIONS)).into_iter().collect()
    );
    assert!(second.records().processed.len() >= N as usize - before.processed.len());
}
