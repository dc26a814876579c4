//! `pythia depth` on Redis lists and streams and on NATS JetStream: the
//! figures it prints match what was put on the machine's servers, errors
//! name the flag to fix, and a password is never printed.

mod common;

use std::process::Command;

use common::{PYTHIA, require_nats, require_redis};
use serde_json::Value;

fn depth(args: &[&str]) -> std::process::Output {
    Command::new(PYTHIA)
        .arg("depth")
        .args(args)
        .env_remove("PYTHIA_REDIS__URL")
        .env_remove("PYTHIA_NATS__URL")
        .output()
        .expect("run pythia depth")
}

fn json(output: &std::process::Output) -> Value {
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "pythia depth failed: {stderr}");
    serde_json::from_slice(&output.stdout).expect("JSON")
}

async fn redis() -> redis::aio::MultiplexedConnection {
    require_redis();
    redis::Client::open("redis://127.0.0.1:6379/0")
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .expect("connect to Redis")
}

async fn run(redis: &mut redis::aio::MultiplexedConnection, cmd: &mut redis::Cmd) {
    cmd.query_async::<()>(redis).await.expect("redis command");
}

#[tokio::test]
async fn a_list_counts_what_waits_what_workers_hold_and_live_workers() {
    let mut redis = redis().await;
    let queue = format!("pythia-cli-depth-list-{}", std::process::id());
    let processing = format!("{queue}:processing:worker-1");
    let heartbeat = format!("{queue}:heartbeat:worker-1");
    run(
        &mut redis,
        redis::cmd("LPUSH")
            .arg(&queue)
            .arg(&["a", "b", "c", "d", "e"]),
    )
    .await;
    run(
        &mut redis,
        redis::cmd("LPUSH").arg(&processing).arg(&["x", "y"]),
    )
    .await;
    run(
        &mut redis,
        redis::cmd("SET").arg(&heartbeat).arg("1").arg("EX").arg(60),
    )
    .await;

    let output = tokio::task::spawn_blocking({
        let queue = queue.clone();
        move || depth(&["--broker", "redis-list", "--queue", &queue, "--json"])
    })
    .await
    .unwrap();
    let table = tokio::task::spawn_blocking({
        let queue = queue.clone();
        move || depth(&["--broker", "redis-list", "--queue", &queue])
    })
    .await
    .unwrap();
    run(
        &mut redis,
        redis::cmd("DEL")
            .arg(&queue)
            .arg(&processing)
            .arg(&heartbeat),
    )
    .await;

    let report = json(&output);
    let row = &report[0];
    assert_eq!(row["name"], queue.as_str(), "{report}");
    assert_eq!(row["waiting"], 5, "{report}");
    assert_eq!(row["in_progress"], 2, "{report}");
    assert_eq!(row["consumers"], 1, "{report}");
    let text = String::from_utf8_lossy(&table.stdout);
    let line = text.lines().find(|l| l.starts_with(&queue)).expect("a row");
    assert_eq!(
        line.split_whitespace().collect::<Vec<_>>(),
        [queue.as_str(), "5", "2", "1"]
    );
}

#[tokio::test]
async fn a_stream_group_shows_its_lag_pending_and_length() {
    let mut redis = redis().await;
    let stream = format!("pythia-cli-depth-stream-{}", std::process::id());
    for i in 0..10 {
        run(
            &mut redis,
            redis::cmd("XADD").arg(&stream).arg("*").arg("n").arg(i),
        )
        .await;
    }
    run(
        &mut redis,
        redis::cmd("XGROUP")
            .arg("CREATE")
            .arg(&stream)
            .arg("workers")
            .arg("0"),
    )
    .await;
    // A consumer takes 3 and acknowledges none of them.
    let _: redis::Value = redis::cmd("XREADGROUP")
        .arg("GROUP")
        .arg("workers")
        .arg("worker-1")
        .arg("COUNT")
        .arg(3)
        .arg("STREAMS")
        .arg(&stream)
        .arg(">")
        .query_async(&mut redis)
        .await
        .expect("XREADGROUP");

    let output = tokio::task::spawn_blocking({
        let stream = stream.clone();
        move || {
            depth(&[
                "--broker",
                "redis-streams",
                "--stream",
                &stream,
                "--group",
                "workers",
                "--json",
            ])
        }
    })
    .await
    .unwrap();
    let missing = tokio::task::spawn_blocking({
        let stream = stream.clone();
        move || {
            depth(&[
                "--broker",
                "redis-streams",
                "--stream",
                &stream,
                "--group",
                "nobody",
            ])
        }
    })
    .await
    .unwrap();
    run(&mut redis, redis::cmd("DEL").arg(&stream)).await;

    let report = json(&output);
    let row = &report[0];
    assert_eq!(row["name"], format!("{stream}/workers"), "{report}");
    assert_eq!(row["waiting"], 7, "{report}");
    assert_eq!(row["in_progress"], 3, "{report}");
    assert_eq!(row["consumers"], 1, "{report}");
    assert_eq!(row["length"], 10, "{report}");
    assert!(!missing.status.success());
    let stderr = String::from_utf8_lossy(&missing.stderr);
    assert!(
        stderr.contains("`nobody`") && stderr.contains("workers") && stderr.contains("--group"),
        "{stderr}"
    );
}

