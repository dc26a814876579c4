//! A worker killed with SIGKILL loses nothing: a restarted instance resumes
//! from the last commit, and the only duplicates are messages the killed
//! worker had not yet committed. Runs on the broker `TEST_BROKER`
//! selects.

use std::time::Duration;

use pythia_tests::*;

const PARTITIONS: i32 = 8;
const N: u64 = 2000;

#[test]
fn sigkill_loses_nothing_and_duplicates_only_uncommitted_work() {
    let dir = scratch("crash");
    let Some(broker) = selected_broker("payments", PARTITIONS) else {
        return;
    };
    let bootstrap = broker.bootstrap_servers();
    produce(bootstrap, "payments", PARTITIONS, 0..N);
    let spec = broker.worker("crash", "payments").env("TEST_DELAY_MS", 2);

    let mut victim = spec.spawn(&dir, "victim");
    wait_until(
        Duration::from_secs(60),
        "the worker to be well into the stream",
        || victim.records().processed.len() >= 600,
    );
    victim.kill();
    let killed = victim.records();
    assert!(
        killed.processed.len() < N as usize,
        "finished before the kill; proves nothing"
    );

    // Nothing else commits for this group, so this is the state the crash left.
    let at_kill = committed(bootstrap, "crash", "payments", PARTITIONS);
    assert!(
        at_kill.iter().flatten().sum::<i64>() > 0,
        "no offsets were committed during {} processed messages: {at_kill:?}",
        killed.processed.len()
    );
    let uncommitted: Vec<&Processed> = killed
        .processed
        .iter()
        .filter(|r| at_kill[r.partition as usize].is_none_or(|c| r.offset >= c))
        .collect();
    for (p, committed) in at_kill.iter().enumerate() {
        let last = killed
            .processed
            .iter()
            .filter(|r| r.partition as usize == p)
            .map(|r| r.offset + 1)
            .max();
        assert!(
            *committed <= last,
            "partition {p}: committed {committed:?} past the last processed {last:?}"
        );
    }

    let mut successor = spec.spawn(&dir, "successor");
    wait_until(
        Duration::from_secs(90),
        "the successor to finish the topic",
        || Records::read([&victim.record, &successor.record]).unique() == N as usize,
    );
    successor.terminate();
    assert!(
        successor.wait(Duration::from_secs(30)).success(),
        "{}",
        successor.log_text()
    );

    let all = Records::read([&victim.record, &successor.record]);
    assert_eq!(all.unique(), N as usize, "a message was lost");
    let counts = all.counts();
    let duplicated: Vec<(i32, i64)> = counts
        .iter()
        .filter(|(_, n)| **n > 1)
        .map(|(k, _)| *k)
        .collect();
    for (partition, offset) in &duplicated {
        let committed = at_kill[*partition as usize];
        assert!(
            committed.is_none_or(|c| *offset >= c),
            "{partition}@{offset} was committed before the crash yet processed again"
        );
    }
    assert!(
        duplicated.len() <= uncommitted.len(),
        "{} duplicates, but only {} messages were processed and uncommitted at the kill",
        duplicated.len(),
        uncommitted.len()
    );
    eprintln!(
        "killed after {} processed; {} uncommitted at the kill; {} duplicates",
        killed.processed.len(),
        uncommitted.len(),
        duplicated.len()
    );
}
