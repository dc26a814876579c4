//! A worker run in process on the embedded broker: several input topics, one
//! output per input, everything committed, a clean summary.

mod common;
use common::{committed_total, high_total};

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::Duration;

use pythia_kafka::core::Record;
use pythia_kafka::{
    Config, Context, KafkaSink, KafkaWorker, Message, Output, Outputs, Process, ProcessError,
    Worker,
};

/// Upper-cases each input and remembers where it came from.
#[derive(Default, Worker)]
#[pythia(topics = ["left", "right"], output = "shouted", codec = "utf8")]
struct Upper {
    seen: Mutex<BTreeMap<String, usize>>,
}

impl Process for Upper {
    type Input = String;
    type Output = String;

    async fn process(
        &self,
        msg: Message<String>,
        _: &Context,
    ) -> Result<Outputs<String>, ProcessError> {
        *self
            .seen
            .lock()
            .unwrap()
            .entry(msg.topic().to_owned())
            .or_default() += 1;
        let key = msg.key().map(<[u8]>::to_vec).unwrap_or_default();
        Ok(Output::new(msg.payload().to_uppercase())
            .key(key)
            .header("from", msg.topic().to_owned())
            .into())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn worker_on_two_topics_delivers_outputs_and_commits_everything() {
    const PER_TOPIC: usize = 300;
    // Topics, group ("upper", from the name) and output come from the derive.
    let mut config = Config::from_loader(
        Config::loader_for::<Upper>()
            .no_file()
            .env::<&str, &str>([])
            .set("kafka.brokers", "embedded")
            .set("kafka.embedded_partitions", 3)
            .set("kafka.commit_interval", "100ms"),
    )
    .unwrap();
    assert_eq!(config.kafka.group.as_deref(), Some("upper"));
    let broker = config.start_embedded().unwrap().expect("embedded broker");
    let bootstrap = broker.bootstrap_servers().to_owned();

    let producer = KafkaSink::new(&config.kafka).unwrap();
    let mut deliveries = Vec::new();
    for topic in ["left", "right"] {
        for i in 0..PER_TOPIC {
            let record = Record::new(format!("{topic} message {i}"))
                .with_key(format!("k{i}"))
                .with_topic(topic);
            deliveries.push(producer.produce(record).await);
        }
    }
    for d in deliveries {
        d.await.unwrap();
    }

    let worker = std::sync::Arc::new(Upper::default());
    let instance = KafkaWorker::builder(worker.clone())
        .config(config)
        .build()
        .unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let run = tokio::spawn(instance.run(async {
        let _ = stopped.await;
    }));
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while high_total(&bootstrap, "shouted", 3) < 2 * PER_TOPIC as i64 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "outputs did not all arrive"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    stop.send(()).unwrap();
    let summary = run.await.unwrap().unwrap();

    assert_eq!(summary.processed, 2 * PER_TOPIC as u64);
    assert_eq!(summary.abandoned, 0);
    let seen = worker.seen.lock().unwrap().clone();
    assert_eq!(seen.get("left"), Some(&PER_TOPIC));
    assert_eq!(seen.get("right"), Some(&PER_TOPIC));
    assert_eq!(
        high_total(&bootstrap, "shouted", 3),
        2 * PER_TOPIC as i64,
        "exactly one output per input"
    );
    for topic in ["left", "right"] {
        assert_eq!(
            committed_total(&bootstrap, "upper", topic, 3),
            Some(PER_TOPIC as i64),
            "{topic} fully committed"
        );
    }
}
