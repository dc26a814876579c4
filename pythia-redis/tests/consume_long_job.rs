//! A job that runs longer than `redis.claim_idle` stays with its instance
//! while the instance lives: the instance renews what it holds every third
//! of `claim_idle`, so the other instance, which claims what is idle that
//! long, never takes it, and it is processed once. For a stream and for a
//! list.

mod common;

use std::time::Duration;

use redis::Value;

use common::{Mode, Redis, count_ids, ids, unique, worker_env, workers};

/// What is held while the long job runs: the delivery counts of the
/// entries pending in the group (stream mode), or the elements of the
/// processing lists (list mode).
async fn held(redis: &mut Redis, mode: Mode, input: &str) -> Vec<String> {
    match mode {
        Mode::Stream => {
            let reply: Value = redis::cmd("XPENDING")
                .arg(input)
                .arg(input)
                .arg("-")
                .arg("+")
                .arg(100)
                .query_async(redis.conn())
                .await
                .expect("XPENDING");
            let Value::Array(lines) = reply else {
                return Vec::new();
            };
            lines
                .into_iter()
                .filter_map(|line| match line {
                    Value::Array(parts) => match parts.get(3) {
                        Some(Value::Int(n)) => Some(format!("deliveries={n}")),
                        _ => None,
                    },
                    _ => None,
                })
                .collect()
        }
        Mode::List => {
            let keys: Vec<String> = redis::cmd("KEYS")
                .arg(format!("{input}:processing:*"))
                .query_async(redis.conn())
                .await
                .expect("KEYS");
            let mut out = Vec::new();
            for key in keys {
                let items: Vec<String> = redis::cmd("LRANGE")
                    .arg(&key)
                    .arg(0)
                    .arg(-1)
                    .query_async(redis.conn())
                    .await
                    .expect("LRANGE");
                out.extend(items);
            }
            out
        }
    }
}

async fn a_long_job_is_not_taken_from_its_live_instance(mode: Mode) {
    let mut redis = Redis::connect().await;
    let input = unique(&format!("long-{}", mode.as_str()));
    let output = format!("{input}.out");
    redis.own(&input);
    let mut env = worker_env(mode, &input, &output);
    env.extend([
        ("PYTHIA_REDIS__CLAIM_IDLE", "1s".into()),
        ("PYTHIA_REDIS__BLOCK", "200ms".into()),
        ("TEST_SLOW", "slow".into()),
        // Four times claim_idle.
        ("TEST_SLOW_MS", "4000".into()),
    ]);
    let mut workers = workers();
    workers.spawn(&env);
    workers.spawn(&env);
    redis
        .wait_for_consumers(mode, &input, &input, 2, Duration::from_secs(30))
        .await;
    redis.publish(mode, &input, [b"slow".to_vec()]).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    redis.publish(mode, &input, ids(100)).await;
    // Three claim_idle periods into the job: still held once, by one instance.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let held_now = held(&mut redis, mode, &input).await;
    match mode {
        Mode::Stream => assert_eq!(held_now, ["deliveries=1"], "the long job was claimed"),
        Mode::List => assert_eq!(held_now, ["slow"], "the long job was moved back"),
    }
    let taken = redis
        .take(
            mode,
            &output,
            101,
            Duration::from_secs(3),
            Duration::from_secs(60),
        )
        .await;
    let slow = taken.iter().filter(|t| t.payload == b"slow").count();
    assert_eq!(
        slow,
        1,
        "the long job ran once:\n{}\n{}",
        workers.log(0),
        workers.log(1)
    );
    assert_eq!(count_ids(&taken), (101, 0), "every job once");
    workers.stop_all();
    assert_eq!(redis.left(mode, &input, &input).await, 0, "nothing left");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stream_a_job_longer_than_claim_idle_is_not_claimed_while_its_instance_lives() {
    a_long_job_is_not_taken_from_its_live_instance(Mode::Stream).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn list_a_job_longer_than_claim_idle_is_not_reaped_while_its_instance_lives() {
    a_long_job_is_not_taken_from_its_live_instance(Mode::List).await;
}
