//! A rebalance that reaches a worker while it drains for shutdown: the moved
//! partitions are handed over only after their in-flight messages finish, so the
//! new owner never processes a partition at the same time, and nothing repeats.

use std::collections::BTreeMap;
use std::time::Duration;

use pythia_tests::*;

const PARTITIONS: i32 = 4;

#[test]
fn partitions_move_only_after_the_draining_lane_is_done() {
    let dir = scratch("drain-rebalance");
    let broker = broker("long", PARTITIONS);
    let bootstrap = broker.bootstrap_servers();
    produce(bootstrap, "long", PARTITIONS, 0..8);
    // Messages outlast revoke_timeout, so only the shutdown deadline may cut them.
    let spec = WorkerSpec::new(bootstrap, "drain", "long")
        .env("TEST_DELAY_MS", 4000)
        .env("PYTHIA_WORKER__REVOKE_TIMEOUT", "1s")
        .env("PYTHIA_WORKER__SHUTDOWN_TIMEOUT", "20s");

    let mut old = spec.spawn(&dir, "old");
    wait_until(
        Duration::from_secs(30),
        "the old worker to take every partition",
        || old.assigned().len() == PARTITIONS as usize,
    );
    std::thread::sleep(Duration::from_millis(800)); // its lanes are mid-message
    old.terminate();
    let mut new = spec.spawn(&dir, "new");
    assert!(
        old.wait(Duration::from_secs(40)).success(),
        "{}",
        old.log_text()
    );
    wait_until(Duration::from_secs(60), "the rest to be processed", || {
        Records::read([&old.record, &new.record]).unique() == 8
    });
    new.terminate();
    assert!(
        new.wait(Duration::from_secs(40)).success(),
        "{}",
        new.log_text()
    );

    let all = Records::read([&old.record, &new.record]);
    assert_eq!(all.duplicates(), 0, "a message was processed twice");
    let mut old_end: BTreeMap<i32, u128> = BTreeMap::new();
    for r in all.processed.iter().filter(|r| r.pid == old.pid()) {
        let end = old_end.entry(r.partition).or_default();
        *end = (*end).max(r.end_us);
    }
    assert!(
        !old_end.is_empty(),
        "the old worker finished nothing while draining"
    );
    for r in all.processed.iter().filter(|r| r.pid == new.pid()) {
        if let Some(&end) = old_end.get(&r.partition) {
            assert!(
                r.start_us >= end,
                "partition {} started on the new worker before the old one finished it",
                r.partition
            );
        }
    }
    let old_log = old.log_text();
    assert!(
        old_log.contains("revoked while draining"),
        "the rebalance did not reach the old worker during its drain:\n{old_log}"
    );
    assert!(!old_log.contains("commit failed"), "{old_log}");
}
