//! The lag of a group's partitions ([`PartitionLag`], [`lag`]) and the
//! partition gauges of [`Metrics`] that export it.

use super::Metrics;

/// The lag of one partition for a group, as read from the broker.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct PartitionLag {
    /// The topic.
    pub topic: String,
    /// The partition index.
    pub partition: i32,
    /// Oldest readable offset.
    pub low_watermark: i64,
    /// Offset the next message will get.
    pub high_watermark: i64,
    /// The group's committed offset, `None` before its first commit.
    pub committed: Option<i64>,
    /// Messages not yet committed (see [`lag`]).
    pub lag: i64,
    /// Age of the oldest uncommitted message in seconds; 0 without lag, `None`
    /// when it could not be read.
    pub lag_seconds: Option<f64>,
}

impl PartitionLag {
    /// A partition's lag from its watermarks and committed offset.
    ///
    /// ```
    /// use pythia_core::metrics::PartitionLag;
    /// let p = PartitionLag::new("orders", 0, 100, 250, Some(40));
    /// assert_eq!(p.lag, 150); // offsets 40..100 were deleted by retention
    /// ```
    pub fn new(
        topic: impl Into<String>,
        partition: i32,
        low_watermark: i64,
        high_watermark: i64,
        committed: Option<i64>,
    ) -> Self {
        Self {
            topic: topic.into(),
            partition,
            low_watermark,
            high_watermark,
            committed,
            lag: lag(low_watermark, high_watermark, committed),
            lag_seconds: None,
        }
    }

    /// The offset of the oldest message the group still has to process.
    pub fn next_offset(&self) -> i64 {
        self.committed
            .unwrap_or(self.low_watermark)
            .max(self.low_watermark)
    }
}

/// Messages between a committed offset and the high watermark that can still
/// be read: `high − max(committed, low)`, never below 0 and never above what
/// retention left (`high − low`). Before the first commit (`None`) the group
/// starts from the oldest readable message, so everything readable is lag.
///
/// ```
/// use pythia_core::metrics::lag;
/// assert_eq!(lag(0, 10, Some(4)), 6);
/// assert_eq!(lag(0, 10, None), 10);   // nothing committed yet
/// assert_eq!(lag(8, 10, Some(4)), 2); // 4..8 deleted by retention
/// assert_eq!(lag(0, 10, Some(12)), 0); // never negative
/// ```
pub fn lag(low: i64, high: i64, committed: Option<i64>) -> i64 {
    let low = low.max(0);
    let from = committed.unwrap_or(low).max(low);
    (high - from).max(0)
}

impl Metrics {
    /// Sets the partition gauges of `group` from `lag`.
    pub fn set_partition_lag(&self, group: &str, lag: &PartitionLag) {
        let m = &self.inner;
        let partition = lag.partition.to_string();
        let labels = [group, lag.topic.as_str(), partition.as_str()];
        m.lag.with_label_values(&labels).set(lag.lag);
        m.committed
            .with_label_values(&labels)
            .set(lag.committed.unwrap_or(-1));
        m.high.with_label_values(&labels).set(lag.high_watermark);
        m.low.with_label_values(&labels).set(lag.low_watermark);
        if let Some(seconds) = lag.lag_seconds {
            m.lag_seconds.with_label_values(&labels).set(seconds);
        }
    }

    /// Removes the partition gauges of a partition no longer reported (revoked).
    pub fn remove_partition(&self, group: &str, topic: &str, partition: i32) {
        let m = &self.inner;
        let partition = partition.to_string();
        let labels = [group, topic, partition.as_str()];
        let _ = m.lag.remove_label_values(&labels);
        let _ = m.lag_seconds.remove_label_values(&labels);
        let _ = m.committed.remove_label_values(&labels);
        let _ = m.high.remove_label_values(&labels);
        let _ = m.low.remove_label_values(&labels);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn removed_partitions_disappear() {
        let metrics = Metrics::new();
        metrics.set_partition_lag("g", &PartitionLag::new("t", 3, 0, 5, Some(1)));
        metrics.remove_partition("g", "t", 3);
        assert!(!metrics.encode().contains(r#"partition="3""#));
    }

    proptest! {
        #[test]
        fn lag_is_never_negative_nor_more_than_readable(
            low in 0i64..1000, len in 0i64..1000, committed in proptest::option::of(-5i64..3000)
        ) {
            let high = low + len;
            let lag = lag(low, high, committed);
            prop_assert!(lag >= 0);
            prop_assert!(lag <= high - low);
            if let Some(c) = committed.filter(|c| (low..=high).contains(c)) {
                prop_assert_eq!(lag, high - c);
            }
        }
    }
}
