//! Poison and bad input: every message that cannot be processed lands in the
//! dead-letter topic with its reason, unchanged, and its partition keeps
//! flowing; processed + dead-lettered = produced, and everything commits.
//! Runs on the broker `TEST_BROKER` selects.

use std::collections::BTreeMap;
use std::time::Duration;

use pythia_tests::*;

const PARTITIONS: i32 = 4;
const LIMIT: usize = 1000;

/// The test's input: `(partition, payload)` and, for bad ones, the expected
/// dead-letter kind.
type Case = (i32, Option<Vec<u8>>, Option<&'static str>);

fn json_cases() -> Vec<Case> {
    let too_large = format!(r#"{{"id":1,"pad":"{}"}}"#, "x".repeat(2 * LIMIT));
    let bad: [(Option<Vec<u8>>, &str); 6] = [
        (Some(br#"{"id":"#.to_vec()), "decode"),       // invalid JSON
        (Some(br#"{"name":"x"}"#.to_vec()), "decode"), // valid JSON, wrong shape
        (Some(Vec::new()), "decode"),                  // empty
        (None, "decode"),                              // null
        (Some(too_large.into_bytes()), "too_large"),   // over worker.max_message_bytes
        (Some(vec![0xff, 0xfe, b'{']), "decode"),      // not UTF-8 at all
    ];
    let mut cases = Vec::new();
    for i in 0..200u64 {
        let partition = (i % PARTITIONS as u64) as i32;
        cases.push((
            partition,
            Some(format!(r#"{{"id":{i}}}"#).into_bytes()),
            None,
        ));
        // Every 30th message is followed by a bad one in the same partition.
        if i % 30 == 0 {
            let (payload, kind) = bad[(i / 30) as usize % bad.len()].clone();
            cases.push((partition, payload, Some(kind)));
        }
    }
    cases
}

fn text_cases() -> Vec<Case> {
    let mut cases = Vec::new();
    for i in 0..100u64 {
        let partition = (i % PARTITIONS as u64) as i32;
        cases.push((partition, Some(format!("line {i}").into_bytes()), None));
        if i % 25 == 0 {
            cases.push((
                partition,
                Some(vec![b'o', 0xff, 0xfe, b'k']),
                Some("decode"),
            ));
        }
    }
    cases
}

/// Runs a worker with `codec` over `cases` on `topic`, and checks the outcome.
fn check(codec: &str, topic: &str, cases: Vec<Case>) {
    let dir = scratch(codec);
    let dlq = format!("{topic}.dlq");
    let Some(broker) = selected_broker(topic, PARTITIONS) else {
        return;
    };
    broker.create_topic(&dlq, PARTITIONS);
    let bootstrap = broker.bootstrap_servers();
    let records: Vec<(i32, Option<Vec<u8>>)> = cases
        .iter()
        .map(|(p, payload, _)| (*p, payload.clone()))
        .collect();
    produce_records(bootstrap, topic, &records);
    let bad: BTreeMap<String, (i32, Option<Vec<u8>>, &str)> = cases
        .iter()
        .enumerate()
        .filter_map(|(i, (p, payload, kind))| {
            kind.map(|k| (format!("key-{i}"), (*p, payload.clone(), k)))
        })
        .collect();
    let good = cases.len() - bad.len();

    let mut worker = broker
        .worker(codec, topic)
        .env("TEST_CODEC", codec)
        .env("PYTHIA_WORKER__MAX_MESSAGE_BYTES", LIMIT)
        .spawn(&dir, "w");
    let highs = high_watermarks(bootstrap, topic, PARTITIONS);
    wait_until(Duration::from_secs(60), "every offset committed", || {
        committed(bootstrap, codec, topic, PARTITIONS)
            .iter()
            .zip(&highs)
            .all(|(c, h)| *c == Some(*h))
    });
    let letters = consume_all(
        bootstrap,
        &dlq,
        PARTITIONS,
        bad.len(),
        Duration::from_secs(30),
    );
    worker.terminate();
    assert!(
        worker.wait(Duration::from_secs(30)).success(),
        "{}",
        worker.log_text()
    );

    let records = worker.records();
    assert_eq!(records.unique(), good, "every good message processed");
    assert_eq!(records.duplicates(), 0);
    assert_eq!(
        letters.len(),
        bad.len(),
        "every bad message dead-lettered once"
    );
    assert_eq!(
        records.unique() + letters.len(),
        cases.len(),
        "processed + dead-lettered = produced"
    );
    for letter in &letters {
        let key = String::from_utf8(letter.key.clone().expect("key kept")).unwrap();
        let (partition, payload, kind) = &bad[&key];
        assert_eq!(
            letter.header("pythia.dlq.kind").as_deref(),
            Some(*kind),
            "{key}: {letter:?}"
        );
        assert!(
            letter
                .header("pythia.dlq.reason")
                .is_some_and(|r| !r.is_empty()),
            "{key} has a reason: {letter:?}"
        );
        assert_eq!(letter.header("pythia.dlq.topic").as_deref(), Some(topic));
        assert_eq!(
            letter.header("pythia.dlq.partition"),
            Some(partition.to_string())
        );
        assert!(letter.header("pythia.dlq.offset").is_some());
        assert_eq!(letter.header("pythia.dlq.attempts").as_deref(), Some("0"));
        assert_eq!(letter.header("pythia.dlq.worker").as_deref(), Some(codec));
        // The payload is unchanged (an empty payload may come back as null).
        let same = letter.payload == *payload
            || (payload.as_deref() == Some(&[][..]) && letter.payload.is_none());
        assert!(
            same,
            "{key}: payload changed: {:?} -> {:?}",
            payload, letter.payload
        );
    }
    // The reasons say what went wrong.
    let reasons: Vec<String> = letters
        .iter()
        .filter_map(|l| l.header("pythia.dlq.reason"))
        .collect();
    if bad.values().any(|(_, _, k)| *k == "too_large") {
        assert!(
            reasons
                .iter()
                .any(|r| r.contains("worker.max_message_bytes")),
            "{reasons:?}"
        );
    }
}

#[test]
fn bad_json_payloads_are_dead_lettered_and_the_partitions_keep_flowing() {
    check("json", "tasks", json_cases());
}

#[test]
fn non_utf8_text_is_dead_lettered() {
    check("utf8", "texts", text_cases());
}
