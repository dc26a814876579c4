//! The smallest worker: a unit struct with one topic. Everything else takes its
//! default: the name is the struct's name in kebab-case, the group is the name,
//! the codec is JSON, no sinks and no limits.

use std::future::Future;
use std::task::{Poll, Waker};

use pythia_core::codec::Json;
use pythia_core::{
    Context, Message, Outputs, PartitionId, Process, ProcessError, Worker, WorkerSpec,
};

#[derive(serde::Deserialize)]
struct Order {
    amount_cents: u64,
}

#[derive(Worker)]
#[pythia(topic = "orders")]
struct OrderTotals;

impl Process for OrderTotals {
    type Input = Order;
    type Output = u64;

    async fn process(
        &self,
        msg: Message<Order>,
        _: &Context,
    ) -> Result<Outputs<u64>, ProcessError> {
        Ok(Outputs::one(msg.payload().amount_cents))
    }
}

/// Compiles only if `W`'s codec is `C`.
fn codec_is<W: Worker<Codec = C>, C>() {}

/// Runs a future that completes without waiting.
fn now<F: Future>(fut: F) -> F::Output {
    let mut fut = std::pin::pin!(fut);
    match fut
        .as_mut()
        .poll(&mut std::task::Context::from_waker(Waker::noop()))
    {
        Poll::Ready(out) => out,
        Poll::Pending => panic!("the future is not ready"),
    }
}

fn main() {
    let spec = <OrderTotals as Worker>::SPEC;
    assert_eq!(spec.name, "order-totals");
    assert_eq!(spec.topics, ["orders"]);
    assert_eq!(spec.group, None);
    assert_eq!(spec.group_or_name(), "order-totals");
    assert_eq!(spec.output, None);
    assert!(spec.sinks.is_empty());
    assert_eq!(spec.default_sink, None);
    assert_eq!(spec.max_in_flight, None);
    assert_eq!(spec.partition_buffer, None);
    assert_eq!(
        spec,
        WorkerSpec::new("order-totals").with_topics(&["orders"])
    );
    codec_is::<OrderTotals, Json>();

    // The derive leaves the logic alone: `process` is the user's.
    let msg = Message::new(
        PartitionId::new("orders", 0),
        7,
        Order { amount_cents: 1250 },
    );
    let outputs = now(OrderTotals.process(msg, &Context::detached(spec.name))).unwrap();
    assert_eq!(outputs.len(), 1);
}
