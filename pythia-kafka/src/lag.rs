//! Consumer lag read from the broker: the group's committed offsets against the
//! partitions' watermarks.
//!
//! Lag is read by clients of its own, not from the worker's consumer: the
//! consumer's statistics (`statistics.interval.ms`) stop updating a partition's
//! high watermark while it is paused, and its committed offsets are only what
//! this member committed. Asking the broker (ListOffsets for the watermarks,
//! OffsetFetch for the group's commits) gives the same answer whether the
//! worker is busy, paused, dead or not started, which is also what lets
//! `pythia lag` export lag when no consumer runs.
//!
//! Lag is `high − max(committed, low)` ([`pythia_core::metrics::lag`]); its age
//! in seconds is read from the timestamp of the message at that offset.
//!
//! Lag counts what can be consumed. A transactional producer ends every
//! transaction with a commit marker, an offset no consumer is ever handed, so
//! a partition whose input is all processed still sits one offset (or more,
//! after aborted transactions) below its high watermark. When reading from
//! the committed offset finds nothing consumable up to the end, the reader
//! reports lag 0: what is left cannot be processed, and autoscalers, alerts
//! and the stall check must not act on it.

use std::collections::HashMap;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use pythia_core::PartitionId;
use pythia_core::metrics::PartitionLag;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::{Message as _, Offset, TopicPartitionList};

use crate::config::KafkaConfig;
use crate::error::KafkaError;

/// Reads the lag of one consumer group on some topics.
///
/// ```no_run
/// use std::time::Duration;
/// let mut kafka = pythia_kafka::KafkaConfig::default();
/// kafka.brokers = Some("localhost:9092".into());
/// let mut reader = pythia_kafka::LagReader::new(&kafka, "billing", Duration::from_secs(5))?;
/// for p in reader.read(&["orders".to_owned()], None)? {
///     println!("{}/{}: lag {}", p.topic, p.partition, p.lag);
/// }
/// # Ok::<(), pythia_kafka::KafkaError>(())
/// ```
pub struct LagReader {
    /// Asks for metadata, watermarks and the group's commits; never joins.
    client: BaseConsumer,
    /// Reads the message at a partition's next offset for its timestamp.
    peek: BaseConsumer,
    group: String,
    timeout: Duration,
    /// What was found at an offset, per partition, so an unmoved committed
    /// offset is not read again.
    stamps: HashMap<PartitionId, (i64, Peeked)>,
}

/// What reading a partition from an offset found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Peeked {
    /// The first consumable message at or after the offset, stamped (ms).
    Stamp(i64),
    /// Nothing consumable from the offset to the end, at this high watermark:
    /// transaction markers or aborted records only.
    Nothing { high: i64 },
}

impl std::fmt::Debug for LagReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LagReader")
            .field("group", &self.group)
            .finish_non_exhaustive()
    }
}

impl LagReader {
    /// Clients for `kafka.brokers` (and its security settings) reading `group`'s
    /// lag; each broker request waits at most `timeout`.
    pub fn new(kafka: &KafkaConfig, group: &str, timeout: Duration) -> Result<Self, KafkaError> {
        let mut client = kafka.base();
        client
            .set("group.id", group)
            .set("client.id", format!("pythia-lag-{group}"))
            .set("enable.auto.commit", "false");
        let mut peek = kafka.base();
        peek.set("group.id", format!("pythia-lag-peek-{group}"))
            .set("client.id", format!("pythia-lag-peek-{group}"))
            .set("enable.auto.commit", "false")
            .set("enable.auto.offset.store", "false")
            // The end of a partition with nothing consumable left is news.
            .set("enable.partition.eof", "true")
            .set("isolation.level", "read_committed")
            .set("fetch.wait.max.ms", "10")
            .set("fetch.queue.backoff.ms", "10")
            // One message per partition is all it reads.
            .set("queued.min.messages", "1")
            .set("fetch.max.bytes", "1048576")
            .set("max.partition.fetch.bytes", "1048576");
        Ok(Self {
            client: client.create()?,
            peek: peek.create()?,
            group: group.to_owned(),
            timeout,
            stamps: HashMap::new(),
        })
    }

    /// The group this reader reads.
    pub fn group(&self) -> &str {
        &self.group
    }

