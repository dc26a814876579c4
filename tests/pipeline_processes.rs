//! The order pipeline's three stages as three separate processes on one
//! broker: every line ends stored, rejected or malformed, none lost; each stage
//! stops cleanly on SIGTERM.

use std::collections::BTreeSet;
use std::time::Duration;

use pythia_kafka::EmbeddedBroker;
use pythia_tests::{high_watermarks, produce_payloads, scratch, spawn_example, wait_until};

const PARTITIONS: i32 = 4;
const LINES: u64 = 3_000;

/// The example's rule: malformed when id % 50 == 0, a zero amount when id % 20 == 0.
fn line(id: u64) -> String {
    match id {
        _ if id.is_multiple_of(50) => format!("{id};customer-{}", id % 100),
        _ if id.is_multiple_of(20) => format!("{id},customer-{},0", id % 100),
        _ => format!("{id},customer-{},{}", id % 100, 100 + id % 900),
    }
}

fn stored_ids(path: &std::path::Path) -> BTreeSet<u64> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter_map(|v| v["id"].as_u64())
        .collect()
}

#[test]
fn three_stage_processes_move_every_line_end_to_end() {
    let dir = scratch("pipeline");
    let topics = [
        "orders.raw",
        "orders.parsed",
        "orders.malformed",
        "orders.valid",
        "orders.rejected",
    ];
    let broker = EmbeddedBroker::with_topics(topics.map(|t| (t, PARTITIONS))).unwrap();
    let bootstrap = broker.bootstrap_servers();
    let store = dir.join("orders.jsonl");
    let store_path = store.to_str().unwrap();
    let env = [
        ("PYTHIA_KAFKA__BROKERS", bootstrap),
        ("PYTHIA_KAFKA__GROUP_PROTOCOL", "consumer"),
        ("PYTHIA_KAFKA__COMMIT_INTERVAL", "200ms"),
        ("PYTHIA_KAFKA__CONSUMER__FETCH_WAIT_MAX_MS", "100"),
        ("ORDER_STORE", store_path),
    ];
    let mut stages: Vec<_> = ["ingest", "validate", "store"]
        .into_iter()
        .map(|stage| spawn_example(&dir, stage, "order_pipeline", &["stage", stage], &env))
        .collect();

    produce_payloads(bootstrap, "orders.raw", PARTITIONS, (1..=LINES).map(line));

    let malformed: BTreeSet<u64> = (1..=LINES).filter(|id| id.is_multiple_of(50)).collect();
    let rejected: BTreeSet<u64> = (1..=LINES)
        .filter(|id| id.is_multiple_of(20) && !id.is_multiple_of(50))
        .collect();
    let valid: BTreeSet<u64> = (1..=LINES)
        .filter(|id| !malformed.contains(id) && !rejected.contains(id))
        .collect();
    let count = |topic: &str| {
        high_watermarks(bootstrap, topic, PARTITIONS)
            .iter()
            .sum::<i64>()
    };
    wait_until(Duration::from_secs(120), "every valid line stored", || {
        stored_ids(&store).len() == valid.len()
    });
    assert_eq!(stored_ids(&store), valid, "stored exactly the valid orders");
    assert_eq!(count("orders.malformed"), malformed.len() as i64);
    assert_eq!(count("orders.rejected"), rejected.len() as i64);
    assert_eq!(
        count("orders.parsed"),
        (LINES as usize - malformed.len()) as i64
    );
    assert_eq!(count("orders.valid"), valid.len() as i64);

    for stage in &stages {
        stage.terminate();
    }
    for stage in &mut stages {
        let status = stage.wait(Duration::from_secs(60));
        assert!(
            status.success(),
            "stage exited with {status}:\n{}",
            stage.log_text()
        );
    }
    // Nothing was processed twice: a clean run stores each order once.
    let lines = std::fs::read_to_string(&store).unwrap().lines().count();
    assert_eq!(lines, valid.len(), "duplicates in the store");
}
