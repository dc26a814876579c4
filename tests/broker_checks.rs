//! The harness's broker-side checks agree with what was produced and
//! committed, on whichever broker `TEST_BROKER` selects.

use std::time::Duration;

use pythia_tests::*;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};

const PARTITIONS: i32 = 4;

#[test]
fn watermarks_and_committed_offsets_match_what_was_produced_and_committed() {
    let Some(broker) = selected_broker("checks", PARTITIONS) else {
        return;
    };
    let bootstrap = broker.bootstrap_servers();
    assert_eq!(high_watermarks(bootstrap, "checks", PARTITIONS), vec![0; 4]);
    assert_eq!(
        committed(bootstrap, "checks", "checks", PARTITIONS),
        vec![None; 4]
    );

    produce(bootstrap, "checks", PARTITIONS, 0..103);
    assert_eq!(
        high_watermarks(bootstrap, "checks", PARTITIONS),
        spread(103, PARTITIONS)
    );

    // A commit by a consumer that never joined the group (as a manual
    // assignment does) is what `committed` reads back.
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", "checks")
        .set("enable.auto.commit", "false")
        .create()
        .expect("consumer");
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset("checks", 0, Offset::Offset(7))
        .unwrap();
    tpl.add_partition_offset("checks", 2, Offset::Offset(25))
        .unwrap();
    consumer.commit(&tpl, CommitMode::Sync).expect("commit");
    wait_until(Duration::from_secs(30), "the commit to be visible", || {
        committed(bootstrap, "checks", "checks", PARTITIONS) == [Some(7), None, Some(25), None]
    });
}
