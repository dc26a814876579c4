//! Trace export to a collector that never answers (feature `otel`): the
//! worker processes everything as usual, its outputs still carry the trace
//! on, and stopping export gives up after its timeout.

mod stages;

use std::net::TcpListener;
use std::time::{Duration, Instant};

use pythia_kafka::prelude::*;

use stages::produce;

const TRACE_ID: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const MESSAGES: usize = 200;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_collector_that_never_answers_does_not_hold_up_the_worker() {
    // Accepts connections (the kernel does) but never reads or answers them.
    let silent = TcpListener::bind("127.0.0.1:0").unwrap();
    let mut telemetry_config = Config::default();
    telemetry_config.otel.endpoint = Some(format!("http://{}", silent.local_addr().unwrap()));
    let telemetry = pythia_kafka::init_telemetry(&telemetry_config).unwrap();
    assert!(telemetry.exporting());

    let (pipeline, collect) = stages::pipeline(2);
    let messages: Vec<(String, String)> = (0..MESSAGES)
        .map(|n| (n.to_string(), format!("00-{TRACE_ID}-{:016x}-01", n + 1)))
        .collect();
    let messages: Vec<(&str, Option<&str>)> = messages
        .iter()
        .map(|(payload, sender)| (payload.as_str(), Some(sender.as_str())))
        .collect();
    produce(pipeline.brokers(), &messages).await;

    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let run = tokio::spawn(pipeline.run(async {
        let _ = stopped.await;
    }));
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while collect.count() < MESSAGES {
        assert!(
            tokio::time::Instant::now() < deadline,
            "only {} of {MESSAGES} messages got through",
            collect.count()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    stop.send(()).unwrap();
    let summaries = run.await.unwrap().expect("the pipeline stopped cleanly");
    for stage in summaries {
        assert_eq!(stage.summary.processed, MESSAGES as u64, "{}", stage.name);
    }
    // Outputs carry the trace on whether or not its spans reach a collector.
    for (_, traceparent) in collect.seen.lock().unwrap().iter() {
        let traceparent = traceparent
            .as_deref()
            .expect("an output without traceparent");
        assert!(
            traceparent.starts_with(&format!("00-{TRACE_ID}-")),
            "{traceparent}"
        );
    }

    let started = Instant::now();
    tokio::task::spawn_blocking(move || telemetry.shutdown())
        .await
        .unwrap();
    assert!(
        started.elapsed() < Duration::from_secs(15),
        "stopping export took {:?}",
        started.elapsed()
    );
    drop(silent);
}
