//! A subscriber to a worker's events sees its assignment, a retry, a dead
//! letter and the commits, on the embedded broker.

use std::sync::atomic::{AtomicBool, Ordering};

use pythia_kafka::core::events::WorkerEvent;
use pythia_kafka::core::{FailureKind, PartitionId};
use pythia_kafka::prelude::*;
use pythia_kafka::testing::TestRun;

/// "retry" fails once, transiently; "bad" fails for good.
#[derive(Worker, Default)]
#[pythia(topic = "jobs", output = "done", codec = "utf8")]
struct Jobs {
    retried: AtomicBool,
}

impl Process for Jobs {
    type Input = String;
    type Output = String;

    async fn process(
        &self,
        msg: Message<String>,
        _: &Context,
    ) -> Result<Outputs<String>, ProcessError> {
        match msg.payload().as_str() {
            "retry" if !self.retried.swap(true, Ordering::SeqCst) => {
                Err(ProcessError::msg("try again"))
            }
            "bad" => Err(ProcessError::permanent("no such job")),
            _ => Ok(Outputs::one(msg.into_payload())),
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn subscribers_see_assignment_retry_dead_letter_and_commits() {
    let run = TestRun::of(Jobs::default())
        .config("worker.retry.initial_backoff", "10ms")
        .input_raw("ok")
        .input_raw("retry")
        .input_raw("bad")
        .run_until_idle()
        .await
        .expect("run");
    let events = run.events();
    let jobs = PartitionId::new("jobs", 0);

    let assigned = events.iter().position(
        |e| matches!(e, WorkerEvent::Assigned { partitions } if partitions.contains(&jobs)),
    );
    let retrying = events.iter().position(|e| {
        matches!(e, WorkerEvent::Retrying { partition, offset: 1, attempts: 1, error, .. }
            if *partition == jobs && error == "try again")
    });
    let dead = events.iter().position(|e| {
        matches!(e, WorkerEvent::DeadLettered { partition, offset: 2, kind: FailureKind::Permanent, reason }
            if *partition == jobs && reason == "no such job")
    });
    let committed_to_end = events.iter().position(
        |e| matches!(e, WorkerEvent::Committed { partition, offset: 3 } if *partition == jobs),
    );
    let (Some(a), Some(r), Some(d), Some(c)) = (assigned, retrying, dead, committed_to_end) else {
        panic!(
            "missing events: assigned={assigned:?} retrying={retrying:?} dead={dead:?} committed={committed_to_end:?} in {events:#?}"
        );
    };
    assert!(a < r && r < d && d < c, "out of order: {events:#?}");
    assert!(
        !events
            .iter()
            .any(|e| matches!(e, WorkerEvent::Failed { .. })),
        "{events:#?}"
    );
    assert_eq!(run.dead_letters().len(), 1);
}

/// The builder's `on_event` callbacks get the same events while the worker
/// runs; the run here ends once the callback has seen the last commit.
#[tokio::test(flavor = "multi_thread")]
async fn the_builder_calls_on_event_listeners_during_the_run() {
    use std::sync::{Arc, Mutex};
    use std::time::Duration;

    use pythia_kafka::core::Record;
    use pythia_kafka::core::layer::Timeout;
    use pythia_kafka::{Config, KafkaSink, KafkaWorker};

    let mut config = Config::from_loader(
        Config::loader_for::<Jobs>()
            .no_file()
            .env::<&str, &str>([])
            .set("kafka.brokers", "embedded")
            .set("kafka.embedded_partitions", 1)
            .set("kafka.commit_interval", "100ms")
            .set("worker.retry.initial_backoff", "10ms"),
    )
    .unwrap();
    let broker = config.start_embedded().unwrap().expect("embedded broker");
    let producer = KafkaSink::new(&config.kafka).unwrap();
    for payload in ["ok", "retry", "bad"] {
        let record = Record::new(payload.to_owned()).with_topic("jobs");
        producer.produce(record).await.await.unwrap();
    }

    let seen = Arc::new(Mutex::new(Vec::new()));
    let (all_committed, committed) = tokio::sync::watch::channel(false);
    let listener = seen.clone();
    let instance = KafkaWorker::builder(Jobs::default())
        .config(config)
        .layer(Timeout::new(Duration::from_secs(5)))
        .on_event(move |event| {
            if matches!(event, WorkerEvent::Committed { offset: 3, .. }) {
                let _ = all_committed.send(true);
            }
            listener.lock().unwrap().push(event.clone());
        })
        .build()
        .unwrap();
    let mut committed_rx = committed.clone();
    let summary = instance
        .run(async move {
            let _ =
                tokio::time::timeout(Duration::from_secs(30), committed_rx.wait_for(|c| *c)).await;
        })
        .await
        .unwrap();
    drop(broker);
    assert!(
        *committed.borrow(),
        "no listener saw the commit of offset 3"
    );
    assert_eq!(
        summary.processed, 3,
        "every input acknowledged, the dead letter too"
    );
    let seen = seen.lock().unwrap();
    assert!(
        seen.iter()
            .any(|e| matches!(e, WorkerEvent::Assigned { .. })),
        "{seen:#?}"
    );
    assert!(
        seen.iter()
            .any(|e| matches!(e, WorkerEvent::Retrying { offset: 1, .. })),
        "{seen:#?}"
    );
    assert!(
        seen.iter()
            .any(|e| matches!(e, WorkerEvent::DeadLettered { offset: 2, .. })),
        "{seen:#?}"
    );
}
