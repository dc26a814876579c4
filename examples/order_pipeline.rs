//! A three-stage pipeline joined by topics: ingest → validate → store.
//!
//! ```text
//! orders.raw ─ingest─▶ orders.parsed ─validate─▶ orders.valid ─store─▶ (database)
//!                └──▶ orders.malformed    └──▶ orders.rejected
//! ```
//!
//! Each stage is its own worker with its own group, so in production each runs
//! as its own deployment and scales on its own lag:
//!
//! ```text
//! PYTHIA_KAFKA__BROKERS=kafka:9092 order_pipeline stage ingest
//! PYTHIA_KAFKA__BROKERS=kafka:9092 order_pipeline stage validate
//! PYTHIA_KAFKA__BROKERS=kafka:9092 ORDER_STORE=orders.jsonl order_pipeline stage store
//! ```
//!
//! With no arguments, all three run in this process on the embedded broker,
//! 5,000 CSV lines go in, and it ends with
//! `produced=<n> processed=<n> stored=.. rejected=.. malformed=..` (every line
//! ends in exactly one of the three), failing if the counts differ from the rules.

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{bail, ensure};
use pythia_examples::{produce, wait_until};
use pythia_kafka::core::{Record, shutdown};
use pythia_kafka::prelude::*;
use pythia_kafka::{ConfigLoader, KafkaConfig, KafkaSink, Utf8};
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

#[derive(Clone, Debug, Serialize, Deserialize)]
struct Order {
    id: u64,
    customer: String,
    amount_cents: u64,
}

/// Stage 1: parses CSV lines `id,customer,amount_cents`.
#[derive(Default, Worker)]
#[pythia(
    topic = "orders.raw",
    codec = (Utf8, Json),
    sinks(parsed = "orders.parsed", malformed = "orders.malformed")
)]
struct Ingest {
    malformed: AtomicU64,
}

#[derive(Serialize)]
#[serde(untagged)]
enum Parsed {
    Order(Order),
    Malformed { line: String, reason: String },
}

impl Process for Ingest {
    type Input = String;
    type Output = Parsed;

    async fn process(
        &self,
        msg: Message<String>,
        _: &Context,
    ) -> Result<Outputs<Parsed>, ProcessError> {
        let line = msg.payload().trim();
        Ok(match parse(line) {
            Ok(order) => Output::new(Parsed::Order(order)).to(Self::PARSED),
            Err(reason) => {
                self.malformed.fetch_add(1, Ordering::Relaxed);
                let malformed = Parsed::Malformed {
                    line: line.to_owned(),
                    reason,
                };
                Output::new(malformed).to(Self::MALFORMED)
            }
        }
        .into())
    }
}

fn parse(line: &str) -> Result<Order, String> {
    let fields: Vec<&str> = line.split(',').collect();
    let [id, customer, amount] = fields[..] else {
        return Err(format!("expected 3 fields, found {}", fields.len()));
    };
    Ok(Order {
        id: id.parse().map_err(|e| format!("id `{id}`: {e}"))?,
        customer: customer.to_owned(),
        amount_cents: amount
            .parse()
            .map_err(|e| format!("amount `{amount}`: {e}"))?,
    })
}

/// Stage 2: business rules.
#[derive(Default, Worker)]
#[pythia(
    topic = "orders.parsed",
    sinks(valid = "orders.valid", rejected = "orders.rejected")
)]
struct Validate {
    rejected: AtomicU64,
}

#[derive(Serialize)]
#[serde(untagged)]
enum Verdict {
    Valid(Order),
    Rejected { order: Order, reason: &'static str },
}

impl Process for Validate {
    type Input = Order;
    type Output = Verdict;

    async fn process(
        &self,
        msg: Message<Order>,
        _: &Context,
    ) -> Result<Outputs<Verdict>, ProcessError> {
        let order = msg.into_payload();
        let reason = match order.amount_cents {
            0 => Some("amount must be positive"),
            n if n > 1_000_000 => Some("amount above the limit"),
            _ if order.customer.is_empty() => Some("no customer"),
            _ => None,
        };
        let key = order.customer.clone();
        Ok(match reason {
            None => Output::new(Verdict::Valid(order)).key(key).to(Self::VALID),
            Some(reason) => {
                self.rejected.fetch_add(1, Ordering::Relaxed);
                Output::new(Verdict::Rejected { order, reason })
                    .key(key)
                    .to(Self::REJECTED)
            }
        }
        .into())
    }
}

/// Stage 3: stores valid orders (in memory, and appended to `ORDER_STORE` as JSON lines).
#[derive(Default, Worker)]
#[pythia(topic = "orders.valid")]
struct Store {
    orders: Mutex<BTreeMap<u64, Order>>,
    file: Option<Mutex<File>>,
}

impl Process for Store {
    type Input = Order;
    type Output = ();