    /// The partitions of `topics`; with no topics, of every topic on which the
    /// group has committed offsets.
    pub fn partitions(&self, topics: &[String]) -> Result<Vec<PartitionId>, KafkaError> {
        let metadata = match topics {
            [one] => self.client.fetch_metadata(Some(one), self.timeout)?,
            _ => self.client.fetch_metadata(None, self.timeout)?,
        };
        let mut partitions: Vec<PartitionId> = metadata
            .topics()
            .iter()
            .filter(|t| {
                if topics.is_empty() {
                    !t.name().starts_with("__")
                } else {
                    topics.iter().any(|name| name == t.name())
                }
            })
            .flat_map(|t| {
                t.partitions()
                    .iter()
                    .map(|p| PartitionId::new(t.name(), p.id()))
            })
            .collect();
        partitions.sort();
        Ok(partitions)
    }

    /// The lag of every partition of `topics` (see [`LagReader::partitions`]),
    /// or of `only` those partitions when given. Fails when the broker does not
    /// answer; a partition whose watermarks cannot be read is left out.
    pub fn read(
        &mut self,
        topics: &[String],
        only: Option<&[PartitionId]>,
    ) -> Result<Vec<PartitionLag>, KafkaError> {
        // Always ask for metadata: it is also the broker reachability check.
        let mut partitions = self.partitions(topics)?;
        if let Some(only) = only {
            partitions.retain(|p| only.contains(p));
        }
        if partitions.is_empty() {
            return Ok(Vec::new());
        }
        let committed = self.committed(&partitions)?;
        if topics.is_empty() {
            // Discovered topics: only those the group has committed on.
            partitions.retain(|p| {
                committed
                    .iter()
                    .any(|(q, c)| q.topic() == p.topic() && c.is_some())
            });
        }
        let mut lags = Vec::with_capacity(partitions.len());
        for p in &partitions {
            let (low, high) = match self
                .client
                .fetch_watermarks(p.topic(), p.index(), self.timeout)
            {
                Ok(marks) => marks,
                Err(error) => {
                    tracing::debug!(%error, partition = %p, "watermarks not read");
                    continue;
                }
            };
            let committed = committed.get(p).copied().flatten();
            lags.push(PartitionLag::new(
                p.topic(),
                p.index(),
                low,
                high,
                committed,
            ));
        }
        self.age(&mut lags);
        Ok(lags)
    }

    fn committed(
        &self,
        partitions: &[PartitionId],
    ) -> Result<HashMap<PartitionId, Option<i64>>, KafkaError> {
        let mut tpl = TopicPartitionList::with_capacity(partitions.len());
        for p in partitions {
            tpl.add_partition(p.topic(), p.index());
        }
        let committed = self.client.committed_offsets(tpl, self.timeout)?;
        Ok(committed
            .elements()
            .iter()
            .map(|e| {
                let offset = match e.offset() {
                    Offset::Offset(o) if o >= 0 => Some(o),
                    _ => None,
                };
                (PartitionId::new(e.topic(), e.partition()), offset)
            })
            .collect())
    }

