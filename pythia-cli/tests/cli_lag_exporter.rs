//! `pythia lag --serve` tells the truth about itself: with the broker gone,
//! within two read intervals it reports `pythia_lag_exporter_up 0`, drops
//! the lag series instead of repeating them, and answers `/lag` with 503.

mod common;

use std::time::{Duration, Instant};

use common::{Process, http_get};
use rdkafka::ClientConfig;
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};

fn value(metrics: &str, prefix: &str) -> Option<f64> {
    metrics
        .lines()
        .find(|l| l.starts_with(prefix))
        .and_then(|l| l.rsplit_once(' '))
        .and_then(|(_, v)| v.parse().ok())
}

#[test]
fn a_stopped_broker_turns_the_exporter_down_within_two_intervals() {
    let (broker, bootstrap) = Process::start(&["broker", "--topic", "orders:2"], &[], "bootstrap=");
    let producer: BaseProducer = ClientConfig::new()
        .set("bootstrap.servers", &bootstrap)
        .create()
        .expect("producer");
    for i in 0..6 {
        let payload = format!("m{i}");
        producer
            .send(
                BaseRecord::<(), _>::to("orders")
                    .payload(&payload)
                    .partition(i % 2),
            )
            .expect("send");
    }
    producer.flush(Duration::from_secs(30)).expect("flush");
    drop(producer);

    let interval = Duration::from_secs(1);
    let (mut exporter, address) = Process::start(
        &[
            "lag",
            "--brokers",
            &bootstrap,
            "--group",
            "billing",
            "--topic",
            "orders",
            "--serve",
            "127.0.0.1:0",
            "--interval",
            "1s",
            "--timeout",
            "1s",
        ],
        &[],
        "serving=",
    );
    // Up, with the lag of both partitions.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (_, metrics) = http_get(&address, "/metrics");
        if value(&metrics, "pythia_lag_exporter_up{") == Some(1.0) {
            assert!(
                metrics.contains(
                    r#"pythia_consumer_lag{group="billing",partition="0",topic="orders"} 3"#
                ),
                "{metrics}"
            );
            break;
        }
        assert!(Instant::now() < deadline, "never up:\n{metrics}");
        std::thread::sleep(Duration::from_millis(100));
    }
    let (code, lag) = http_get(&address, "/lag");
    assert_eq!(code, 200, "{lag}");
    assert!(lag.contains(r#""lag":6"#), "{lag}");

    drop(broker);
    let stopped = Instant::now();
    let (metrics, lag) = loop {
        let (_, metrics) = http_get(&address, "/metrics");
        let (code, lag) = http_get(&address, "/lag");
        if value(&metrics, "pythia_lag_exporter_up{") == Some(0.0) && code == 503 {
            break (metrics, lag);
        }
        // Two intervals, and the time a scrape takes to see the change.
        assert!(
            stopped.elapsed() < 2 * interval + Duration::from_millis(900),
            "still up {:?} after the broker stopped:\n{metrics}\n/lag {code}: {lag}",
            stopped.elapsed()
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(
        !metrics.contains("pythia_consumer_lag{"),
        "stale lag is not served as fresh:\n{metrics}"
    );
    let lag: serde_json::Value = serde_json::from_str(&lag).expect("JSON error body");
    assert_eq!(lag["group"], "billing");
    assert!(
        lag["error"].as_str().is_some_and(|e| !e.is_empty()),
        "{lag}"
    );
    assert!(lag.get("lag").is_none(), "no lag value in the error: {lag}");
    // Staleness keeps counting while the broker is away.
    std::thread::sleep(Duration::from_millis(1500));
    let (_, metrics) = http_get(&address, "/metrics");
    let staleness = value(&metrics, "pythia_lag_exporter_staleness_seconds{").expect("staleness");
    assert!(staleness >= 1.5, "staleness {staleness}:\n{metrics}");

    // SIGTERM stops it, even with a read hanging on the missing broker.
    exporter.terminate();
    let deadline = Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(status) = exporter.child.try_wait().expect("wait") {
            break status;
        }
        assert!(
            Instant::now() < deadline,
            "the exporter did not exit on SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(status.success(), "{status}");
}
