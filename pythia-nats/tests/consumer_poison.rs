//! Poison messages: payloads that do not decode and a job whose `process`
//! fails go to the dead-letter subject (`<subject>.dlq`, in the stream the
//! worker creates for it) with the reason in its `pythia.dlq.*` headers, and
//! the rest keeps flowing: every good job around them is processed.

mod common;

use std::time::Duration;

use common::{Broker, Setup, count_ids, workers};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_poison_message_is_dead_lettered_with_its_reason_and_the_rest_flows() {
    const FAILING: u64 = 1_000_000;
    let mut broker = Broker::connect().await;
    let setup = Setup::new(&mut broker, "poison").await;
    let (dead_subject, dead_stream) = setup.dead_letters();
    let poison: Vec<(&str, Vec<u8>, &str)> = vec![
        ("invalid json", b"{not json".to_vec(), "decode"),
        ("wrong shape", br#"{"name": "x"}"#.to_vec(), "decode"),
        ("empty", Vec::new(), "decode"),
        ("non-utf-8", vec![0xff, 0xfe, 0x80, 0x7b], "decode"),
        (
            "process error",
            format!(r#"{{"id": {FAILING}}}"#).into_bytes(),
            "permanent",
        ),
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
    let failing = FAILING.to_string();
    workers.spawn(&setup.env(&[
        ("TEST_CODEC", "json"),
        ("TEST_FAIL_ID", &failing),
        ("PYTHIA_WORKER__RETRY__MAX_ATTEMPTS", "1"),
    ]));
    broker
        .wait_for_fetchers(&setup.stream, &setup.consumer, 1, Duration::from_secs(30))
        .await;
    broker.publish(&setup.input, payloads).await;
    let done = broker
        .take(
            &setup.output_stream,
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
            &dead_stream,
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
        assert_eq!(letter.headers["pythia.dlq.topic"], setup.input, "{case}");
    }
    let refused = letters
        .iter()
        .find(|l| l.headers["pythia.dlq.kind"] == "permanent")
        .unwrap();
    assert!(
        refused.headers["pythia.dlq.reason"].contains("refused by the test"),
        "{refused:?}"
    );
    assert!(dead_subject.ends_with(".dlq"));
    workers.stop_all();
    assert_eq!(
        broker.messages(&setup.stream).await,
        0,
        "nothing left unacknowledged"
    );
}
