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
    /// Timestamp (ms) of the message at an offset, per partition, so an
    /// unmoved committed offset is not read again.
    stamps: HashMap<PartitionId, (i64, i64)>,
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
    /// uncommitted message, reading the messages it has not read before.
    fn age(&mut self, lags: &mut [PartitionLag]) {
        let key = |p: &PartitionLag| PartitionId::new(p.topic.as_str(), p.partition);
        let wanted: Vec<(PartitionId, i64)> = lags
            .iter()
            .filter(|p| p.lag > 0)
            .map(|p| (key(p), p.next_offset()))
            .filter(|(id, offset)| self.stamps.get(id).is_none_or(|(o, _)| o != offset))
            .collect();
        if !wanted.is_empty() {
            self.peek_stamps(&wanted);
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
            if let Some(&(offset, ts)) = self.stamps.get(&id)
                && offset == p.next_offset()
            {
                p.lag_seconds = Some(((now_ms - ts).max(0)) as f64 / 1000.0);
                keep.insert(id, (offset, ts));
            }
        }
        self.stamps = keep;
    }

    fn peek_stamps(&mut self, wanted: &[(PartitionId, i64)]) {
        let mut tpl = TopicPartitionList::with_capacity(wanted.len());
        for (p, offset) in wanted {
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
        let mut missing = wanted.len();
        while missing > 0 && Instant::now() < deadline {
            match self.peek.poll(Duration::from_millis(50)) {
                Some(Ok(message)) => {
                    let id = PartitionId::new(message.topic(), message.partition());
                    let Some((_, asked)) = wanted.iter().find(|(p, _)| *p == id) else {
                        continue;
                    };
                    if self.stamps.get(&id).is_some_and(|(o, _)| o == asked) {
                        continue;
                    }
                    if let Some(ts) = message.timestamp().to_millis() {
                        // Stamped under the asked offset: the first readable
                        // message at or after it is the oldest uncommitted.
                        self.stamps.insert(id, (*asked, ts));
                        missing -= 1;
                    }
                }
                Some(Err(error)) => {
                    tracing::debug!(%error, "reading the oldest uncommitted message");
                }
                None => {}
            }
        }
        let _ = self.peek.unassign();
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
