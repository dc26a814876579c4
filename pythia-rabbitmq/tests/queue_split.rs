//! Two worker processes on one queue with prefetch 10 share it fairly:
//! both process, the split of 10,000 jobs is within 40/60, nothing is lost
//! or duplicated, counted from the outputs they published. Also measures
//! the throughput of two instances against one with 5 ms of I/O per job
//! (printed, not asserted: timings are not test assertions).

mod common;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use common::{Broker, count_ids, ids, unique, workers};

const JOBS: u64 = 10_000;

/// Runs `instances` workers over `JOBS` jobs; returns the jobs each
/// process did (by pid) and the time from the first publish to the last output.
async fn run(instances: usize) -> (HashMap<String, usize>, Duration) {
    let mut broker = Broker::connect().await;
    let input = unique("split");
    let output = format!("{input}.out");
    broker.queue(&input).await;
    broker.queue(&output).await;
    broker.own(&format!("{input}.dlq"));
    let mut workers = workers();
    for _ in 0..instances {
        workers.spawn(&[
            ("PYTHIA_RABBITMQ__QUEUE", input.clone()),
            ("PYTHIA_RABBITMQ__OUTPUT", output.clone()),
            ("PYTHIA_RABBITMQ__PREFETCH", "10".into()),
            ("TEST_OUTPUT", "1".into()),
            ("TEST_DELAY_MS", "5".into()),
        ]);
    }
    broker
        .wait_for_consumers(&input, instances as u32, Duration::from_secs(30))
        .await;
    let started = Instant::now();
    broker.publish(&input, ids(JOBS)).await;
    let taken = broker
        .take(
            &output,
            JOBS as usize,
            Duration::from_secs(2),
            Duration::from_secs(180),
        )
        .await;
    let elapsed = started.elapsed() - Duration::from_secs(2).min(started.elapsed());
    let (distinct, duplicates) = count_ids(&taken);
    assert_eq!(distinct, JOBS as usize, "lost jobs:\n{}", workers.log(0));
    assert_eq!(duplicates, 0, "duplicated jobs");
    workers.stop_all();
    let mut by_pid: HashMap<String, usize> = HashMap::new();
    for t in &taken {
        *by_pid.entry(t.headers["test.pid"].clone()).or_default() += 1;
    }
    assert_eq!(broker.depth(&input).await.0, 0, "the queue is drained");
    (by_pid, elapsed)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_workers_split_ten_thousand_jobs_fairly_without_loss_or_duplicates() {
    let (alone, one_time) = run(1).await;
    assert_eq!(alone.len(), 1);
    let (split, two_time) = run(2).await;
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
        "split {split:?}; throughput with 5 ms of I/O per job: 1 instance {one:.0} jobs/s, 2 instances {two:.0} jobs/s, ratio {:.2}",
        two / one
    );
}
