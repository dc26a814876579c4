//! The testing kit (`pythia_kafka::testing`) as a user's test would use it:
//! outputs, dead letters and commits read back from the broker; a failing
//! worker's error; the timeout's report; fan-out to named sinks.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use pythia_kafka::core::dead_letter::header;
use pythia_kafka::core::{Error, FailureKind, Headers, Record};
use pythia_kafka::prelude::*;
use pythia_kafka::testing::{DeadLetter, Finished, TestRun, TestRunError, Uncommitted};

#[derive(serde::Serialize, serde::Deserialize)]
struct Order {
    id: u64,
    amount_cents: u64,
}

#[derive(serde::Serialize, serde::Deserialize, Debug, PartialEq)]
struct Invoice {
    order_id: u64,
    total_cents: u64,
}

/// The README's worker: an invoice per paid order, nothing for a free one.
#[derive(Worker)]
#[pythia(topic = "orders", output = "invoices")]
struct Billing;

impl Process for Billing {
    type Input = Order;
    type Output = Invoice;

    async fn process(
        &self,
        msg: Message<Order>,
        _: &Context,
    ) -> Result<Outputs<Invoice>, ProcessError> {
        let order = msg.into_payload();
        if order.amount_cents == 0 {
            return Ok(Outputs::none());
        }
        Ok(Outputs::one(Invoice {
            order_id: order.id,
            total_cents: order.amount_cents,
        }))
    }
}