#[test]
fn a_redis_password_is_never_printed() {
    require_redis();
    // A server that requires no password refuses AUTH with one: the error
    // is reported without the password.
    let output = depth(&[
        "--broker",
        "redis-list",
        "--queue",
        "jobs",
        "--url",
        "redis://someone:not-the-password@127.0.0.1:6379/0",
    ]);
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!stderr.contains("not-the-password"), "{stderr}");
    assert!(stderr.contains("someone:***"), "{stderr}");
}

#[tokio::test]
async fn a_nats_consumer_shows_pending_and_unacknowledged_messages() {
    require_nats();
    let client = async_nats::connect("nats://127.0.0.1:4222")
        .await
        .expect("connect to NATS");
    let jetstream = async_nats::jetstream::new(client);
    let name = format!("PYTHIA_CLI_DEPTH_{}", std::process::id());
    let subject = format!("pythia-cli-depth-{}", std::process::id());
    let stream = jetstream
        .create_stream(async_nats::jetstream::stream::Config {
            name: name.clone(),
            subjects: vec![subject.clone()],
            retention: async_nats::jetstream::stream::RetentionPolicy::WorkQueue,
            ..Default::default()
        })
        .await
        .expect("create the stream");
    let consumer: async_nats::jetstream::consumer::PullConsumer = stream
        .create_consumer(async_nats::jetstream::consumer::pull::Config {
            durable_name: Some("workers".into()),
            ack_policy: async_nats::jetstream::consumer::AckPolicy::Explicit,
            ..Default::default()
        })
        .await
        .expect("create the consumer");
    for i in 0..6 {
        jetstream
            .publish(subject.clone(), format!("{i}").into())
            .await
            .expect("publish")
            .await
            .expect("stored");
    }
    // Two delivered and not acknowledged.
    use futures::StreamExt as _;
    let mut batch = consumer
        .fetch()
        .max_messages(2)
        .messages()
        .await
        .expect("fetch");
    let mut taken = 0;
    while let Some(message) = batch.next().await {
        message.expect("a message");
        taken += 1;
    }
    assert_eq!(taken, 2);

    let output = tokio::task::spawn_blocking({
        let name = name.clone();
        move || {
            depth(&[
                "--broker",
                "nats",
                "--stream",
                &name,
                "--consumer",
                "workers",
                "--json",
            ])
        }
    })
    .await
    .unwrap();
    let missing = tokio::task::spawn_blocking({
        let name = name.clone();
        move || {
            depth(&[
                "--broker",
                "nats",
                "--stream",
                &name,
                "--consumer",
                "nobody",
            ])
        }
    })
    .await
    .unwrap();
    jetstream
        .delete_stream(&name)
        .await
        .expect("delete the stream");

    let report = json(&output);
    let row = &report[0];
    assert_eq!(row["name"], format!("{name}/workers"), "{report}");
    assert_eq!(row["waiting"], 4, "{report}");
    assert_eq!(row["in_progress"], 2, "{report}");
    assert!(row["consumers"].is_null(), "{report}");
    assert!(!missing.status.success());
    let stderr = String::from_utf8_lossy(&missing.stderr);
    assert!(
        stderr.contains("`nobody`") && stderr.contains("--consumer"),
        "{stderr}"
    );
}
