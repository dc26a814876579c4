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
