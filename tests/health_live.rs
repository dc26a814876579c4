//! Health endpoints of a worker process: a hung handler fails `/health/live`
//! within the stall timeout, an idle worker stays live, and readiness follows
//! assignment and the broker.

use std::time::{Duration, Instant};

use pythia_tests::*;

const STALL: Duration = Duration::from_secs(3);

fn status(address: &str, path: &str) -> (u16, String) {
    http_get(address, path).unwrap_or((0, String::new()))
}

#[test]
fn a_hung_handler_fails_liveness_within_the_stall_timeout() {
    let dir = scratch("hung");
    let broker = broker("hung", 2);
    let bootstrap = broker.bootstrap_servers();
    // The gate never opens: every handler hangs.
    let mut worker = WorkerSpec::new(bootstrap, "hung", "hung")
        .env("TEST_GATE_FILE", dir.join("never").display())
        .env("PYTHIA_METRICS__ADDRESS", "127.0.0.1:0")
        .env("PYTHIA_METRICS__LAG_INTERVAL", "200ms")
        .env("PYTHIA_HEALTH__STALL_TIMEOUT", "3s")
        .spawn(&dir, "w");
    let address = worker.metrics_address(Duration::from_secs(60));
    wait_until(Duration::from_secs(60), "the worker to be ready", || {
        status(&address, "/health/ready").0 == 200
    });
    assert_eq!(
        status(&address, "/health/live").0,
        200,
        "live before any work"
    );

    let produced = Instant::now();
    produce(bootstrap, "hung", 2, 0..6);
    let mut body = String::new();
    wait_until(
        STALL + Duration::from_secs(60),
        "/health/live to fail",
        || {
            let (code, text) = status(&address, "/health/live");
            body = text;
            code == 503
        },
    );
    let took = produced.elapsed();
    eprintln!(
        "/health/live failed {took:?} after the messages were produced (stall timeout {STALL:?})"
    );
    assert!(body.contains("stalled") && body.contains("hung/"), "{body}");
    // Lag is only seen once it is read, so the stall clock starts no earlier
    // than the production; liveness must not fail before the stall timeout.
    assert!(
        took >= STALL,
        "live failed after {took:?}, before the stall timeout"
    );
    worker.kill();
}

#[test]
fn an_idle_worker_stays_live_and_readiness_follows_the_broker() {
    let dir = scratch("idle");
    let broker = broker("idle", 2);
    let bootstrap = broker.bootstrap_servers().to_owned();
    produce(&bootstrap, "idle", 2, 0..4);
    let mut worker = WorkerSpec::new(&bootstrap, "idle", "idle")
        .env("PYTHIA_METRICS__ADDRESS", "127.0.0.1:0")
        .env("PYTHIA_METRICS__LAG_INTERVAL", "200ms")
        .env("PYTHIA_HEALTH__STALL_TIMEOUT", "1s")
        .spawn(&dir, "w");
    let address = worker.metrics_address(Duration::from_secs(60));
    wait_until(Duration::from_secs(60), "the worker to be ready", || {
        status(&address, "/health/ready").0 == 200
    });
    wait_until(Duration::from_secs(60), "all processed", || {
        worker.records().unique() == 4
    });
    // Idle for several stall timeouts: every probe says live.
    let until = Instant::now() + Duration::from_secs(4);
    while Instant::now() < until {
        let (code, body) = status(&address, "/health/live");
        assert_eq!(code, 200, "an idle worker must stay live: {body}");
        std::thread::sleep(Duration::from_millis(200));
    }
    let (_, metrics) = status(&address, "/metrics");
    assert_eq!(
        sample(&metrics, "pythia_consumer_lag", &[("group", "idle")]),
        Some(0.0),
        "{metrics}"
    );

    // Broker outage: the worker stops being ready.
    drop(broker);
    let mut body = String::new();
    wait_until(Duration::from_secs(60), "/health/ready to fail", || {
        let (code, text) = status(&address, "/health/ready");
        body = text;
        code == 503
    });
    assert!(body.contains("broker"), "{body}");
    worker.kill();
}
