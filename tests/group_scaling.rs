//! Scaling 1 → 2 → 1 instances while messages flow loses nothing; graceful
//! hand-overs (revoke drains and commits first) process nothing twice. The load
//! outruns the workers and buffers are small, so partitions are paused when
//! they move, and must flow again when they come back.
//!
//! The cooperative-sticky run uses the broker `TEST_BROKER` selects; the
//! KIP-848 run needs the embedded broker (Tansu has no KIP-848 groups).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use pythia_tests::*;

const PARTITIONS: i32 = 8;
const BATCHES: u64 = 40;
const PER_BATCH: u64 = 200;

/// Runs the scenario with workers started from `spec`, which names the broker,
/// the group and the topic `clicks` (created with `PARTITIONS` partitions).
fn scale_up_and_down(spec: WorkerSpec<'_>) {
    let dir = scratch(&format!("scale-{}", spec.group));
    let bootstrap = spec.bootstrap.to_owned();
    let spec = spec
        .env("TEST_DELAY_MS", 4)
        .env("PYTHIA_WORKER__PARTITION_BUFFER", 8);
    let n = BATCHES * PER_BATCH;

    let mut first = spec.spawn(&dir, "first");
    wait_until(Duration::from_secs(60), "the first worker to join", || {
        !first.assigned().is_empty()
    });

    // A steady stream for the whole scale-up and scale-down.
    let done = Arc::new(AtomicBool::new(false));
    let producer = {
        let bootstrap = bootstrap.clone();
        let done = done.clone();
        std::thread::spawn(move || {
            for batch in 0..BATCHES {
                produce(
                    &bootstrap,
                    "clicks",
                    PARTITIONS,
                    batch * PER_BATCH..(batch + 1) * PER_BATCH,
                );
                std::thread::sleep(Duration::from_millis(100));
            }
            done.store(true, Ordering::Release);
        })
    };

    std::thread::sleep(Duration::from_millis(800));
    let mut second = spec.spawn(&dir, "second");
    wait_until(
        Duration::from_secs(60),
        "the second worker to take partitions",
        || !second.assigned().is_empty(),
    );
    let handed_over = second.assigned();
    let during = handed_over.len();
    std::thread::sleep(Duration::from_millis(800));
    second.terminate();
    assert!(
        second.wait(Duration::from_secs(30)).success(),
        "{}",
        second.log_text()
    );

    producer.join().unwrap();
    assert!(done.load(Ordering::Acquire));
    wait_until(Duration::from_secs(60), "all messages processed", || {
        Records::read([&first.record, &second.record]).unique() == n as usize
    });
    assert_eq!(
        first.assigned().len(),
        PARTITIONS as usize,
        "the survivor took every partition back"
    );
    first.terminate();
    assert!(
        first.wait(Duration::from_secs(30)).success(),
        "{}",
        first.log_text()
    );

    let all = Records::read([&first.record, &second.record]);
    assert_eq!(all.unique(), n as usize, "a message was lost");
    assert!(
        during > 0 && during < PARTITIONS as usize,
        "second held {during} partitions"
    );
    assert!(
        all.processed.iter().any(|r| r.pid == second.pid()),
        "the second worker processed nothing while it was in the group"
    );
    // A graceful hand-over commits what the old owner finished before the
    // new owner starts, so nothing is processed twice. The one exception is
    // a revoke commit the broker refuses because the group has already
    // started its next round: the worker logs it, and the new owner repeats
    // what came after the last accepted commit (at least once, never lost).
    let refused = first
        .log_text()
        .lines()
        .any(|l| l.contains("offset commit failed") && l.contains(r#"reason="revoke""#));
    if refused {
        let handed: Vec<i32> = handed_over
            .iter()
            .filter_map(|p| p.rsplit_once('/')?.1.parse().ok())
            .collect();
        let mut seen = std::collections::HashMap::new();
        for p in &all.processed {
            *seen.entry((p.partition, p.offset)).or_insert(0) += 1;
        }
        let outside: Vec<_> = seen
            .iter()
            .filter(|((partition, _), count)| **count > 1 && !handed.contains(partition))
            .collect();
        eprintln!(
            "the broker refused the revoke commit: {} messages of the handed-over partitions {handed:?} were processed again",
            all.duplicates()
        );
        assert!(
            outside.is_empty(),
            "messages processed twice outside the handed-over partitions: {outside:?}"
        );
    } else {
        assert_eq!(
            all.duplicates(),
            0,
            "graceful hand-overs processed messages twice"
        );
    }
}

#[test]
fn scale_one_two_one_with_kip848() {
    let broker = broker("clicks", PARTITIONS);
    scale_up_and_down(
        WorkerSpec::new(broker.bootstrap_servers(), "scale-consumer", "clicks")
            .env("PYTHIA_KAFKA__GROUP_PROTOCOL", "consumer"),
    );
}

#[test]
fn scale_one_two_one_with_cooperative_sticky() {
    let Some(broker) = selected_broker("clicks", PARTITIONS) else {
        return;
    };
    scale_up_and_down(
        broker
            .worker("scale-classic", "clicks")
            .env("PYTHIA_KAFKA__GROUP_PROTOCOL", "classic")
            .env("PYTHIA_KAFKA__ASSIGNMENT_STRATEGY", "cooperative-sticky")
            .env("PYTHIA_KAFKA__SESSION_TIMEOUT", "6s"),
    );
}
