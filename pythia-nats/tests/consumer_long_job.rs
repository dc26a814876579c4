//! A job longer than `ack_wait` is not delivered to another instance while
//! its owner is alive and working on it: the owner reports it in progress
//! (`+WPI`) every `progress_interval`, and acknowledges it when done.

mod common;

use std::time::{Duration, Instant};

use common::{Broker, Setup, workers};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_three_times_longer_than_ack_wait_is_processed_once() {
    let mut broker = Broker::connect().await;
    let setup = Setup::new(&mut broker, "long").await;
    // ack_wait 2 s, the job 7 s: without progress acks the idle second
    // worker would be handed the job three times over.
    let env = setup.env(&[("PYTHIA_NATS__ACK_WAIT", "2s"), ("TEST_LONG_MS", "7000")]);
    let mut workers = workers();
    workers.spawn(&env);
    workers.spawn(&env);
    broker
        .wait_for_fetchers(&setup.stream, &setup.consumer, 2, Duration::from_secs(30))
        .await;
    let started = Instant::now();
    broker.publish(&setup.input, [b"long-1".to_vec()]).await;
    // While the job runs, the server never counts it redelivered.
    let mut held = false;
    while started.elapsed() < Duration::from_secs(6) {
        let info = broker
            .consumer(&setup.stream, &setup.consumer)
            .await
            .expect("the consumer exists");
        held |= info.num_ack_pending == 1;
        assert_eq!(
            info.num_redelivered,
            0,
            "redelivered after {:?} while its owner works on it:\n{}\n{}",
            started.elapsed(),
            workers.log(0),
            workers.log(1)
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    assert!(held, "the job was held by a worker");
    let taken = broker
        .take(
            &setup.output_stream,
            1,
            Duration::from_secs(5),
            Duration::from_secs(30),
        )
        .await;
    assert!(
        started.elapsed() > Duration::from_secs(7),
        "the job took its 7 s"
    );
    assert_eq!(taken.len(), 1, "processed exactly once: {taken:?}");
    assert_eq!(taken[0].payload, b"long-1");
    let info = broker
        .consumer(&setup.stream, &setup.consumer)
        .await
        .expect("the consumer exists");
    assert_eq!(
        (
            info.num_ack_pending,
            info.num_redelivered,
            info.delivered.stream_sequence
        ),
        (0, 0, 1),
        "acknowledged, never redelivered"
    );
    assert_eq!(info.delivered.consumer_sequence, 1, "delivered once in all");
    workers.stop_all();
}