fn committed(run: &Finished, topic: &str, partition: i32) -> Option<i64> {
    run.committed().get(&(topic.to_owned(), partition)).copied()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outputs_dead_letters_and_commits_are_read_back() -> Result<(), Box<dyn std::error::Error>>
{
    let run = TestRun::of(Billing)
        .partitions(2)
        .input_json(&Order {
            id: 1,
            amount_cents: 1250,
        }) // partition 0
        .input_raw("not json") // partition 1
        .input_json(&Order {
            id: 2,
            amount_cents: 0,
        }) // partition 0
        .input_to(1, r#"{"id":3,"amount_cents":99}"#)
        .input("order-4", r#"{"id":4,"amount_cents":400}"#)
        .config("worker.retry.max_attempts", 1)
        .run_until_idle()
        .await?;

    let mut invoices = run.outputs_json::<Invoice>("invoices")?;
    invoices.sort_by_key(|i| i.order_id);
    assert_eq!(
        invoices,
        [
            Invoice {
                order_id: 1,
                total_cents: 1250
            },
            Invoice {
                order_id: 3,
                total_cents: 99
            },
            Invoice {
                order_id: 4,
                total_cents: 400
            },
        ]
    );
    assert_eq!(run.outputs("invoices")?.len(), 3);

    let dead = run.dead_letters();
    assert_eq!(dead.len(), 1, "{dead:?}");
    let DeadLetter {
        topic,
        partition,
        offset,
        kind,
        reason,
        attempts,
        payload,
        headers,
        ..
    } = &dead[0];
    assert_eq!((topic.as_str(), *partition, *offset), ("orders", 1, 0));
    assert_eq!(kind, FailureKind::Decode.as_str());
    assert_eq!(
        *attempts, 0,
        "a payload that never decoded never reached process"
    );
    assert!(!reason.is_empty());
    assert_eq!(headers.get_str(header::REASON), Some(reason.as_str()));
    assert_eq!(headers.get_str(header::KIND), Some("decode"));
    assert_eq!(payload.as_deref(), Some(&b"not json"[..]));

    // Five inputs over two partitions, each committed to its end: two
    // keyless ones and one keyed to partition 1 by `input_to` and by turn on
    // each, and the keyed one wherever its key hashes to.
    let (p0, p1) = (committed(&run, "orders", 0), committed(&run, "orders", 1));
    assert!(
        matches!((p0, p1), (Some(2), Some(3)) | (Some(3), Some(2))),
        "{:?}",
        run.committed()
    );
    assert_eq!(run.summary().processed, 5);
    assert_eq!(run.summary().abandoned, 0);

    let unknown = run.outputs("invoice").unwrap_err();
    assert!(
        matches!(&unknown, TestRunError::UnknownTopic { known, .. } if known == &["invoices"]),
        "{unknown:?}"
    );
    Ok(())
}

/// Fails every order permanently.
#[derive(Worker)]
#[pythia(topic = "orders", output = "invoices")]
struct Refuser;

impl Process for Refuser {
    type Input = Order;
    type Output = Invoice;

    async fn process(
        &self,
        _: Message<Order>,
        _: &Context,
    ) -> Result<Outputs<Invoice>, ProcessError> {
        Err(ProcessError::permanent("orders are closed"))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_worker_without_dead_letters_returns_its_error() {
    let started = Instant::now();
    let result = TestRun::of(Refuser)
        .input_json(&Order {
            id: 9,
            amount_cents: 10,
        })
        .config("worker.dead_letter.enabled", false)
        .timeout(Duration::from_secs(20))
        .run_until_idle()
        .await;
    match result {
        Err(TestRunError::Worker(Error::Process {
            partition,
            offset,
            kind,
            reason,
        })) => {
            assert_eq!(
                (partition.topic(), partition.index(), offset),
                ("orders", 0, 0)
            );
            assert_eq!(kind, FailureKind::Permanent);
            assert!(reason.contains("orders are closed"), "{reason}");
        }
        other => panic!("expected the worker's process error, got {other:?}"),
    }
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "the error came before the timeout"
    );
}

/// Never finishes a message.
#[derive(Worker)]
#[pythia(topic = "orders", output = "invoices")]
struct Stuck;

impl Process for Stuck {
    type Input = Order;
    type Output = Invoice;

    async fn process(
        &self,
        _: Message<Order>,
        _: &Context,
    ) -> Result<Outputs<Invoice>, ProcessError> {
        std::future::pending().await
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_timeout_names_the_partitions_not_committed() {
    let started = Instant::now();
    let result = TestRun::of(Stuck)
        .partitions(2)
        .input_to(
            1,
            serde_json::to_vec(&Order {
                id: 1,
                amount_cents: 5,
            })
            .unwrap(),
        )
        .timeout(Duration::from_secs(2))
        .run_until_idle()
        .await;
    let elapsed = started.elapsed();
    let error = result.expect_err("a stuck worker is never idle");
    match &error {
        TestRunError::Timeout { after, uncommitted } => {
            assert_eq!(*after, Duration::from_secs(2));
            // Partition 0 is empty: idle with nothing committed.
            let [
                Uncommitted {
                    topic,
                    partition,
                    committed,
                    high,
                    ..
                },
            ] = uncommitted.as_slice()
            else {
                panic!("one partition is stuck: {uncommitted:?}");
            };
            // Nothing, or the start: the worker may commit where it starts.
            assert_eq!(
                (topic.as_str(), *partition, committed.unwrap_or(0), *high),
                ("orders", 1, 0, 1)
            );
        }
        other => panic!("expected a timeout, got {other:?}"),
    }
    let text = error.to_string();
    let expected = [
        "the worker was not idle after 2s: orders/1 committed nothing of 1;",
        "the worker was not idle after 2s: orders/1 committed 0 of 1;",
    ];
    assert!(expected.iter().any(|e| text.starts_with(e)), "{text}");
    assert!(text.contains("TestRun::timeout"), "{text}");
    assert!(
        elapsed < Duration::from_secs(10),
        "the stuck worker is dropped, not drained: {elapsed:?}"
    );
}

/// Sends every order to two named sinks, headers and keys kept.
#[derive(Default, Worker)]
#[pythia(
    topic = "orders",
    codec = "utf8",
    sinks(audit = "orders.audit", billing = "orders.billing")
)]
struct Router {
    processed: AtomicU64,
}

impl Process for Router {
    type Input = String;
    type Output = String;

    async fn process(
        &self,
        msg: Message<String>,
        _: &Context,
    ) -> Result<Outputs<String>, ProcessError> {
        self.processed.fetch_add(1, Ordering::Relaxed);
        let tenant = msg.headers().get_str("tenant").unwrap_or("none").to_owned();
        let order = msg.into_payload();
        Ok(vec![
            Output::new(format!("audit {order}"))
                .to(Self::AUDIT)
                .header("tenant", tenant),
            Output::new(format!("bill {order}"))
                .key(order.clone())
                .to(Self::BILLING),
        ]
        .into())
    }
}

#[tokio::test]
async fn fan_out_to_named_sinks_is_read_per_sink_topic() -> Result<(), Box<dyn std::error::Error>> {
    let mut headers = Headers::new();
    headers.append("tenant", "acme");
    // The default flavor: one thread for the worker and the kit.
    let run = TestRun::of(Router::default())
        .input_raw("o-1")
        .input_raw("o-2")
        .input_record(Record::new("o-3").with_headers(headers))
        .run_until_idle()
        .await?;

    let payloads = |topic: &str| -> Result<Vec<String>, TestRunError> {
        Ok(run
            .outputs(topic)?
            .iter()
            .map(|m| String::from_utf8_lossy(m.payload()).into_owned())
            .collect())
    };
    assert_eq!(
        payloads("orders.audit")?,
        ["audit o-1", "audit o-2", "audit o-3"]
    );
    assert_eq!(
        payloads("orders.billing")?,
        ["bill o-1", "bill o-2", "bill o-3"]
    );
    let audit = run.outputs("orders.audit")?;
    assert_eq!(audit[2].headers().get_str("tenant"), Some("acme"));
    assert_eq!(audit[0].headers().get_str("tenant"), Some("none"));
    let billing = run.outputs("orders.billing")?;
    assert_eq!(billing[1].key_str(), Some("o-2"));
    assert_eq!(
        billing.iter().map(|m| m.offset()).collect::<Vec<_>>(),
        [0, 1, 2]
    );
    assert!(run.dead_letters().is_empty());
    assert_eq!(committed(&run, "orders", 0), Some(3));
    assert_eq!(run.summary().processed, 3);
    Ok(())
}

/// Reads and writes nothing but its input.
#[derive(Worker)]
#[pythia(topic = "events", codec = "utf8")]
struct Quiet;

impl Process for Quiet {
    type Input = String;
    type Output = ();

    async fn process(&self, _: Message<String>, _: &Context) -> Result<Outputs<()>, ProcessError> {
        Ok(Outputs::none())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_that_writes_nothing_is_idle_once_committed()
-> Result<(), Box<dyn std::error::Error>> {
    let run = TestRun::of(Quiet)
        .partitions(3)
        .input_raw("a")
        .input_raw("b")
        .input_raw("c")
        .input_raw("d")
        .run_until_idle()
        .await?;
    // Keyless inputs go to the partitions in turn.
    let committed: Vec<(String, i32, i64)> = (run.committed().iter())
        .map(|((topic, p), offset)| (topic.clone(), *p, *offset))
        .collect();
    assert_eq!(
        committed,
        [
            ("events".to_owned(), 0, 2),
            ("events".to_owned(), 1, 1),
            ("events".to_owned(), 2, 1)
        ]
    );
    assert!(run.dead_letters().is_empty());
    assert!(matches!(
        run.outputs("events"),
        Err(TestRunError::UnknownTopic { .. })
    ));

    // No inputs at all: idle as soon as it starts.
    let empty = TestRun::of(Quiet).run_until_idle().await?;
    assert!(empty.committed().is_empty());
    assert_eq!(empty.summary().processed, 0);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn settings_and_inputs_are_checked_before_anything_runs() {
    let error = TestRun::of(Quiet)
        .config("worker.max_in_flight", "many")
        .run_until_idle()
        .await
        .expect_err("not a number");
    assert!(
        matches!(&error, TestRunError::Config(e) if e.key() == "worker.max_in_flight"),
        "{error:?}"
    );

    let mut not_json = std::collections::HashMap::new();
    not_json.insert((1, 2), "a map with a tuple key");
    let error = TestRun::of(Quiet)
        .input_raw("fine")
        .input_json(&not_json)
        .run_until_idle()
        .await
        .expect_err("JSON has no tuple keys");
    assert!(
        matches!(error, TestRunError::InputJson { index: 1, .. }),
        "{error:?}"
    );
}

#[test]
fn the_kit_crosses_threads() {
    fn send_sync<T: Send + Sync>() {}
    fn send<T: Send>(_: &T) {}
    send_sync::<Finished>();
    send_sync::<DeadLetter>();
    send_sync::<TestRunError>();
    send_sync::<TestRun<Billing>>();
    send(&TestRun::of(Billing).run_until_idle());
}
