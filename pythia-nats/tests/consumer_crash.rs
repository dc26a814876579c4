//! Crashes and stops: a worker killed under load loses nothing (what it
//! held is delivered again after `ack_wait`, to the others) and duplicates
//! at most what it held per kill; a worker stopped with SIGTERM finishes
//! and acknowledges what it holds, duplicates nothing and exits 0.

mod common;

use std::time::Duration;

use common::{Broker, Setup, count_ids, ids, workers};

const CONCURRENCY: usize = 10;

fn worker_env(setup: &Setup) -> Vec<(&'static str, String)> {
    setup.env(&[
        ("PYTHIA_NATS__CONCURRENCY", "10"),
        // Short, so that what a killed worker held comes back quickly.
        ("PYTHIA_NATS__ACK_WAIT", "2s"),
        // Slow enough that the stream outlasts the kills and the stop: three
        // workers holding 10 each take 1,500 jobs/s.
        ("TEST_DELAY_MS", "20"),
    ])
}

/// Messages of the consumer not yet delivered.
async fn pending(broker: &Broker, setup: &Setup) -> u64 {
    let info = broker.consumer(&setup.stream, &setup.consumer).await;
    info.expect("the consumer exists").num_pending
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_of_one_of_three_workers_repeatedly_loses_nothing() {
    const JOBS: u64 = 9_000;
    const KILLS: usize = 3;
    let mut broker = Broker::connect().await;
    let setup = Setup::new(&mut broker, "kill").await;
    let env = worker_env(&setup);
    let mut workers = workers();
    for _ in 0..3 {
        workers.spawn(&env);
    }
    broker
        .wait_for_fetchers(&setup.stream, &setup.consumer, 3, Duration::from_secs(30))
        .await;
    broker.publish(&setup.input, ids(JOBS)).await;
    // Kill the newest worker every 700 ms, starting a fresh one each time.
    let mut victim = 0;
    for _ in 0..KILLS {
        tokio::time::sleep(Duration::from_millis(700)).await;
        assert!(
            pending(&broker, &setup).await > 0,
            "the stream drained before the kills ended: slow the workers down"
        );
        workers.signal(victim, libc::SIGKILL);
        let status = workers.wait(victim, Duration::from_secs(10));
        assert!(!status.success());
        victim = workers.spawn(&env);
    }
    let taken = broker
        .take(
            &setup.output_stream,
            JOBS as usize,
            Duration::from_secs(4),
            Duration::from_secs(180),
        )
        .await;
    let (distinct, duplicates) = count_ids(&taken);
    println!("{JOBS} jobs, {KILLS} kills: {distinct} done, {duplicates} duplicates");
    assert_eq!(
        distinct,
        JOBS as usize,
        "jobs lost:\n{}",
        workers.log(victim)
    );
    assert!(
        duplicates <= KILLS * CONCURRENCY,
        "{duplicates} duplicates for {KILLS} kills with concurrency {CONCURRENCY}"
    );
    workers.stop_all();
    assert_eq!(
        broker.messages(&setup.stream).await,
        0,
        "everything acknowledged"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_finishes_in_flight_work_duplicates_nothing_and_exits_zero() {
    const JOBS: u64 = 4_000;
    let mut broker = Broker::connect().await;
    let setup = Setup::new(&mut broker, "term").await;
    let env = worker_env(&setup);
    let mut workers = workers();
    let stopped = workers.spawn(&env);
    workers.spawn(&env);
    broker
        .wait_for_fetchers(&setup.stream, &setup.consumer, 2, Duration::from_secs(30))
        .await;
    broker.publish(&setup.input, ids(JOBS)).await;
    tokio::time::sleep(Duration::from_millis(700)).await;
    assert!(
        pending(&broker, &setup).await > 0,
        "the stream drained before the stop"
    );
    workers.signal(stopped, libc::SIGTERM);
    let status = workers.wait(stopped, Duration::from_secs(30));
    assert!(
        status.success(),
        "SIGTERM exit: {status}\n{}",
        workers.log(stopped)
    );
    let taken = broker
        .take(
            &setup.output_stream,
            JOBS as usize,
            Duration::from_secs(4),
            Duration::from_secs(180),
        )
        .await;
    let (distinct, duplicates) = count_ids(&taken);
    assert_eq!(distinct, JOBS as usize, "jobs lost");
    assert_eq!(duplicates, 0, "a graceful stop duplicated jobs");
    let by_stopped = taken
        .iter()
        .filter(|t| t.headers["test.pid"] == workers.pid(stopped).to_string())
        .count();
    assert!(
        by_stopped > 0,
        "the stopped worker had processed jobs before its stop"
    );
    workers.stop_all();
    assert_eq!(
        broker.messages(&setup.stream).await,
        0,
        "everything acknowledged"
    );
}
