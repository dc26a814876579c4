//! CPU work on the runtime's pool: while it saturates the pool, health checks
//! and group heartbeats keep answering; a panic in it becomes that message's
//! error (dead-lettered), and the worker goes on.

use std::time::{Duration, Instant};

use pythia_tests::*;

const PARTITIONS: i32 = 2;

#[test]
fn a_saturated_pool_keeps_health_checks_and_membership() {
    let dir = scratch("cpu");
    let broker = broker("images", PARTITIONS);
    let bootstrap = broker.bootstrap_servers();
    // 160 × 50 ms of CPU work on a 2-thread pool: about 4 s of saturation.
    let n = 160;
    let mut worker = WorkerSpec::new(bootstrap, "cpu", "images")
        .env("TEST_CPU_MS", 50)
        .env("PYTHIA_WORKER__CPU_THREADS", 2)
        .env("PYTHIA_WORKER__ORDERING", "none")
        .env("PYTHIA_KAFKA__CONSUMER__MAX_POLL_INTERVAL_MS", 1500)
        .env("PYTHIA_METRICS__ADDRESS", "127.0.0.1:0")
        .spawn(&dir, "w");
    let address = worker.metrics_address(Duration::from_secs(60));
    wait_until(Duration::from_secs(60), "assigned", || {
        !worker.assigned().is_empty()
    });
    produce(bootstrap, "images", PARTITIONS, 0..n);
    let mut probes = 0;
    let mut slowest = Duration::ZERO;
    while worker.records().unique() < n as usize {
        let asked = Instant::now();
        let (code, body) = http_get(&address, "/health/live").expect("health endpoint answers");
        slowest = slowest.max(asked.elapsed());
        assert_eq!(code, 200, "live while the pool is busy: {body}");
        probes += 1;
        std::thread::sleep(Duration::from_millis(100));
    }
    eprintln!("{probes} probes during the CPU work; slowest answer {slowest:?}");
    assert!(
        probes >= 5,
        "the work ended too soon to tell ({probes} probes)"
    );
    assert!(
        slowest < Duration::from_secs(2),
        "health answered in {slowest:?}"
    );
    worker.terminate();
    assert!(
        worker.wait(Duration::from_secs(30)).success(),
        "{}",
        worker.log_text()
    );
    let records = worker.records();
    let log = worker.log_text();
    assert_eq!(records.duplicates(), 0);
    // Assigned at start, emptied at shutdown: no rebalance while the pool was busy.
    assert_eq!(records.assignment_changes, 2, "{log}");
}

#[test]
fn a_panic_in_cpu_work_dead_letters_that_message_only() {
    let dir = scratch("cpupanic");
    let broker = broker("images", PARTITIONS);
    broker.create_topic("images.dlq", PARTITIONS).unwrap();
    let bootstrap = broker.bootstrap_servers();
    produce(bootstrap, "images", PARTITIONS, 0..40);
    let mut worker = WorkerSpec::new(bootstrap, "cpupanic", "images")
        .env("TEST_CPU_MS", 1)
        .env("TEST_CPU_PANIC_AT", "1:3")
        .spawn(&dir, "w");
    wait_until(Duration::from_secs(60), "everything committed", || {
        committed(bootstrap, "cpupanic", "images", PARTITIONS) == [Some(20), Some(20)]
    });
    let letters = consume_all(
        bootstrap,
        "images.dlq",
        PARTITIONS,
        1,
        Duration::from_secs(20),
    );
    worker.terminate();
    assert!(
        worker.wait(Duration::from_secs(30)).success(),
        "{}",
        worker.log_text()
    );
    assert_eq!(
        worker.records().unique(),
        39,
        "every other message processed"
    );
    assert_eq!(letters.len(), 1);
    let reason = letters[0].header("pythia.dlq.reason").unwrap_or_default();
    assert!(
        reason.contains("CPU work panicked") && reason.contains("injected CPU panic"),
        "{reason}"
    );
    assert_eq!(letters[0].header("pythia.dlq.offset").as_deref(), Some("3"));
}
