//! Quickstart: 10,000 JSON orders processed by two worker instances in one group.
//!
//! With no brokers configured it runs on the embedded broker:
//!
//! ```text
//! cargo run --release --example quickstart
//! ```
//!
//! Point it at a cluster with `PYTHIA_KAFKA__BROKERS=host:9092`; the topic
//! `orders` must exist there. It ends with a line like
//! `produced=10000 processed=10000 ...`; `elapsed` and `rate` cover producing
//! and processing the orders, after both instances have joined (`join`).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use pythia_kafka::KafkaSink;
use pythia_kafka::core::Record;
use pythia_kafka::prelude::*;
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

#[derive(Debug, Serialize, Deserialize)]
struct Order {
    id: u64,
    customer: String,
    amount_cents: u64,
}

/// Sums order amounts; counts what it processed.
#[derive(Default, Worker)]
#[pythia(topic = "orders", group = "quickstart")]
struct OrderTotals {
    processed: AtomicU64,
    revenue_cents: AtomicU64,
}

impl Process for OrderTotals {
    type Input = Order;
    type Output = ();

    async fn process(
        &self,
        msg: Message<Order>,
        _ctx: &Context,
    ) -> Result<Outputs<()>, ProcessError> {
        let order = msg.payload();
        if order.amount_cents == 0 {
            return Err(ProcessError::permanent(format!(
                "order {} has no amount",
                order.id
            )));
        }
        self.revenue_cents
            .fetch_add(order.amount_cents, Ordering::Relaxed);
        self.processed.fetch_add(1, Ordering::Relaxed);
        Ok(Outputs::none())
    }
}

const ORDERS: u64 = 10_000;
const INSTANCES: usize = 2;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    pythia_kafka::init_tracing();
    let started = Instant::now();
    // The derive's topic and group, then pythia.toml, then PYTHIA_* variables;
    // with no brokers set anywhere, the embedded broker.
    let mut config = Config::from_loader(
        Config::loader_for::<OrderTotals>().default_value("kafka.brokers", "embedded"),
    )?;
    let _broker = config.start_embedded()?; // None when PYTHIA_KAFKA__BROKERS names a cluster
    let topic = config.kafka.topics[0].clone();

    // The idempotent producer gets its producer id while the group forms.
    let producer = KafkaSink::new(&config.kafka)?;
    // Both instances join the group and split the partitions before the load.
    let totals = Arc::new(OrderTotals::default());
    let stop = CancellationToken::new();
    let mut instances = Vec::new();
    let mut statuses = Vec::new();
    for _ in 0..INSTANCES {
        let instance = KafkaWorker::builder(totals.clone())
            .config(config.clone())
            .build()?;
        statuses.push(instance.status());
        let stop = stop.clone();
        instances.push(tokio::spawn(
            instance.run(async move { stop.cancelled().await }),
        ));
    }
    for status in &mut statuses {
        tokio::time::timeout(
            Duration::from_secs(30),
            status.wait_for(|s| !s.assigned.is_empty()),
        )
        .await
        .context("instances did not join the group within 30 s")??;
    }
    let joined = started.elapsed();

    let load_started = Instant::now();
    let produced = produce_orders(&producer, &topic).await?;
    tracing::debug!(
        seconds = load_started.elapsed().as_secs_f64(),
        "orders produced"
    );
    let deadline = Instant::now() + Duration::from_secs(120);
    while totals.processed.load(Ordering::Relaxed) < produced && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let elapsed = load_started.elapsed();
    stop.cancel();
    let mut per_instance = Vec::new();
    for instance in instances {
        let summary = instance.await.context("worker task panicked")??;
        per_instance.push(summary.processed.to_string());
    }
    let processed = totals.processed.load(Ordering::Relaxed);
    println!(
        "produced={produced} processed={processed} instances={INSTANCES} per_instance=[{}] revenue_cents={} join={:.2}s elapsed={:.2}s rate={:.0} msg/s",
        per_instance.join(","),
        totals.revenue_cents.load(Ordering::Relaxed),
        joined.as_secs_f64(),
        elapsed.as_secs_f64(),
        processed as f64 / elapsed.as_secs_f64(),
    );
    if processed != produced {
        bail!("processed {processed} of {produced} orders");
    }
    Ok(())
}

async fn produce_orders(sink: &KafkaSink, topic: &str) -> anyhow::Result<u64> {
    let mut confirmations = Vec::with_capacity(ORDERS as usize);
    for id in 1..=ORDERS {
        let order = Order {
            id,
            customer: format!("customer-{}", id % 100),
            amount_cents: 100 + id % 900,
        };
        let record = Record::new(serde_json::to_vec(&order)?)
            .with_key(order.customer.clone())
            .with_topic(topic);
        confirmations.push(sink.produce(record).await);
    }
    for confirmation in confirmations {
        confirmation.await?;
    }
    Ok(ORDERS)
}
