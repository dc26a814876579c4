//! Two worker processes in one group split an 8-partition topic, and every
//! message is processed exactly once. Runs on the broker `TEST_BROKER`
//! selects.

use std::collections::HashSet;
use std::time::Duration;

use pythia_tests::*;

const PARTITIONS: i32 = 8;
const N: u64 = 4000;

#[test]
fn two_processes_split_the_partitions_and_process_each_message_once() {
    let dir = scratch("split");
    let Some(broker) = selected_broker("orders", PARTITIONS) else {
        return;
    };
    let bootstrap = broker.bootstrap_servers();
    let spec = broker.worker("split", "orders");
    let mut a = spec.spawn(&dir, "a");
    let mut b = spec.spawn(&dir, "b");

    // Both members hold partitions, disjointly, covering the topic, before the load.
    wait_until(
        Duration::from_secs(60),
        "both workers to share the 8 partitions",
        || {
            let (pa, pb) = (a.assigned(), b.assigned());
            !pa.is_empty() && !pb.is_empty() && pa.len() + pb.len() == PARTITIONS as usize
        },
    );
    let (pa, pb): (HashSet<_>, HashSet<_>) = (
        a.assigned().into_iter().collect(),
        b.assigned().into_iter().collect(),
    );
    assert!(
        pa.is_disjoint(&pb),
        "overlapping assignment: {pa:?} / {pb:?}"
    );

    produce(bootstrap, "orders", PARTITIONS, 0..N);
    let files = [a.record.clone(), b.record.clone()];
    let records = || Records::read(&files);
    wait_until(Duration::from_secs(60), "all messages processed", || {
        records().unique() == N as usize
    });
    a.terminate();
    b.terminate();
    assert!(
        a.wait(Duration::from_secs(30)).success(),
        "{}",
        a.log_text()
    );
    assert!(
        b.wait(Duration::from_secs(30)).success(),
        "{}",
        b.log_text()
    );

    let records = records();
    assert_eq!(records.unique(), N as usize, "every message processed");
    assert_eq!(records.duplicates(), 0, "no message processed twice");
    let expected: HashSet<(i32, i64)> = all_offsets(&spread(N, PARTITIONS)).into_iter().collect();
    let seen: HashSet<(i32, i64)> = records.counts().keys().copied().collect();
    assert_eq!(seen, expected);
    for worker in [&a, &b] {
        let own = records
            .processed
            .iter()
            .filter(|p| p.pid == worker.pid())
            .count();
        assert!(own > 0, "worker {} processed nothing", worker.pid());
        // Each worker processed only its own partitions.
        let mine: HashSet<String> = worker.assigned().into_iter().collect();
        let mine = if mine.is_empty() {
            if worker.pid() == a.pid() { &pa } else { &pb }
        } else {
            &mine
        };
        for p in records.processed.iter().filter(|p| p.pid == worker.pid()) {
            assert!(
                mine.contains(&format!("orders/{}", p.partition)),
                "worker {} processed partition {} it did not hold",
                worker.pid(),
                p.partition
            );
        }
    }
    // Everything processed is committed: a restart would start at the end.
    let committed = committed(bootstrap, "split", "orders", PARTITIONS);
    let expected: Vec<Option<i64>> = spread(N, PARTITIONS).into_iter().map(Some).collect();
    assert_eq!(committed, expected);
}
