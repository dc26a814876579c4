//! The poison matrix: invalid JSON, a wrong shape, an empty payload, an
//! oversize payload and non-UTF-8 bytes each go to the dead-letter queue
//! with the reason in its `pythia.dlq.*` headers, and the queue keeps
//! flowing: every good job around them is processed.

mod common;

use std::time::Duration;

use common::{Broker, count_ids, unique, workers};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_poison_message_is_dead_lettered_with_its_reason_and_the_queue_flows() {
    let mut broker = Broker::connect().await;
    let input = unique("poison");
    let output = format!("{input}.out");
    let dead = format!("{input}.dlq");
    broker.queue(&input).await;
    broker.queue(&output).await;
    broker.own(&dead);
    let poison: Vec<(&str, Vec<u8>, &str)> = vec![
        ("invalid json", b"{not json".to_vec(), "decode"),
        ("wrong shape", br#"{"name": "x"}"#.to_vec(), "decode"),
        ("empty", Vec::new(), "decode"),
        (
            "oversize",
            format!(r#"{{"id": 1, "pad": "{}"}}"#, "x".repeat(4096)).into_bytes(),
            "too_large",
        ),
        ("non-utf-8", vec![0xff, 0xfe, 0x80, 0x7b], "decode"),
    ];
    let good = 200u64;
    let mut payloads = Vec::new();
    for id in 0..good {
        payloads.push(format!(r#"{{"id": {id}}}"#).into_bytes());
        if id % 40 == 20 {
            let (_, payload, _) = &poison[(id / 40) as usize];
            payloads.push(payload.clone());
        }
    }
    assert_eq!(payloads.len() as u64, good + poison.len() as u64);
    let mut workers = workers();
    workers.spawn(&[
        ("PYTHIA_RABBITMQ__QUEUE", input.clone()),
        ("PYTHIA_RABBITMQ__OUTPUT", output.clone()),
        ("PYTHIA_WORKER__MAX_MESSAGE_BYTES", "1024".into()),
        ("TEST_CODEC", "json".into()),
        ("TEST_OUTPUT", "1".into()),
    ]);
    broker
        .wait_for_consumers(&input, 1, Duration::from_secs(30))
        .await;
    broker.publish(&input, payloads).await;
    let done = broker
        .take(
            &output,
            good as usize,
            Duration::from_secs(1),
            Duration::from_secs(60),
        )
        .await;
    assert_eq!(
        count_ids(&done),
        (good as usize, 0),
        "every good job once:\n{}",
        workers.log(0)
    );
    let letters = broker
        .take(
            &dead,
            poison.len(),
            Duration::from_secs(1),
            Duration::from_secs(30),
        )
        .await;
    assert_eq!(letters.len(), poison.len(), "{letters:#?}");
    for (case, payload, kind) in &poison {
        let letter = letters
            .iter()
            .find(|l| &l.payload == payload)
            .unwrap_or_else(|| panic!("no dead letter for {case}: {letters:#?}"));
        assert_eq!(letter.headers["pythia.dlq.kind"], *kind, "{case}");
        assert!(!letter.headers["pythia.dlq.reason"].is_empty(), "{case}");
        assert_eq!(letter.headers["pythia.dlq.topic"], input, "{case}");
    }
    workers.stop_all();
    assert_eq!(
        broker.depth(&input).await.0,
        0,
        "nothing left unacknowledged"
    );
}
