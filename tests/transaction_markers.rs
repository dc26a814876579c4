//! A partition whose last offsets cannot be consumed: a transactional
//! producer's commit leaves a control record after its messages, which no
//! consumer is handed, so a group that processed everything still commits one
//! offset below the high watermark. The worker's lag must read 0 and
//! `/health/live` must stay 200 however long it idles.
//!
//! librdkafka's mock cluster accepts transactions but writes no markers, so
//! the test appends to each partition the commit marker Kafka writes (a
//! control batch with one commit record), with a plain Produce request:
//! consumers meet the same bytes they would meet on Kafka.

use std::time::{Duration, Instant};

use pythia_tests::*;

const PARTITIONS: i32 = 2;
const N: u64 = 200;

#[test]
fn lag_is_zero_and_the_worker_stays_live_when_only_markers_are_left() {
    let dir = scratch("markers");
    let Some(broker) = selected_broker("payments", PARTITIONS) else {
        return;
    };
    let bootstrap = broker.bootstrap_servers();
    produce(bootstrap, "payments", PARTITIONS, 0..N);
    let markers: Vec<i64> = (0..PARTITIONS)
        .map(|p| append_commit_marker(bootstrap, "payments", p))
        .collect();
    let highs = high_watermarks(bootstrap, "payments", PARTITIONS);
    for p in 0..PARTITIONS as usize {
        assert_eq!(highs[p], markers[p] + 1, "the marker ends partition {p}");
    }
    // A fresh consumer is handed the messages and not the markers.
    let consumed = consume_all(
        bootstrap,
        "payments",
        PARTITIONS,
        N as usize,
        Duration::from_secs(30),
    );
    assert_eq!(
        consumed.len(),
        N as usize,
        "messages read by a fresh consumer"
    );

    let stall = Duration::from_secs(2);
    let mut worker = broker
        .worker("markers", "payments")
        .env("PYTHIA_METRICS__ADDRESS", "127.0.0.1:0")
        .env("PYTHIA_METRICS__LAG_INTERVAL", "200ms")
        .env("PYTHIA_HEALTH__STALL_TIMEOUT", "2s")
        .spawn(&dir, "w");
    let address = worker.metrics_address(Duration::from_secs(60));
    wait_until(Duration::from_secs(60), "all messages processed", || {
        worker.records().unique() == N as usize
    });
    // The group commits up to each marker, one below the high watermark.
    wait_until(Duration::from_secs(30), "commits up to the markers", || {
        committed(bootstrap, "markers", "payments", PARTITIONS)
            == markers.iter().map(|&m| Some(m)).collect::<Vec<_>>()
    });

    // Idle for several stall timeouts: live every time, lag 0.
    let until = Instant::now() + 4 * stall;
    while Instant::now() < until {
        let (code, body) = http_get(&address, "/health/live").expect("/health/live");
        assert_eq!(
            code, 200,
            "only markers are left, nothing to process: {body}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let (_, metrics) = http_get(&address, "/metrics").expect("/metrics");
    assert_eq!(
        sample(&metrics, "pythia_consumer_lag", &[("group", "markers")]),
        Some(0.0),
        "{metrics}"
    );

    // A message after the marker is lag again, and is processed.
    produce(bootstrap, "payments", PARTITIONS, N..N + 2);
    wait_until(
        Duration::from_secs(30),
        "the new messages processed",
        || worker.records().unique() == N as usize + 2,
    );
    worker.terminate();
    assert!(
        worker.wait(Duration::from_secs(30)).success(),
        "{}",
        worker.log_text()
    );
}
