//! Outputs go out with publisher confirms, and an input is acknowledged only
//! once its outputs are confirmed: when the broker refuses an output (a
//! full queue with `x-overflow = reject-publish` nacks it), the input is not
//! acknowledged, the worker stops on the failed delivery, and the input is
//! back in its queue.

mod common;

use std::time::Duration;

use common::{Broker, unique, workers};
use lapin::types::{AMQPValue, FieldTable};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_output_leaves_its_input_unacknowledged_in_the_queue() {
    let mut broker = Broker::connect().await;
    let input = unique("refused");
    let output = format!("{input}.out");
    broker.queue(&input).await;
    let mut full = FieldTable::default();
    full.insert("x-max-length".into(), AMQPValue::LongInt(0));
    full.insert(
        "x-overflow".into(),
        AMQPValue::LongString("reject-publish".into()),
    );
    broker.queue_with(&output, full).await;
    broker.own(&format!("{input}.dlq"));
    let mut workers = workers();
    let worker = workers.spawn(&[
        ("PYTHIA_RABBITMQ__QUEUE", input.clone()),
        ("PYTHIA_RABBITMQ__OUTPUT", output.clone()),
        ("TEST_OUTPUT", "1".into()),
    ]);
    broker
        .wait_for_consumers(&input, 1, Duration::from_secs(30))
        .await;
    broker.publish(&input, [b"7".to_vec()]).await;
    let status = workers.wait(worker, Duration::from_secs(60));
    let log = workers.log(worker);
    assert!(
        !status.success(),
        "the worker stops on an output it cannot deliver:\n{log}"
    );
    assert!(log.contains("refused"), "the reason is logged:\n{log}");
    assert_eq!(
        broker.depth(&input).await,
        (1, 0),
        "the input is back in its queue"
    );
    assert_eq!(broker.depth(&output).await.0, 0);
}
