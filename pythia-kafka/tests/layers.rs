//! Each example layer of `pythia_core::layer` on the embedded broker, run
//! with the testing kit and counted from what the broker holds afterwards.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use pythia_kafka::core::layer::{
    Attempted, CircuitBreaker, Idempotent, LayerExt, MemoryStore, Observe, Timeout,
};
use pythia_kafka::prelude::*;
use pythia_kafka::testing::TestRun;

/// Echoes its input; "slow" sleeps 2 s first; the first `flaky` calls fail.
#[derive(Worker, Default)]
#[pythia(topic = "jobs", output = "done", codec = "utf8")]
struct Echo {
    calls: Arc<AtomicU32>,
    flaky: u32,
    called_at: Arc<Mutex<Vec<Instant>>>,
}

impl Process for Echo {
    type Input = String;
    type Output = String;

    async fn process(
        &self,
        msg: Message<String>,
        _: &Context,
    ) -> Result<Outputs<String>, ProcessError> {
        let call = self.calls.fetch_add(1, Ordering::SeqCst) + 1;
        self.called_at.lock().unwrap().push(Instant::now());
        if call <= self.flaky {
            return Err(ProcessError::msg("dependency unavailable"));
        }
        if msg.payload() == "slow" {
            tokio::time::sleep(Duration::from_secs(2)).await;
        }
        Ok(Outputs::one(msg.into_payload()))
    }
}

/// The outputs on `done`, sorted.
fn done(run: &pythia_kafka::testing::Finished) -> Vec<String> {
    let mut out: Vec<String> = (run.outputs("done").expect("done topic").iter())
        .map(|m| String::from_utf8_lossy(m.payload()).into_owned())
        .collect();
    out.sort();
    out
}

#[tokio::test(flavor = "multi_thread")]
async fn a_timeout_fails_a_slow_attempt_and_the_policy_dead_letters_it() {
    let run = TestRun::of(Echo::default().layer(Timeout::new(Duration::from_millis(200))))
        .config("worker.retry.max_attempts", 2)
        .config("worker.retry.initial_backoff", "10ms")
        .input_raw("a")
        .input_raw("slow")
        .input_raw("b")
        .run_until_idle()
        .await
        .expect("run");
    assert_eq!(done(&run), ["a", "b"]);
    let dead = run.dead_letters();
    assert_eq!(dead.len(), 1, "{dead:?}");
    assert_eq!((dead[0].kind.as_str(), dead[0].attempts), ("transient", 2));
    assert_eq!(dead[0].reason, "timed out after 200ms");
    assert_eq!(run.committed()[&("jobs".to_owned(), 0)], 3);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_circuit_breaker_waits_out_a_failing_dependency_and_loses_nothing() {
    let worker = Echo {
        flaky: 3,
        ..Echo::default()
    };
    let called_at = worker.called_at.clone();
    // Two failures open it; the trial after 800 ms fails (the third) and
    // opens it again; the next trial succeeds: "a" takes 4 attempts of 5.
    let run = TestRun::of(worker.layer(CircuitBreaker::new(2, Duration::from_millis(800))))
        .config("worker.retry.max_attempts", 5)
        .config("worker.retry.initial_backoff", "10ms")
        .input_raw("a")
        .input_raw("b")
        .input_raw("c")
        .run_until_idle()
        .await
        .expect("run");
    assert_eq!(done(&run), ["a", "b", "c"]);
    assert!(run.dead_letters().is_empty(), "{:?}", run.dead_letters());
    // Two failures open it: the third call waits out the 800 ms.
    let at = called_at.lock().unwrap().clone();
    assert!(at.len() >= 4, "{} calls", at.len());
    let gap = at[2] - at[1];
    assert!(
        gap >= Duration::from_millis(790),
        "third call after {gap:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn idempotency_skips_a_key_already_done() {
    let worker = Echo::default();
    let calls = worker.calls.clone();
    let run = TestRun::of(worker.layer(Idempotent::new(MemoryStore::new(100))))
        .input("order-1", "first")
        .input("order-2", "second")
        .input("order-1", "first again")
        .run_until_idle()
        .await
        .expect("run");
    assert_eq!(calls.load(Ordering::SeqCst), 2, "order-1 done once");
    assert_eq!(done(&run), ["first", "second"]);
    let committed: i64 = run.committed().values().sum();
    assert_eq!(committed, 3, "the skipped message is committed too");
}

#[tokio::test(flavor = "multi_thread")]
async fn observe_reports_every_attempt_for_metrics_of_your_own() {
    let attempts = prometheus::IntCounterVec::new(
        prometheus::Opts::new("billing_attempts_total", "attempts by outcome"),
        &["outcome"],
    )
    .unwrap();
    let counter = attempts.clone();
    let worker = Echo {
        flaky: 1,
        ..Echo::default()
    };
    let run = TestRun::of(worker.layer(Observe::new(move |a: &Attempted| {
        let outcome = if a.error.is_some() { "error" } else { "ok" };
        counter.with_label_values(&[outcome]).inc();
    })))
    .config("worker.retry.initial_backoff", "10ms")
    .input_raw("a")
    .input_raw("b")
    .run_until_idle()
    .await
    .expect("run");
    assert_eq!(done(&run), ["a", "b"]);
    assert_eq!(attempts.with_label_values(&["error"]).get(), 1);
    assert_eq!(attempts.with_label_values(&["ok"]).get(), 2);
}
