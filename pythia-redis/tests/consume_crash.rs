//! Crashes and stops: a worker killed under load loses nothing (what it
//! held is claimed by the others, or moved back by the reaper, after
//! `redis.claim_idle`) and duplicates at most its prefetch per kill; a
//! worker stopped with SIGTERM finishes and acknowledges what it holds,
//! duplicates nothing and exits 0. For a stream and for a list.

mod common;

use std::time::Duration;

use common::{Mode, Redis, count_ids, ids, unique, worker_env, workers};

const PREFETCH: usize = 10;

fn env(mode: Mode, input: &str, output: &str) -> Vec<(&'static str, String)> {
    let mut env = worker_env(mode, input, output);
    env.extend([
        ("PYTHIA_REDIS__PREFETCH", PREFETCH.to_string()),
        // Recovery in seconds, not the default 30.
        ("PYTHIA_REDIS__CLAIM_IDLE", "2s".into()),
        ("PYTHIA_REDIS__BLOCK", "200ms".into()),
        // Slow enough that the input outlasts the kills and the stop: three
        // workers with prefetch 10 take 1,500 jobs/s.
        ("TEST_DELAY_MS", "20".into()),
    ]);
    env
}

async fn sigkill_of_one_of_three(mode: Mode) {
    const JOBS: u64 = 6_000;
    const KILLS: usize = 3;
    let mut redis = Redis::connect().await;
    let input = unique(&format!("kill-{}", mode.as_str()));
    let output = format!("{input}.out");
    redis.own(&input);
    let env = env(mode, &input, &output);
    let mut workers = workers();
    for _ in 0..3 {
        workers.spawn(&env);
    }
    redis
        .wait_for_consumers(mode, &input, &input, 3, Duration::from_secs(30))
        .await;
    redis.publish(mode, &input, ids(JOBS)).await;
    // Kill the newest worker every 700 ms, starting a fresh one each time.
    let mut victim = 0;
    for _ in 0..KILLS {
        tokio::time::sleep(Duration::from_millis(700)).await;
        assert!(
            redis.count(mode, &output).await < JOBS as usize - 1000,
            "the input drained before the kills ended: slow the workers down"
        );
        workers.signal(victim, libc::SIGKILL);
        let status = workers.wait(victim, Duration::from_secs(10));
        assert!(!status.success());
        victim = workers.spawn(&env);
    }
    let taken = redis
        .take(
            mode,
            &output,
            JOBS as usize,
            Duration::from_secs(4),
            Duration::from_secs(180),
        )
        .await;
    let (distinct, duplicates) = count_ids(&taken);
    println!(
        "{} mode: {JOBS} jobs, {KILLS} kills: {distinct} done, {duplicates} duplicates",
        mode.as_str()
    );
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
    assert_eq!(redis.left(mode, &input, &input).await, 0, "nothing left");
}

async fn sigterm_finishes_in_flight_work(mode: Mode) {
    const JOBS: u64 = 3_000;
    let mut redis = Redis::connect().await;
    let input = unique(&format!("term-{}", mode.as_str()));
    let output = format!("{input}.out");
    redis.own(&input);
    let env = env(mode, &input, &output);
    let mut workers = workers();
    let stopped = workers.spawn(&env);
    workers.spawn(&env);
    redis
        .wait_for_consumers(mode, &input, &input, 2, Duration::from_secs(30))
        .await;
    redis.publish(mode, &input, ids(JOBS)).await;
    tokio::time::sleep(Duration::from_millis(700)).await;
    assert!(
        redis.count(mode, &output).await < JOBS as usize - 500,
        "the input drained before the stop"
    );
    workers.signal(stopped, libc::SIGTERM);
    let status = workers.wait(stopped, Duration::from_secs(30));
    assert!(
        status.success(),
        "SIGTERM exit: {status}\n{}",
        workers.log(stopped)
    );
    let taken = redis
        .take(
            mode,
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
    assert_eq!(redis.left(mode, &input, &input).await, 0, "nothing left");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stream_sigkill_of_one_of_three_workers_repeatedly_loses_nothing() {
    sigkill_of_one_of_three(Mode::Stream).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn list_sigkill_of_one_of_three_workers_repeatedly_loses_nothing() {
    sigkill_of_one_of_three(Mode::List).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stream_sigterm_finishes_in_flight_work_duplicates_nothing_and_exits_zero() {
    sigterm_finishes_in_flight_work(Mode::Stream).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn list_sigterm_finishes_in_flight_work_duplicates_nothing_and_exits_zero() {
    sigterm_finishes_in_flight_work(Mode::List).await;
}
