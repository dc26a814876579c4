//! One worker, several input topics: page views, clicks and purchases counted
//! per topic by a single consumer group.
//!
//! ```text
//! cargo run --release --example multi_topic
//! ```
//!
//! It ends with `produced=<n> processed=<n> per_topic page.views=.. page.clicks=.. purchases=..`
//! and fails if any topic's count differs from what was produced to it.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::ensure;
use pythia_examples::{produce, wait_until};
use pythia_kafka::KafkaSink;
use pythia_kafka::core::Record;
use pythia_kafka::prelude::*;
use serde::Deserialize;
use tokio_util::sync::CancellationToken;

#[derive(Deserialize)]
struct Activity {
    user: String,
}

/// Counts activity per topic and distinct users per topic.
#[derive(Default, Worker)]
#[pythia(topics = ["page.views", "page.clicks", "purchases"], group = "activity")]
struct ActivityCounter {
    per_topic: Mutex<BTreeMap<String, (u64, std::collections::BTreeSet<String>)>>,
}

impl Process for ActivityCounter {
    type Input = Activity;
    type Output = ();

    async fn process(
        &self,
        msg: Message<Activity>,
        _: &Context,
    ) -> Result<Outputs<()>, ProcessError> {
        let mut per_topic = self.per_topic.lock().unwrap_or_else(|p| p.into_inner());
        let (count, users) = per_topic.entry(msg.topic().to_owned()).or_default();
        *count += 1;
        users.insert(msg.payload().user.clone());
        Ok(Outputs::none())
    }
}

impl ActivityCounter {
    fn total(&self) -> u64 {
        let per_topic = self.per_topic.lock().unwrap_or_else(|p| p.into_inner());
        per_topic.values().map(|(n, _)| n).sum()
    }
}

/// Messages produced to each topic.
const LOAD: [(&str, u64); 3] = [
    ("page.views", 3_000),
    ("page.clicks", 1_500),
    ("purchases", 250),
];

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    pythia_kafka::init_tracing();
    let mut config = Config::from_loader(
        Config::loader_for::<ActivityCounter>().default_value("kafka.brokers", "embedded"),
    )?;
    let _broker = config.start_embedded()?;

    let counter = Arc::new(ActivityCounter::default());
    let instance = KafkaWorker::builder(counter.clone())
        .config(config.clone())
        .build()?;
    let stop = CancellationToken::new();
    let run = tokio::spawn(instance.run(stop.clone().cancelled_owned()));

    let sink = KafkaSink::new(&config.kafka)?;
    let records = LOAD.iter().flat_map(|(topic, n)| {
        (0..*n).map(move |i| {
            let user = format!("user-{}", i % 40);
            Record::new(format!(r#"{{"user":"{user}"}}"#))
                .with_key(user)
                .with_topic(*topic)
        })
    });
    let produced = produce(&sink, records).await?;

    wait_until(Duration::from_secs(120), || counter.total() >= produced).await?;
    stop.cancel();
    let summary = run.await??;

    let per_topic = counter
        .per_topic
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .clone();
    let counts: Vec<String> = LOAD
        .iter()
        .map(|(topic, _)| {
            let (n, users) = per_topic.get(*topic).cloned().unwrap_or_default();
            format!("{topic}={n} ({} users)", users.len())
        })
        .collect();
    println!(
        "produced={produced} processed={} per_topic {}",
        summary.processed,
        counts.join(" ")
    );
    ensure!(
        summary.processed == produced,
        "processed {} of {produced}",
        summary.processed
    );
    for (topic, n) in LOAD {
        let seen = per_topic.get(topic).map_or(0, |(n, _)| *n);
        ensure!(seen == n, "{topic}: processed {seen} of {n}");
    }
    Ok(())
}
