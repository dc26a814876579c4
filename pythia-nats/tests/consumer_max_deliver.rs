//! A message that took its worker down is not handed out forever nor lost
//! when the server gives up on it: on its last delivery (`max_deliver`) the
//! worker that gets it dead-letters it unprocessed, with kind `max_deliver`
//! and the delivery count, and terminates it.

mod common;

use std::time::{Duration, Instant};

use common::{Broker, Setup, workers};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_last_delivery_of_a_message_that_crashed_its_worker_is_dead_lettered() {
    let mut broker = Broker::connect().await;
    let setup = Setup::new(&mut broker, "maxdeliver").await;
    let (_, dead_stream) = setup.dead_letters();
    let env = setup.env(&[
        ("PYTHIA_NATS__MAX_DELIVER", "2"),
        ("PYTHIA_NATS__ACK_WAIT", "1s"),
        // The job outlasts the test: its first owner is killed while on it.
        ("TEST_LONG_MS", "600000"),
    ]);
    let mut workers = workers();
    let first = workers.spawn(&env);
    broker
        .wait_for_fetchers(&setup.stream, &setup.consumer, 1, Duration::from_secs(30))
        .await;
    broker
        .publish(&setup.input, [b"long-crasher".to_vec()])
        .await;
    let end = Instant::now() + Duration::from_secs(10);
    loop {
        let info = broker.consumer(&setup.stream, &setup.consumer).await;
        if info.is_some_and(|i| i.num_ack_pending == 1) {
            break;
        }
        assert!(Instant::now() < end, "the first worker never took the job");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    workers.signal(first, libc::SIGKILL);
    workers.wait(first, Duration::from_secs(10));
    let second = workers.spawn(&env);
    let letters = broker
        .take(
            &dead_stream,
            1,
            Duration::from_secs(1),
            Duration::from_secs(30),
        )
        .await;
    assert_eq!(
        letters.len(),
        1,
        "one dead letter:\n{}",
        workers.log(second)
    );
    let letter = &letters[0];
    assert_eq!(letter.payload, b"long-crasher");
    assert_eq!(
        letter.headers["pythia.dlq.kind"],
        pythia_nats::GIVEN_UP_KIND
    );
    assert_eq!(letter.headers["pythia.dlq.attempts"], "2");
    assert_eq!(letter.headers["pythia.dlq.topic"], setup.input);
    assert!(
        letter.headers["pythia.dlq.reason"].contains("nats.max_deliver = 2"),
        "{letter:?}"
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    let info = broker
        .consumer(&setup.stream, &setup.consumer)
        .await
        .expect("the consumer exists");
    assert_eq!(
        (info.num_pending, info.num_ack_pending),
        (0, 0),
        "terminated, not pending"
    );
    let outputs = broker
        .take(
            &setup.output_stream,
            0,
            Duration::from_millis(500),
            Duration::from_secs(5),
        )
        .await;
    assert!(outputs.is_empty(), "never processed: {outputs:?}");
    workers.stop_all();
}
