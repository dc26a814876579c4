//! Message spans exported over OTLP/HTTP (feature `otel`) to a collector run
//! by the test: each stage's span continues its input's trace, and the
//! outputs' `traceparent` names that span, so a pipeline is one trace.

mod otlp;
mod stages;

use std::time::Duration;

use pythia_kafka::prelude::*;

use otlp::{Collector, Span, Value};
use stages::{Collect, produce};

const TRACE_ID: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const SENDER: &str = "00f067aa0ba902b7";
const UNSAMPLED_TRACE_ID: &str = "0af7651916cd43dd8448eb211c80319c";

/// The `traceparent` that stage 1 gave `payload`'s output, split in its parts.
fn traceparent_of(collect: &Collect, payload: &str) -> [String; 4] {
    let seen = collect.seen.lock().unwrap();
    let (_, value) = seen
        .iter()
        .find(|(p, _)| p == payload)
        .unwrap_or_else(|| panic!("`{payload}` did not reach stage 2"));
    let value = value
        .as_deref()
        .unwrap_or_else(|| panic!("`{payload}` reached stage 2 without a traceparent"));
    let parts: Vec<String> = value.split('-').map(str::to_owned).collect();
    parts
        .try_into()
        .unwrap_or_else(|_| panic!("`{value}` is not a traceparent"))
}

/// The "message" span of `topic`'s message at `offset`.
fn message_span<'a>(spans: &'a [Span], topic: &str, offset: i64) -> &'a Span {
    let found: Vec<&Span> = spans
        .iter()
        .filter(|s| {
            s.name == "message"
                && s.attributes.get("topic") == Some(&Value::Str(topic.to_owned()))
                && s.attributes.get("offset") == Some(&Value::Int(offset))
        })
        .collect();
    match found[..] {
        [span] => span,
        _ => panic!("expected one span for {topic}@{offset}, found {found:#?} among {spans:#?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn message_spans_chain_across_stages_into_one_trace() {
    let collector = Collector::start();
    let mut telemetry_config = Config::default();
    telemetry_config.otel.endpoint = Some(collector.url().to_owned());
    telemetry_config.otel.service_name = Some("otel-export-test".to_owned());
    let telemetry = pythia_kafka::init_telemetry(&telemetry_config).unwrap();
    assert!(telemetry.exporting());

    let (pipeline, collect) = stages::pipeline(1);
    let traced = format!("00-{TRACE_ID}-{SENDER}-01");
    let unsampled = format!("00-{UNSAMPLED_TRACE_ID}-b7ad6b7169203331-00");
    produce(
        pipeline.brokers(),
        &[
            ("traced", Some(&traced)),
            ("untraced", None),
            ("unsampled", Some(&unsampled)),
        ],
    )
    .await;

    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let run = tokio::spawn(pipeline.run(async {
        let _ = stopped.await;
    }));
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while collect.count() < 3 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "not every message reached stage 2"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    stop.send(()).unwrap();
    run.await.unwrap().unwrap();
    // The batch processor sends what it still holds.
    tokio::task::spawn_blocking(move || telemetry.shutdown())
        .await
        .unwrap();

    let requests = collector.requests();
    assert!(!requests.is_empty(), "nothing was exported");
    for request in &requests {
        assert_eq!(request.target, "POST /v1/traces");
        assert_eq!(request.content_type, "application/x-protobuf");
    }
    let spans: Vec<Span> = requests.iter().flat_map(|r| otlp::spans(&r.body)).collect();
    assert!(
        spans.iter().all(|s| s.service == "otel-export-test"),
        "{spans:#?}"
    );

    // Stage 1 continues the producer's trace, as a child of its span.
    let first = message_span(&spans, "numbers", 0);
    assert_eq!(first.trace_id, TRACE_ID);
    assert_eq!(first.parent_span_id, SENDER);
    assert_eq!(first.attributes.get("partition"), Some(&Value::Int(0)));
    assert_eq!(
        first.attributes.get("worker"),
        Some(&Value::Str("relay".to_owned()))
    );
    assert_eq!(
        first.attributes.get("trace_id"),
        Some(&Value::Str(TRACE_ID.to_owned()))
    );
    assert!(first.attributes.contains_key("busy_ns"), "{first:#?}");
    // Its output names it as the parent ...
    let [_, trace_id, parent_id, flags] = traceparent_of(&collect, "traced");
    assert_eq!(trace_id, TRACE_ID);
    assert_eq!(parent_id, first.span_id);
    assert_eq!(flags, "01");
    // ... so stage 2's span is its child.
    let second = message_span(&spans, "relayed", 0);
    assert_eq!(second.trace_id, TRACE_ID);
    assert_eq!(second.parent_span_id, first.span_id);
    assert_ne!(second.span_id, first.span_id);

    // A message without a traceparent starts a trace that its output carries on.
    let root = message_span(&spans, "numbers", 1);
    assert_eq!(root.parent_span_id, "", "a new trace has no parent");
    assert_ne!(root.trace_id, TRACE_ID);
    let [_, trace_id, parent_id, flags] = traceparent_of(&collect, "untraced");
    assert_eq!(
        (trace_id, parent_id),
        (root.trace_id.clone(), root.span_id.clone())
    );
    assert_eq!(flags, "01");
    let next = message_span(&spans, "relayed", 1);
    assert_eq!(next.trace_id, root.trace_id);
    assert_eq!(next.parent_span_id, root.span_id);

    // A trace its sender does not record is not exported, but still carried on.
    assert!(
        spans.iter().all(|s| s.trace_id != UNSAMPLED_TRACE_ID),
        "an unsampled trace was exported: {spans:#?}"
    );
    let [_, trace_id, parent_id, flags] = traceparent_of(&collect, "unsampled");
    assert_eq!(trace_id, UNSAMPLED_TRACE_ID);
    assert_ne!(parent_id, "b7ad6b7169203331");
    assert_eq!(flags, "00");
}
