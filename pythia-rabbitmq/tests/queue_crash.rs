//! Crashes and stops: a worker killed under load loses nothing (its
//! unacknowledged deliveries go to the others) and duplicates at most its
//! prefetch per kill; a worker stopped with SIGTERM finishes and
//! acknowledges what it holds, duplicates nothing and exits 0.

mod common;

use std::time::Duration;

use common::{Broker, count_ids, ids, unique, workers};

const PREFETCH: usize = 10;

fn worker_env(input: &str, output: &str) -> Vec<(&'static str, String)> {
    vec![
        ("PYTHIA_RABBITMQ__QUEUE", input.to_owned()),
        ("PYTHIA_RABBITMQ__OUTPUT", output.to_owned()),
        ("PYTHIA_RABBITMQ__PREFETCH", PREFETCH.to_string()),
        ("TEST_OUTPUT", "1".into()),
        // Slow enough that the queue outlasts the kills and the stop on a
        // fast machine: three workers with prefetch 10 take 1,500 jobs/s.
        ("TEST_DELAY_MS", "20".into()),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_of_one_of_three_workers_repeatedly_loses_nothing() {
    const JOBS: u64 = 6_000;
    const KILLS: usize = 3;
    let mut broker = Broker::connect().await;
    let input = unique("kill");
    let output = format!("{input}.out");
    broker.queue(&input).await;
    broker.queue(&output).await;
    broker.own(&format!("{input}.dlq"));
    let env = worker_env(&input, &output);
    let mut workers = workers();
    for _ in 0..3 {
        workers.spawn(&env);
    }
    broker
        .wait_for_consumers(&input, 3, Duration::from_secs(30))
        .await;
    broker.publish(&input, ids(JOBS)).await;
    // Kill the newest worker every 700 ms, starting a fresh one each time.
    let mut victim = 0;
    for _ in 0..KILLS {
        tokio::time::sleep(Duration::from_millis(700)).await;
        let (ready, _) = broker.depth(&input).await;
        assert!(
            ready > 0,
            "the queue drained before the kills ended: slow the workers down"
        );
        workers.signal(victim, libc::SIGKILL);
        let status = workers.wait(victim, Duration::from_secs(10));
        assert!(!status.success());
        victim = workers.spawn(&env);
    }
    let taken = broker
        .take(
            &output,
            JOBS as usize,
            Duration::from_secs(3),
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
        duplicates <= KILLS * PREFETCH,
        "{duplicates} duplicates for {KILLS} kills with prefetch {PREFETCH}"
    );
    workers.stop_all();
    assert_eq!(broker.depth(&input).await.0, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_finishes_in_flight_work_duplicates_nothing_and_exits_zero() {
    const JOBS: u64 = 3_000;
    let mut broker = Broker::connect().await;
    let input = unique("term");
    let output = format!("{input}.out");
    broker.queue(&input).await;
    broker.queue(&output).await;
    broker.own(&format!("{input}.dlq"));
    let env = worker_env(&input, &output);
    let mut workers = workers();
    let stopped = workers.spawn(&env);
    workers.spawn(&env);
    broker
        .wait_for_consumers(&input, 2, Duration::from_secs(30))
        .await;
    broker.publish(&input, ids(JOBS)).await;
    tokio::time::sleep(Duration::from_millis(700)).await;
    assert!(
        broker.depth(&input).await.0 > 0,
        "the queue drained before the stop"
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
            &output,
            JOBS as usize,
            Duration::from_secs(3),
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
}