    async fn process(&self, msg: Message<Order>, _: &Context) -> Result<Outputs<()>, ProcessError> {
        let order = msg.into_payload();
        if let Some(file) = &self.file {
            let line = format!("{}\n", serde_json::to_string(&order)?);
            file.lock()
                .unwrap_or_else(|p| p.into_inner())
                .write_all(line.as_bytes())?;
        }
        self.orders
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(order.id, order);
        Ok(Outputs::none())
    }
}

impl Store {
    fn from_env() -> anyhow::Result<Self> {
        let file = match std::env::var_os("ORDER_STORE") {
            Some(path) => Some(Mutex::new(
                OpenOptions::new().create(true).append(true).open(path)?,
            )),
            None => None,
        };
        Ok(Self {
            file,
            ..Self::default()
        })
    }

    fn stored(&self) -> u64 {
        self.orders.lock().unwrap_or_else(|p| p.into_inner()).len() as u64
    }
}

const LINES: u64 = 5_000;

/// Line `id`: malformed when `id % 50 == 0`, a zero amount (rejected) when
/// `id % 20 == 0`, else a valid order.
fn line(id: u64) -> String {
    match id {
        _ if id.is_multiple_of(50) => format!("{id};customer-{}", id % 100),
        _ if id.is_multiple_of(20) => format!("{id},customer-{},0", id % 100),
        _ => format!("{id},customer-{},{}", id % 100, 100 + id % 900),
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    pythia_kafka::init_tracing();
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.iter().map(String::as_str).collect::<Vec<_>>()[..] {
        [] => all_in_one().await,
        ["stage", stage] => run_stage(stage).await,
        _ => bail!("usage: order_pipeline [stage ingest|validate|store]"),
    }
}

/// One stage as its own process, configured by `PYTHIA_*` variables.
async fn run_stage(stage: &str) -> anyhow::Result<()> {
    let summary = match stage {
        "ingest" => Ingest::default().run().await?,
        "validate" => Validate::default().run().await?,
        "store" => Store::from_env()?.run().await?,
        other => bail!("unknown stage `{other}`: use ingest, validate or store"),
    };
    println!("stage={stage} processed={}", summary.processed);
    Ok(())
}

/// All stages in this process, on the embedded broker unless brokers are set.
async fn all_in_one() -> anyhow::Result<()> {
    let (ingest, validate, store) = (
        Arc::new(Ingest::default()),
        Arc::new(Validate::default()),
        Arc::new(Store::from_env()?),
    );
    let pipeline =
        Pipeline::builder(ConfigLoader::new().default_value("kafka.brokers", "embedded"))
            .stage(ingest.clone())
            .stage(validate.clone())
            .stage(store.clone())
            .build()?;

    let mut producer = KafkaConfig::default();
    producer.brokers = Some(pipeline.brokers().to_owned());
    let sink = KafkaSink::new(&producer)?;
    let stop = CancellationToken::new();
    let run = tokio::spawn(pipeline.run({
        let stop = stop.clone();
        async move {
            tokio::select! {
                () = stop.cancelled() => {}
                () = shutdown::signal() => {}
            }
        }
    }));

    let records = (1..=LINES).map(|id| Record::new(line(id)).with_topic("orders.raw"));
    let produced = produce(&sink, records).await?;
    drop(sink); // the embedded broker stops with the pipeline
    let finished = || {
        ingest.malformed.load(Ordering::Relaxed)
            + validate.rejected.load(Ordering::Relaxed)
            + store.stored()
            >= produced
    };
    wait_until(Duration::from_secs(120), finished).await?;
    stop.cancel();
    let stages = run.await??;

    let malformed = ingest.malformed.load(Ordering::Relaxed);
    let rejected = validate.rejected.load(Ordering::Relaxed);
    let stored = store.stored();
    let per_stage: Vec<String> = stages
        .iter()
        .map(|s| format!("{}:{}", s.name, s.summary.processed))
        .collect();
    println!(
        "produced={produced} processed={} stored={stored} rejected={rejected} malformed={malformed} stages=[{}]",
        stored + rejected + malformed,
        per_stage.join(",")
    );
    let expect_malformed = (1..=LINES).filter(|id| id.is_multiple_of(50)).count() as u64;
    let expect_rejected = (1..=LINES)
        .filter(|id| id.is_multiple_of(20) && !id.is_multiple_of(50))
        .count() as u64;
    ensure!(
        malformed == expect_malformed,
        "malformed {malformed}, expected {expect_malformed}"
    );
    ensure!(
        rejected == expect_rejected,
        "rejected {rejected}, expected {expect_rejected}"
    );
    ensure!(
        stored == produced - expect_malformed - expect_rejected,
        "stored {stored}"
    );
    Ok(())
}
