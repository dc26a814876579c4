//! `pythia depth`: a queue's ready messages and consumers as RabbitMQ reports
//! them over AMQP, `unacked` said to be unknown rather than 0, and errors
//! that name the fix without showing a password.

mod common;

use std::process::Command;

use common::{PYTHIA, require_rabbitmq};
use lapin::options::{ConfirmSelectOptions, QueueDeclareOptions, QueueDeleteOptions};
use lapin::types::FieldTable;
use lapin::{BasicProperties, Connection, ConnectionProperties};
use serde_json::Value;

fn depth(args: &[&str]) -> std::process::Output {
    Command::new(PYTHIA)
        .arg("depth")
        .args(args)
        .env_remove("PYTHIA_RABBITMQ__URL")
        .output()
        .expect("run pythia depth")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn depth_reports_ready_and_consumers_and_leaves_unacked_unknown() {
    require_rabbitmq();
    let queue = format!("pythia-cli-depth-{}", std::process::id());
    let connection =
        Connection::connect("amqp://127.0.0.1:5672/%2f", ConnectionProperties::default())
            .await
            .expect("connect");
    let channel = connection.create_channel().await.expect("channel");
    channel
        .confirm_select(ConfirmSelectOptions::default())
        .await
        .expect("confirm.select");
    channel
        .queue_declare(
            queue.as_str().into(),
            QueueDeclareOptions::durable(),
            FieldTable::default(),
        )
        .await
        .expect("declare");
    for i in 0..7u8 {
        channel
            .basic_publish(
                "".into(),
                queue.as_str().into(),
                Default::default(),
                &[i],
                BasicProperties::default(),
            )
            .await
            .expect("publish");
    }
    channel.wait_for_confirms().await.expect("confirms");

    let output = tokio::task::spawn_blocking({
        let queue = queue.clone();
        move || depth(&["--queue", &queue, "--json"])
    })
    .await
    .unwrap();
    let table = tokio::task::spawn_blocking({
        let queue = queue.clone();
        move || depth(&["--queue", &queue])
    })
    .await
    .unwrap();
    channel
        .queue_delete(queue.as_str().into(), QueueDeleteOptions::default())
        .await
        .expect("delete");
    let _ = connection.close(200, "done".into()).await;

    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "pythia depth failed: {stderr}");
    let report: Value = serde_json::from_slice(&output.stdout).expect("JSON");
    let row = &report[0];
    assert_eq!(row["queue"], queue.as_str());
    assert_eq!(row["messages_ready"], 7, "{report}");
    assert_eq!(row["consumers"], 0, "{report}");
    assert!(row["messages_unacknowledged"].is_null(), "{report}");
    assert!(
        row["source"].as_str().unwrap().contains("passive"),
        "{report}"
    );

    let text = String::from_utf8_lossy(&table.stdout);
    let line = text
        .lines()
        .find(|l| l.starts_with(&queue))
        .expect("a row for the queue");
    assert_eq!(
        line.split_whitespace().collect::<Vec<_>>(),
        [queue.as_str(), "7", "-", "0"]
    );
    assert!(text.contains("UNACKED is not known"), "{text}");
}

#[test]
fn a_missing_queue_is_named_with_the_flag() {
    require_rabbitmq();
    let output = depth(&["--queue", "pythia-cli-depth-no-such-queue"]);
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("pythia-cli-depth-no-such-queue"),
        "{stderr}"
    );
    assert!(stderr.contains("--queue"), "{stderr}");
}

#[test]
fn a_wrong_password_is_never_printed() {
    require_rabbitmq();
    let output = depth(&[
        "--queue",
        "jobs",
        "--url",
        "amqp://guest:not-the-password@127.0.0.1:5672/%2f",
    ]);
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!stderr.contains("not-the-password"), "{stderr}");
    assert!(stderr.contains("guest:***"), "{stderr}");
    assert!(stderr.contains("--url"), "{stderr}");
}
