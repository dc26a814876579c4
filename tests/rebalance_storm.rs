//! A rebalance storm: instances join and leave every second or two for 20 s
//! while messages flow; nothing is lost. Runs on the broker `TEST_BROKER` selects
//! (CI runs it on both).
//!
//! On Tansu the first instance stays for the whole storm while the others come
//! and go: it leads the group there, and Tansu 0.6.0 never assigns partitions
//! again once a leader has left the group in the middle of a rebalance (see the
//! README on Tansu).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use pythia_tests::*;

const PARTITIONS: i32 = 8;
const STORM: Duration = Duration::from_secs(20);

#[test]
fn instances_coming_and_going_for_20_seconds_lose_nothing() {
    let dir = scratch("storm");
    let Some(broker) = selected_broker("events", PARTITIONS) else {
        return;
    };
    let bootstrap = broker.bootstrap_servers().to_owned();

    // A steady stream for the whole storm.
    let produced = Arc::new(AtomicU64::new(0));
    let flowing = Arc::new(AtomicBool::new(true));
    let producer = {
        let (bootstrap, produced, flowing) = (bootstrap.clone(), produced.clone(), flowing.clone());
        std::thread::spawn(move || {
            while flowing.load(Ordering::Relaxed) {
                let from = produced.load(Ordering::Relaxed);
                produce(&bootstrap, "events", PARTITIONS, from..from + 50);
                produced.store(from + 50, Ordering::Relaxed);
                std::thread::sleep(Duration::from_millis(100));
            }
        })
    };

    let spec = broker
        .worker("storm", "events")
        .env("TEST_DELAY_MS", 1)
        .env("PYTHIA_WORKER__REVOKE_TIMEOUT", "5s");
    let mut live: Vec<Worker> = vec![spec.spawn(&dir, "w0")];
    // Tansu makes the first member to join the group's leader and keeps it
    // while it stays (and its session does not expire): once w0 has
    // partitions it leads the group, and it stays.
    let stays = usize::from(broker.kind() == BrokerKind::Tansu);
    if stays > 0 {
        wait_until(Duration::from_secs(60), "w0's first partitions", || {
            !live[0].assigned().is_empty()
        });
    }
    let mut gone: Vec<Worker> = Vec::new();
    let mut spawned = 1;
    let started = Instant::now();
    // Joins and leaves alternate around two or three instances, one change every 1–2 s.
    let mut step = 0;
    while started.elapsed() < STORM {
        std::thread::sleep(Duration::from_millis(1000 + 250 * (step % 5)));
        let grow = live.len() < 2 || (live.len() < 4 && step % 3 != 2);
        if grow {
            live.push(spec.spawn(&dir, &format!("w{spawned}")));
            spawned += 1;
        } else {
            // The oldest leaves, gracefully (on Tansu the oldest after w0).
            let leaving = live.remove(stays);
            leaving.terminate();
            gone.push(leaving);
        }
        step += 1;
    }
    flowing.store(false, Ordering::Relaxed);
    producer.join().unwrap();
    let total = produced.load(Ordering::Relaxed) as usize;

    let files: Vec<_> = live.iter().chain(&gone).map(|w| w.record.clone()).collect();
    wait_until(Duration::from_secs(120), "every message processed", || {
        Records::read(&files).unique() == total
    });
    for worker in &mut gone {
        assert!(
            worker.wait(Duration::from_secs(30)).success(),
            "a leaving instance failed:\n{}",
            worker.log_text()
        );
    }
    for worker in &live {
        worker.terminate();
    }
    for worker in &mut live {
        assert!(
            worker.wait(Duration::from_secs(30)).success(),
            "{}",
            worker.log_text()
        );
    }
    let records = Records::read(&files);
    assert_eq!(records.unique(), total, "a message was lost");
    eprintln!(
        "{total} messages, {spawned} instances started, {} left during the storm, {} processed twice",
        gone.len(),
        records.duplicates()
    );
}
