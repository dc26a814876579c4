//! A broker outage: the worker keeps running, reports not ready, and resumes by
//! itself when the broker returns; nothing is lost.

use std::time::Duration;

use pythia_tests::*;

const PARTITIONS: i32 = 4;

fn ready(address: &str) -> u16 {
    http_get(address, "/health/ready").map_or(0, |(code, _)| code)
}

#[test]
fn an_outage_pauses_work_flips_readiness_and_loses_nothing() {
    let dir = scratch("outage");
    let broker = broker("work", PARTITIONS);
    let bootstrap = broker.bootstrap_servers().to_owned();
    produce(&bootstrap, "work", PARTITIONS, 0..200);
    let mut worker = WorkerSpec::new(&bootstrap, "outage", "work")
        .env("PYTHIA_METRICS__ADDRESS", "127.0.0.1:0")
        .env("PYTHIA_METRICS__LAG_INTERVAL", "200ms")
        .spawn(&dir, "w");
    let address = worker.metrics_address(Duration::from_secs(60));
    wait_until(Duration::from_secs(60), "the first 200 processed", || {
        worker.records().unique() == 200
    });
    wait_until(Duration::from_secs(30), "ready", || ready(&address) == 200);

    broker.set_broker_up(false);
    wait_until(
        Duration::from_secs(60),
        "not ready during the outage",
        || ready(&address) == 503,
    );
    // The outage lasts a while; the worker must still be there afterwards.
    std::thread::sleep(Duration::from_secs(3));
    assert!(
        worker.try_status().is_none(),
        "the worker exited during the outage:\n{}",
        worker.log_text()
    );
    broker.set_broker_up(true);

    wait_until(Duration::from_secs(60), "ready again", || {
        ready(&address) == 200
    });
    produce(&bootstrap, "work", PARTITIONS, 200..400);
    let highs = high_watermarks(&bootstrap, "work", PARTITIONS);
    wait_until(
        Duration::from_secs(90),
        "everything processed and committed",
        || {
            committed(&bootstrap, "outage", "work", PARTITIONS)
                .iter()
                .zip(&highs)
                .all(|(c, h)| *c == Some(*h))
        },
    );
    worker.terminate();
    assert!(
        worker.wait(Duration::from_secs(30)).success(),
        "{}",
        worker.log_text()
    );
    let records = worker.records();
    assert_eq!(records.unique(), 400, "nothing lost");
}
