//! Stream mode: the consumers of stopped instances do not pile up in the
//! group. One that holds nothing and has not been seen for ten
//! `redis.claim_idle` periods is removed; one that still holds an entry is
//! removed only after its entry was claimed and processed, so nothing is
//! lost; the live instance stays.

mod common;

use std::time::{Duration, Instant};

use redis::Value;

use common::{Mode, Redis, unique, worker_env, workers};

/// The names of the group's consumers.
async fn consumers(redis: &mut Redis, stream: &str) -> Vec<String> {
    let reply: Value = redis::cmd("XINFO")
        .arg("CONSUMERS")
        .arg(stream)
        .arg(stream)
        .query_async(redis.conn())
        .await
        .expect("XINFO CONSUMERS");
    let Value::Array(consumers) = reply else {
        return Vec::new();
    };
    consumers
        .into_iter()
        .filter_map(|c| match c {
            Value::Array(flat) => match flat.get(1) {
                Some(Value::BulkString(name)) => Some(String::from_utf8_lossy(name).into_owned()),
                _ => None,
            },
            _ => None,
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stopped_consumers_are_removed_once_they_hold_nothing() {
    let mut redis = Redis::connect().await;
    let input = unique("consumers");
    let output = format!("{input}.out");
    redis.own(&input);
    {
        let conn = redis.conn();
        let _: Value = redis::cmd("XGROUP")
            .arg("CREATE")
            .arg(&input)
            .arg(&input)
            .arg("0")
            .arg("MKSTREAM")
            .query_async(conn)
            .await
            .unwrap();
        let _: Value = redis::cmd("XGROUP")
            .arg("CREATECONSUMER")
            .arg(&input)
            .arg(&input)
            .arg("idle-ghost")
            .query_async(conn)
            .await
            .unwrap();
        let _: String = redis::cmd("XADD")
            .arg(&input)
            .arg("*")
            .arg("payload")
            .arg("held")
            .query_async(conn)
            .await
            .unwrap();
        // `holding-ghost` takes the entry and never acknowledges it.
        let _: Value = redis::cmd("XREADGROUP")
            .arg("GROUP")
            .arg(&input)
            .arg("holding-ghost")
            .arg("COUNT")
            .arg(1)
            .arg("STREAMS")
            .arg(&input)
            .arg(">")
            .query_async(conn)
            .await
            .unwrap();
    }
    let mut env = worker_env(Mode::Stream, &input, &output);
    env.extend([
        ("PYTHIA_REDIS__CONSUMER", "live".into()),
        ("PYTHIA_REDIS__CLAIM_IDLE", "1s".into()),
        ("PYTHIA_REDIS__BLOCK", "200ms".into()),
    ]);
    let mut workers = workers();
    workers.spawn(&env);
    let done = redis
        .take(
            Mode::Stream,
            &output,
            1,
            Duration::from_millis(500),
            Duration::from_secs(20),
        )
        .await;
    assert_eq!(done.len(), 1, "the held entry was claimed and processed");
    assert_eq!(done[0].payload, b"held");
    // Ten claim_idle periods unseen, plus a renewal period.
    let end = Instant::now() + Duration::from_secs(25);
    loop {
        let names = consumers(&mut redis, &input).await;
        if names == ["live"] {
            break;
        }
        assert!(
            Instant::now() < end,
            "the stopped consumers were not removed: {names:?}\n{}",
            workers.log(0)
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    workers.stop_all();
    assert_eq!(
        redis.left(Mode::Stream, &input, &input).await,
        0,
        "nothing left"
    );
}
