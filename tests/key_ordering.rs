//! `ordering = "key"`: one partition's messages with different keys run in
//! parallel while each key keeps its order; `ordering = "none"`: everything in
//! parallel. Either way every message is processed once and all commit.

use std::collections::BTreeMap;
use std::time::Duration;

use pythia_tests::*;

const N: usize = 200;
const KEYS: usize = 10;

/// Runs one worker over `N` messages on a one-partition topic, keyed
/// `k<id % KEYS>`; returns what it recorded, by offset.
fn run(name: &str, ordering: &str) -> (Records, Vec<String>) {
    let dir = scratch(name);
    let broker = broker("events", 1);
    let bootstrap = broker.bootstrap_servers();
    let messages: Vec<(String, String)> = (0..N)
        .map(|id| (format!("k{}", id % KEYS), format!(r#"{{"id":{id}}}"#)))
        .collect();
    produce_keyed(bootstrap, "events", 0, &messages);
    let mut worker = WorkerSpec::new(bootstrap, name, "events")
        .env("PYTHIA_WORKER__ORDERING", ordering)
        .env("TEST_DELAY_MS", 20)
        .spawn(&dir, "w");
    wait_until(Duration::from_secs(60), "everything committed", || {
        committed(bootstrap, name, "events", 1) == [Some(N as i64)]
    });
    worker.terminate();
    assert!(
        worker.wait(Duration::from_secs(30)).success(),
        "{}",
        worker.log_text()
    );
    let records = worker.records();
    assert_eq!(records.unique(), N);
    assert_eq!(records.duplicates(), 0);
    (records, messages.into_iter().map(|(k, _)| k).collect())
}

/// How many pairs of messages overlapped in time.
fn overlaps(records: &Records, keys: &[String], same_key: bool) -> usize {
    let p = &records.processed;
    let mut n = 0;
    for (i, a) in p.iter().enumerate() {
        for b in &p[i + 1..] {
            let key_match = keys[a.offset as usize] == keys[b.offset as usize];
            if key_match == same_key && a.start_us < b.end_us && b.start_us < a.end_us {
                n += 1;
            }
        }
    }
    n
}

#[test]
fn key_ordering_runs_keys_in_parallel_and_each_key_in_order() {
    let (records, keys) = run("bykey", "key");
    let mut by_key: BTreeMap<&str, Vec<&Processed>> = BTreeMap::new();
    for r in &records.processed {
        by_key
            .entry(keys[r.offset as usize].as_str())
            .or_default()
            .push(r);
    }
    for (key, mut list) in by_key {
        list.sort_by_key(|r| r.start_us);
        for pair in list.windows(2) {
            assert!(
                pair[0].offset < pair[1].offset,
                "key {key} out of order: {pair:?}"
            );
            assert!(
                pair[0].end_us <= pair[1].start_us,
                "key {key} ran two at once: {pair:?}"
            );
        }
    }
    assert_eq!(overlaps(&records, &keys, true), 0);
    assert!(
        overlaps(&records, &keys, false) > N,
        "different keys should overlap in time"
    );
}

#[test]
fn no_ordering_runs_a_partition_in_parallel() {
    let (records, keys) = run("unordered", "none");
    assert!(
        overlaps(&records, &keys, true) > 0,
        "with no ordering even one key's messages overlap"
    );
}