    /// Sets each lagging partition's age from the timestamp of its oldest
    /// uncommitted message, reading the messages it has not read before; a
    /// partition with nothing consumable after its committed offset gets lag
    /// 0 (see the module docs).
    fn age(&mut self, lags: &mut [PartitionLag]) {
        let key = |p: &PartitionLag| PartitionId::new(p.topic.as_str(), p.partition);
        let wanted: Vec<(PartitionId, i64, i64)> = lags
            .iter()
            .filter(|p| p.lag > 0)
            .map(|p| (key(p), p.next_offset(), p.high_watermark))
            .filter(|(id, offset, high)| {
                self.stamps
                    .get(id)
                    .is_none_or(|known| !still_valid(known, *offset, *high))
            })
            .collect();
        if !wanted.is_empty() {
            self.peek(&wanted);
        }
        let now_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as i64);
        let mut keep = HashMap::new();
        for p in lags.iter_mut() {
            if p.lag == 0 {
                p.lag_seconds = Some(0.0);
                continue;
            }
            let id = key(p);
            match self.stamps.get(&id) {
                Some(&known @ (offset, Peeked::Stamp(ts))) if offset == p.next_offset() => {
                    p.lag_seconds = Some(((now_ms - ts).max(0)) as f64 / 1000.0);
                    keep.insert(id, known);
                }
                Some(&known @ (_, Peeked::Nothing { .. }))
                    if still_valid(&known, p.next_offset(), p.high_watermark) =>
                {
                    p.lag = 0;
                    p.lag_seconds = Some(0.0);
                    keep.insert(id, known);
                }
                _ => {}
            }
        }
        self.stamps = keep;
    }

    /// Reads each wanted partition from its offset up to its first consumable
    /// message or its end, one topic at a time (the end of a partition is
    /// reported by index only).
    fn peek(&mut self, wanted: &[(PartitionId, i64, i64)]) {
        let mut topics: Vec<&str> = wanted.iter().map(|(p, _, _)| p.topic()).collect();
        topics.sort_unstable();
        topics.dedup();
        for topic in topics {
            let of_topic: Vec<&(PartitionId, i64, i64)> = wanted
                .iter()
                .filter(|(p, _, _)| p.topic() == topic)
                .collect();
            self.peek_topic(&of_topic);
        }
    }

    fn peek_topic(&mut self, wanted: &[&(PartitionId, i64, i64)]) {
        let mut tpl = TopicPartitionList::with_capacity(wanted.len());
        for (p, offset, _) in wanted {
            if let Err(error) =
                tpl.add_partition_offset(p.topic(), p.index(), Offset::Offset(*offset))
            {
                tracing::debug!(%error, partition = %p, "cannot ask for the oldest message");
            }
        }
        if let Err(error) = self.peek.assign(&tpl) {
            tracing::debug!(%error, "cannot read the oldest uncommitted messages");
            return;
        }
        let deadline = Instant::now() + self.timeout.min(Duration::from_secs(2));
        let mut missing: Vec<&(PartitionId, i64, i64)> = wanted.to_vec();
        while !missing.is_empty() && Instant::now() < deadline {
            let (index, found) = match self.peek.poll(Duration::from_millis(50)) {
                Some(Ok(message)) => match message.timestamp().to_millis() {
                    Some(ts) => (message.partition(), Peeked::Stamp(ts)),
                    None => continue,
                },
                Some(Err(rdkafka::error::KafkaError::PartitionEOF(index))) => {
                    // Only partitions still missing are looked up: one whose
                    // first message came has ended its part of the read.
                    match missing.iter().find(|(p, _, _)| p.index() == index) {
                        Some((_, _, high)) => (index, Peeked::Nothing { high: *high }),
                        None => continue,
                    }
                }
                Some(Err(error)) => {
                    tracing::debug!(%error, "reading the oldest uncommitted message");
                    continue;
                }
                None => continue,
            };
            if let Some(at) = missing.iter().position(|(p, _, _)| p.index() == index) {
                let (p, asked, _) = missing.swap_remove(at);
                // Stamped under the asked offset: the first readable message
                // at or after it is the oldest uncommitted.
                self.stamps.insert(p.clone(), (*asked, found));
            }
        }
        let _ = self.peek.unassign();
    }
}

/// Whether what was found at a partition still holds for its next offset and
/// high watermark now: a stamp while the offset has not moved, "nothing
/// consumable" while nothing has been written since either.
fn still_valid(known: &(i64, Peeked), offset: i64, high: i64) -> bool {
    match *known {
        (at, Peeked::Stamp(_)) => at == offset,
        (at, Peeked::Nothing { high: then }) => at == offset && then == high,
    }
}

/// The lag of a group as JSON, for `pythia lag --json` and the exporter's
/// `/lag` endpoint (KEDA's `metrics-api` scaler reads `lag`).
///
/// ```
/// use pythia_core::metrics::PartitionLag;
/// let json = pythia_kafka::lag_json("billing", &[PartitionLag::new("orders", 0, 0, 10, Some(4))]);
/// assert_eq!(json["lag"], 6);
/// assert_eq!(json["partitions"][0]["committed"], 4);
/// ```
pub fn lag_json(group: &str, lags: &[PartitionLag]) -> serde_json::Value {
    let partitions: Vec<serde_json::Value> = lags
        .iter()
        .map(|p| {
            serde_json::json!({
                "topic": p.topic,
                "partition": p.partition,
                "committed": p.committed,
                "low_watermark": p.low_watermark,
                "high_watermark": p.high_watermark,
                "lag": p.lag,
                "lag_seconds": p.lag_seconds,
            })
        })
        .collect();
    let max_seconds = lags
        .iter()
        .filter_map(|p| p.lag_seconds)
        .fold(0.0f64, f64::max);
    serde_json::json!({
        "group": group,
        "lag": lags.iter().map(|p| p.lag).sum::<i64>(),
        "lag_seconds": max_seconds,
        "partitions": partitions,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stamp_holds_while_the_committed_offset_stays() {
        let known = (40, Peeked::Stamp(1_000));
        assert!(still_valid(&known, 40, 50));
        assert!(
            still_valid(&known, 40, 90),
            "new messages do not move the oldest"
        );
        assert!(!still_valid(&known, 41, 50), "a commit moves it");
    }

    #[test]
    fn nothing_consumable_holds_only_until_something_is_written() {
        let known = (49, Peeked::Nothing { high: 50 });
        assert!(still_valid(&known, 49, 50));
        assert!(
            !still_valid(&known, 49, 51),
            "a new message may be consumable"
        );
        assert!(!still_valid(&known, 50, 50), "a commit asks again");
    }
}
