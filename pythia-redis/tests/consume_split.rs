//! Two worker processes on one input with prefetch 10 share it: both
//! process, the split of 10,000 jobs is within 40/60, nothing is lost or
//! duplicated, counted from the outputs they wrote. Also measures the
//! throughput of two instances against one with 5 ms of I/O per job
//! (printed, not asserted: timings are not test assertions). For a stream
//! read in a group and for a list.

mod common;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use common::{Mode, Redis, by_pid, count_ids, ids, unique, worker_env, workers};

const JOBS: u64 = 10_000;

/// Runs `instances` workers over `JOBS` jobs; returns the jobs each
/// process did (by pid) and the time from the first publish to the last output.
async fn run(mode: Mode, instances: usize) -> (HashMap<String, usize>, Duration) {
    let mut redis = Redis::connect().await;
    let input = unique(&format!("split-{}", mode.as_str()));
    let output = format!("{input}.out");
    redis.own(&input);
    let mut env = worker_env(mode, &input, &output);
    env.push(("PYTHIA_REDIS__PREFETCH", "10".into()));
    env.push(("TEST_DELAY_MS", "5".into()));
    let mut workers = workers();
    for _ in 0..instances {
        workers.spawn(&env);
    }
    redis
        .wait_for_consumers(mode, &input, &input, instances, Duration::from_secs(30))
        .await;
    let quiet = Duration::from_secs(2);
    let started = Instant::now();
    redis.publish(mode, &input, ids(JOBS)).await;
    let taken = redis
        .take(
            mode,
            &output,
            JOBS as usize,
            quiet,
            Duration::from_secs(180),
        )
        .await;
    let elapsed = started.elapsed().saturating_sub(quiet);
    let (distinct, duplicates) = count_ids(&taken);
    assert_eq!(distinct, JOBS as usize, "lost jobs:\n{}", workers.log(0));
    assert_eq!(duplicates, 0, "duplicated jobs");
    workers.stop_all();
    assert_eq!(
        redis.left(mode, &input, &input).await,
        0,
        "the input is drained"
    );
    (by_pid(&taken), elapsed)
}

async fn two_workers_split(mode: Mode) {
    let (alone, one_time) = run(mode, 1).await;
    assert_eq!(alone.len(), 1);
    let (split, two_time) = run(mode, 2).await;
    assert_eq!(split.len(), 2, "both workers processed: {split:?}");
    for (pid, jobs) in &split {
        let share = *jobs as f64 / JOBS as f64;
        assert!(
            (0.4..=0.6).contains(&share),
            "worker {pid} did {jobs} of {JOBS} jobs ({:.1}%): {split:?}",
            share * 100.0
        );
    }
    let one = JOBS as f64 / one_time.as_secs_f64();
    let two = JOBS as f64 / two_time.as_secs_f64();
    println!(
        "{} mode: split {split:?}; throughput with 5 ms of I/O per job: 1 instance {one:.0} jobs/s, 2 instances {two:.0} jobs/s, ratio {:.2}",
        mode.as_str(),
        two / one
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stream_two_workers_split_ten_thousand_jobs_fairly_without_loss_or_duplicates() {
    two_workers_split(Mode::Stream).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn list_two_workers_split_ten_thousand_jobs_fairly_without_loss_or_duplicates() {
    two_workers_split(Mode::List).await;
}
