//! Fan-out: one input topic, outputs routed to named sinks.
//!
//! Each order produces an `accepted` event (sink `orders`), one inventory
//! reservation per line item (sink `inventory`) and, unless it is free, an
//! invoice (sink `billing`). An order's offset commits only when all of its
//! outputs are delivered.
//!
//! ```text
//! cargo run --release --example fan_out
//! ```
//!
//! It ends with `produced=<n> processed=<n> routed orders=.. inventory=.. billing=..`,
//! counted from the output topics, and fails if they differ from what the
//! routing rules imply.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use anyhow::ensure;
use pythia_examples::{message_count, produce, wait_until};
use pythia_kafka::KafkaSink;
use pythia_kafka::core::Record;
use pythia_kafka::prelude::*;
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

#[derive(Serialize, Deserialize)]
struct Order {
    id: u64,
    customer: String,
    items: Vec<Item>,
    total_cents: u64,
}

#[derive(Serialize, Deserialize)]
struct Item {
    sku: String,
    quantity: u32,
}

/// What the router emits; the `event` field names the variant.
#[derive(Serialize)]
#[serde(tag = "event", rename_all = "snake_case")]
enum Event {
    Accepted {
        order_id: u64,
        customer: String,
    },
    Reserve {
        order_id: u64,
        sku: String,
        quantity: u32,
    },
    Invoice {
        order_id: u64,
        customer: String,
        total_cents: u64,
    },
}

#[derive(Default, Worker)]
#[pythia(
    topic = "orders",
    sinks(
        orders = "orders.accepted",
        inventory = "inventory.reservations",
        billing = "billing.invoices"
    )
)]
struct OrderRouter {
    processed: AtomicU64,
}

impl Process for OrderRouter {
    type Input = Order;
    type Output = Event;

    async fn process(
        &self,
        msg: Message<Order>,
        _: &Context,
    ) -> Result<Outputs<Event>, ProcessError> {
        let order = msg.into_payload();
        let mut out = Vec::with_capacity(order.items.len() + 2);
        let accepted = Event::Accepted {
            order_id: order.id,
            customer: order.customer.clone(),
        };
        out.push(
            Output::new(accepted)
                .key(order.customer.clone())
                .to(Self::ORDERS),
        );
        for item in order.items {
            let key = item.sku.clone();
            let reserve = Event::Reserve {
                order_id: order.id,
                sku: item.sku,
                quantity: item.quantity,
            };
            out.push(Output::new(reserve).key(key).to(Self::INVENTORY));
        }
        if order.total_cents > 0 {
            let invoice = Event::Invoice {
                order_id: order.id,
                customer: order.customer.clone(),
                total_cents: order.total_cents,
            };
            out.push(Output::new(invoice).key(order.customer).to(Self::BILLING));
        }
        self.processed.fetch_add(1, Ordering::Relaxed);
        Ok(out.into())
    }
}

const ORDERS: u64 = 2_000;

/// Order `id` has `1 + id % 3` items and is free when `id % 10 == 0`.
fn order(id: u64) -> Order {
    let items = (0..1 + id % 3)
        .map(|i| Item {
            sku: format!("sku-{}", (id + i) % 50),
            quantity: 1 + (i as u32),
        })
        .collect();
    let total_cents = if id.is_multiple_of(10) {
        0
    } else {
        500 + id % 1000
    };
    Order {
        id,
        customer: format!("customer-{}", id % 100),
        items,
        total_cents,
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    pythia_kafka::init_tracing();
    let mut config = Config::from_loader(
        Config::loader_for::<OrderRouter>().default_value("kafka.brokers", "embedded"),
    )?;
    let _broker = config.start_embedded()?;
    let brokers = config.kafka.brokers.clone().unwrap_or_default();

    let router = Arc::new(OrderRouter::default());
    let instance = KafkaWorker::builder(router.clone())
        .config(config.clone())
        .build()?;
    let stop = CancellationToken::new();
    let run = tokio::spawn(instance.run(stop.clone().cancelled_owned()));

    let orders: Vec<Order> = (1..=ORDERS).map(order).collect();
    let expected = [
        ("orders", ORDERS as i64),
        (
            "inventory",
            orders.iter().map(|o| o.items.len() as i64).sum(),
        ),
        (
            "billing",
            orders.iter().filter(|o| o.total_cents > 0).count() as i64,
        ),
    ];
    let sink = KafkaSink::new(&config.kafka)?;
    let records = orders.iter().map(|o| {
        Record::new(serde_json::to_vec(o).expect("orders serialize"))
            .with_key(o.customer.clone())
            .with_topic("orders")
    });
    let produced = produce(&sink, records).await?;

    // Once every order went through `process`, the drain on stop waits for the
    // remaining deliveries: `summary.processed` counts orders fully delivered.
    wait_until(Duration::from_secs(120), || {
        router.processed.load(Ordering::Relaxed) >= produced
    })
    .await?;
    stop.cancel();
    let summary = run.await??;

    let mut routed = Vec::new();
    for (sink, _) in &expected {
        let topic = config.kafka.sinks[*sink].as_str();
        routed.push((*sink, message_count(&brokers, topic)?));
    }
    let show = |counts: &[(&str, i64)]| {
        counts
            .iter()
            .map(|(s, n)| format!("{s}={n}"))
            .collect::<Vec<_>>()
            .join(" ")
    };
    println!(
        "produced={produced} processed={} routed {} expected {}",
        summary.processed,
        show(&routed),
        show(&expected)
    );
    ensure!(
        summary.processed == produced,
        "processed {} of {produced} orders",
        summary.processed
    );
    ensure!(
        routed == expected,
        "routed counts differ from the routing rules"
    );
    Ok(())
}
