//! Fan-out to named sinks: an input commits only when every sink confirmed its
//! output. A sink whose topic refuses writes stops the worker with the input
//! uncommitted; after the topic recovers, a restart delivers it again.

mod common;
use common::{committed_total, high_total};

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use pythia_kafka::core::{Error, Record, SinkError};
use pythia_kafka::prelude::*;
use pythia_kafka::{EmbeddedBroker, KafkaSink};
use rdkafka_sys::rd_kafka_resp_err_t::{
    RD_KAFKA_RESP_ERR_NO_ERROR, RD_KAFKA_RESP_ERR_TOPIC_AUTHORIZATION_FAILED,
};

const MESSAGES: u64 = 10;

/// Sends every order to both sinks.
#[derive(Default, Worker)]
#[pythia(
    topic = "orders",
    group = "router",
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
        let order = msg.into_payload();
        Ok(vec![
            Output::new(format!("audit {order}")).to(Self::AUDIT),
            Output::new(format!("bill {order}")).to(Self::BILLING),
        ]
        .into())
    }
}

fn config() -> (Config, EmbeddedBroker) {
    let mut config = Config::from_loader(
        Config::loader_for::<Router>()
            .no_file()
            .env::<&str, &str>([])
            .set("kafka.brokers", "embedded")
            .set("kafka.embedded_partitions", 1)
            .set("kafka.commit_interval", "100ms"),
    )
    .unwrap();
    // A refused delivery fails within seconds rather than the default 5 minutes.
    config.kafka.producer.set("message.timeout.ms", "3000");
    let broker = config.start_embedded().unwrap().expect("embedded broker");
    (config, broker)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_input_commits_only_when_every_sink_delivered() {
    let (config, broker) = config();
    let bootstrap = broker.bootstrap_servers().to_owned();
    let producer = KafkaSink::new(&config.kafka).unwrap();
    for i in 0..MESSAGES {
        let record = Record::new(format!("order-{i}")).with_topic("orders");
        producer.produce(record).await.await.unwrap();
    }

    // The billing topic refuses every write; the audit topic works.
    broker
        .set_topic_error(
            "orders.billing",
            RD_KAFKA_RESP_ERR_TOPIC_AUTHORIZATION_FAILED,
        )
        .unwrap();
    let first = Arc::new(Router::default());
    let result = KafkaWorker::builder(first.clone())
        .config(config.clone())
        .build()
        .unwrap()
        .run(tokio::time::sleep(Duration::from_secs(60)))
        .await;
    match result {
        Err(Error::Delivery {
            offset,
            source: SinkError::Delivery { topic, .. },
            ..
        }) => {
            assert_eq!(topic, "orders.billing");
            assert!((0..MESSAGES as i64).contains(&offset), "offset {offset}");
        }
        other => panic!("expected a delivery failure on orders.billing, got {other:?}"),
    }
    assert!(first.processed.load(Ordering::Relaxed) >= 1);
    assert!(
        high_total(&bootstrap, "orders.audit", 1) >= 1,
        "the audit sink received outputs"
    );
    assert!(
        committed_total(&bootstrap, "router", "orders", 1).is_none_or(|c| c == 0),
        "nothing may commit while an output is undelivered: {:?}",
        committed_total(&bootstrap, "router", "orders", 1)
    );

    // The topic recovers; a new instance gets every order again and finishes.
    broker
        .set_topic_error("orders.billing", RD_KAFKA_RESP_ERR_NO_ERROR)
        .unwrap();
    let second = Arc::new(Router::default());
    let instance = KafkaWorker::builder(second.clone())
        .config(config)
        .build()
        .unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let run = tokio::spawn(instance.run(async {
        let _ = stopped.await;
    }));
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while committed_total(&bootstrap, "router", "orders", 1) != Some(MESSAGES as i64) {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the restarted worker did not commit every order: {:?}",
            committed_total(&bootstrap, "router", "orders", 1)
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    stop.send(()).unwrap();
    let summary = run.await.unwrap().unwrap();
    assert_eq!(summary.processed, MESSAGES, "every order was redelivered");
    assert_eq!(second.processed.load(Ordering::Relaxed), MESSAGES);
    assert_eq!(high_total(&bootstrap, "orders.billing", 1), MESSAGES as i64);
    assert!(high_total(&bootstrap, "orders.audit", 1) >= MESSAGES as i64);
}

/// Routes to a sink name it never declared.
#[derive(Worker)]
#[pythia(
    topic = "orders",
    group = "misrouted",
    codec = "utf8",
    sinks(audit = "orders.audit")
)]
struct Misrouted;

impl Process for Misrouted {
    type Input = String;
    type Output = String;

    async fn process(
        &self,
        msg: Message<String>,
        _: &Context,
    ) -> Result<Outputs<String>, ProcessError> {
        Ok(Outputs::from(Output::new(msg.into_payload()).to("auditt")))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_undeclared_sink_stops_the_worker_with_a_clear_error() {
    let mut config = Config::from_loader(
        Config::loader_for::<Misrouted>()
            .no_file()
            .env::<&str, &str>([])
            .set("kafka.brokers", "embedded")
            .set("kafka.embedded_partitions", 1),
    )
    .unwrap();
    let broker = config.start_embedded().unwrap().expect("embedded broker");
    let producer = KafkaSink::new(&config.kafka).unwrap();
    let record = Record::new("order-1").with_topic("orders");
    producer.produce(record).await.await.unwrap();

    let result = KafkaWorker::builder(Misrouted)
        .config(config)
        .build()
        .unwrap()
        .run(tokio::time::sleep(Duration::from_secs(60)))
        .await;
    let error = result.expect_err("an output to an undeclared sink fails");
    let text = error.to_string();
    assert!(
        matches!(
            &error,
            Error::Delivery { source: SinkError::UnknownSink { sink }, .. } if sink == "auditt"
        ),
        "{error:?}"
    );
    assert!(text.contains("kafka.sinks.auditt"), "{text}");
    drop(broker);
}
