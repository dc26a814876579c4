//! What the in-process tests read back from the broker.

// Each test file uses its own subset.
#![allow(dead_code)]

use std::time::Duration;

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};

const TIMEOUT: Duration = Duration::from_secs(10);

/// The messages `topic` holds: the sum of its partitions' high watermarks.
pub(crate) fn high_total(bootstrap: &str, topic: &str, partitions: i32) -> i64 {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .create()
        .unwrap();
    (0..partitions)
        .map(|p| consumer.fetch_watermarks(topic, p, TIMEOUT).unwrap().1)
        .sum()
}

/// The sum of `group`'s committed offsets on `topic` (an uncommitted partition
/// counts 0); `None` when no partition has a commit.
pub(crate) fn committed_total(
    bootstrap: &str,
    group: &str,
    topic: &str,
    partitions: i32,
) -> Option<i64> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", group)
        .create()
        .unwrap();
    let mut tpl = TopicPartitionList::new();
    for p in 0..partitions {
        tpl.add_partition(topic, p);
    }
    let committed = consumer.committed_offsets(tpl, TIMEOUT).unwrap();
    let offsets: Vec<i64> = committed
        .elements()
        .iter()
        .filter_map(|e| match e.offset() {
            Offset::Offset(o) => Some(o),
            _ => None,
        })
        .collect();
    (!offsets.is_empty()).then(|| offsets.iter().sum())
}
