//! Retries and dead letters: a transient failure is retried and the message
//! commits once; one that keeps failing goes to the dead-letter topic after
//! `max_attempts` while the other partitions keep flowing; a permanent error is
//! not retried. Runs on the broker `TEST_BROKER` selects.

use std::time::Duration;

use pythia_tests::*;

const PARTITIONS: i32 = 4;

struct Run {
    records: Records,
    letters: Vec<Consumed>,
}

/// Runs one worker over `n` messages with `env`, until everything committed;
/// `None` when the selected broker cannot run here (the skip is printed).
fn run(name: &str, n: u64, dead_letters: usize, env: &[(&str, &str)]) -> Option<Run> {
    let dir = scratch(name);
    let broker = selected_broker("jobs", PARTITIONS)?;
    broker.create_topic("jobs.dlq", PARTITIONS);
    let bootstrap = broker.bootstrap_servers();
    produce(bootstrap, "jobs", PARTITIONS, 0..n);
    let mut spec = broker.worker(name, "jobs");
    for (k, v) in env {
        spec = spec.env(k, v);
    }
    let mut worker = spec.spawn(&dir, "w");
    let highs = high_watermarks(bootstrap, "jobs", PARTITIONS);
    wait_until(Duration::from_secs(90), "every offset committed", || {
        committed(bootstrap, name, "jobs", PARTITIONS)
            .iter()
            .zip(&highs)
            .all(|(c, h)| *c == Some(*h))
    });
    let letters = consume_all(
        bootstrap,
        "jobs.dlq",
        PARTITIONS,
        dead_letters,
        Duration::from_secs(20),
    );
    worker.terminate();
    assert!(
        worker.wait(Duration::from_secs(30)).success(),
        "{}",
        worker.log_text()
    );
    Some(Run {
        records: worker.records(),
        letters,
    })
}

#[test]
fn a_message_failing_twice_is_retried_and_committed_once() {
    // Message n goes to partition n % 4: offset 3 of partition 1 is message 13.
    let Some(run) = run(
        "twice",
        40,
        0,
        &[
            ("TEST_FAIL_AT", "1:3"),
            ("TEST_FAIL_TIMES", "2"),
            ("PYTHIA_WORKER__RETRY__MAX_ATTEMPTS", "3"),
            ("PYTHIA_WORKER__RETRY__INITIAL_BACKOFF", "50ms"),
        ],
    ) else {
        return;
    };
    assert_eq!(run.records.failed, [(1, 3), (1, 3)], "two failed attempts");
    assert_eq!(
        run.records.counts().get(&(1, 3)),
        Some(&1),
        "then processed once"
    );
    assert_eq!(run.records.unique(), 40);
    assert_eq!(run.records.duplicates(), 0);
    assert!(
        run.letters.is_empty(),
        "nothing dead-lettered: {:?}",
        run.letters
    );
}

#[test]
fn a_message_that_keeps_failing_is_dead_lettered_without_holding_back_other_partitions() {
    let Some(run) = run(
        "always",
        200,
        1,
        &[
            ("TEST_FAIL_AT", "1:3"),
            ("TEST_DELAY_MS", "5"),
            ("PYTHIA_WORKER__RETRY__MAX_ATTEMPTS", "3"),
            // 2 s then 4 s between attempts: far longer than the other partitions need.
            ("PYTHIA_WORKER__RETRY__INITIAL_BACKOFF", "2s"),
            ("PYTHIA_WORKER__RETRY__JITTER", "0"),
        ],
    ) else {
        return;
    };
    assert_eq!(
        run.records.failed,
        [(1, 3), (1, 3), (1, 3)],
        "max_attempts attempts"
    );
    assert!(!run.records.counts().contains_key(&(1, 3)));
    assert_eq!(run.records.unique(), 199, "everything else processed");
    assert_eq!(run.letters.len(), 1);
    let letter = &run.letters[0];
    assert_eq!(letter.header("pythia.dlq.attempts").as_deref(), Some("3"));
    assert_eq!(
        letter.header("pythia.dlq.kind").as_deref(),
        Some("transient")
    );
    assert_eq!(letter.header("pythia.dlq.offset").as_deref(), Some("3"));
    assert!(
        letter
            .header("pythia.dlq.reason")
            .is_some_and(|r| r.contains("injected failure"))
    );
    assert_eq!(
        letter.payload.as_deref(),
        Some(&br#"{"id":13}"#[..]),
        "payload unchanged"
    );

    // The other partitions finished while partition 1 waited: their last
    // message ended before partition 1 got past offset 3.
    let next_on_1 = run
        .records
        .processed
        .iter()
        .find(|r| r.partition == 1 && r.offset == 4)
        .expect("partition 1 went on after the dead letter");
    let others_done = run
        .records
        .processed
        .iter()
        .filter(|r| r.partition != 1)
        .map(|r| r.end_us)
        .max()
        .unwrap();
    assert!(
        others_done < next_on_1.start_us,
        "other partitions were held back by partition 1's retries"
    );
}

#[test]
fn a_permanent_error_is_dead_lettered_at_once() {
    let Some(run) = run(
        "permanent",
        20,
        1,
        &[
            ("TEST_FAIL_AT", "2:1"),
            ("TEST_FAIL_PERMANENT", "1"),
            ("PYTHIA_WORKER__RETRY__MAX_ATTEMPTS", "5"),
        ],
    ) else {
        return;
    };
    assert_eq!(run.records.failed, [(2, 1)], "no retry");
    assert_eq!(run.letters.len(), 1);
    assert_eq!(
        run.letters[0].header("pythia.dlq.kind").as_deref(),
        Some("permanent")
    );
    assert_eq!(
        run.letters[0].header("pythia.dlq.attempts").as_deref(),
        Some("1")
    );
    assert_eq!(run.records.unique(), 19);
}
