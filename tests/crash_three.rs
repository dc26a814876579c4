//! Three worker processes under load; one is killed with SIGKILL mid-stream,
//! then another. Every message is processed at least once, and each duplicate
//! is a message a killed process had processed but not committed.
//!
//! Runs `PYTHIA_SOAK_RUNS` times (default 3); set it higher for a soak. Runs on
//! the broker `TEST_BROKER` selects.

use std::collections::BTreeSet;
use std::time::Duration;

use pythia_tests::*;

const PARTITIONS: i32 = 8;
const N: u64 = 3000;

/// Kills `victim` and returns the messages it had processed past the group's
/// commits just before the kill: the only ones that may be processed again.
fn kill(victim: &mut Worker, bootstrap: &str, group: &str) -> Vec<(i32, i64)> {
    let before = committed(bootstrap, group, "orders", PARTITIONS);
    victim.kill();
    victim
        .records()
        .processed
        .iter()
        .filter(|r| before[r.partition as usize].is_none_or(|c| r.offset >= c))
        .map(|r| (r.partition, r.offset))
        .collect()
}

fn run(round: usize, broker: &TestBroker) {
    let dir = scratch("crash3");
    let bootstrap = broker.bootstrap_servers();
    let group = format!("crash3-{round}");
    produce(bootstrap, "orders", PARTITIONS, 0..N);
    let spec = broker.worker(&group, "orders").env("TEST_DELAY_MS", 2);
    let mut workers: Vec<Worker> = (0..3).map(|i| spec.spawn(&dir, &format!("w{i}"))).collect();
    let records = |workers: &[Worker]| Records::read(workers.iter().map(|w| &w.record));

    wait_until(Duration::from_secs(60), "a third of the stream", || {
        records(&workers).unique() >= N as usize / 3
    });
    let mut may_repeat = kill(&mut workers[0], bootstrap, &group);
    wait_until(Duration::from_secs(90), "two thirds of the stream", || {
        records(&workers).unique() >= 2 * N as usize / 3
    });
    // A message the first killed process left uncommitted may be taken
    // and left uncommitted again by the second: it is listed once for each.
    may_repeat.extend(kill(&mut workers[1], bootstrap, &group));
    assert!(
        records(&workers).unique() < N as usize,
        "the stream ended before the second kill; proves little"
    );

    wait_until(
        Duration::from_secs(120),
        "the survivor to finish the stream",
        || records(&workers).unique() == N as usize,
    );
    workers[2].terminate();
    assert!(
        workers[2].wait(Duration::from_secs(30)).success(),
        "{}",
        workers[2].log_text()
    );

    let all = records(&workers);
    assert_eq!(all.unique(), N as usize, "a message was lost");
    let uncommitted: BTreeSet<(i32, i64)> = may_repeat.iter().copied().collect();
    let mut extra = 0;
    for (message, count) in all.counts() {
        if count > 1 {
            assert!(
                uncommitted.contains(&message),
                "{message:?} was processed {count} times but was not uncommitted work of a killed process"
            );
            extra += count - 1;
        }
    }
    // Each processing after the first answers one processing a killed
    // process did past the commits.
    assert!(
        extra <= may_repeat.len(),
        "{extra} repeats, but the killed processes did only {} processings past the commits ({} messages)",
        may_repeat.len(),
        uncommitted.len()
    );
    eprintln!(
        "round {round}: {} uncommitted processings in killed processes ({} messages), {extra} processed again",
        may_repeat.len(),
        uncommitted.len()
    );
}

#[test]
fn two_of_three_workers_killed_under_load_lose_nothing() {
    let runs = std::env::var("PYTHIA_SOAK_RUNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(3);
    for round in 0..runs {
        let Some(broker) = selected_broker("orders", PARTITIONS) else {
            return;
        };
        run(round, &broker);
    }
}
