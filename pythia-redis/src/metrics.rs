//! The input's series: the stream's length and its group's lag and pending
//! entries, or the list's length and this instance's processing list; and
//! what this instance holds, recovered and dead-lettered.
//!
//! | name | type | labels | what |
//! |---|---|---|---|
//! | `pythia_redis_stream_length` | gauge | `group`, `stream` | entries in the stream (`XLEN`), processed or not |
//! | `pythia_redis_group_lag` | gauge | `group`, `stream` | entries not yet delivered to the group (`XINFO GROUPS` `lag`) |
//! | `pythia_redis_group_pending` | gauge | `group`, `stream` | entries delivered to the group's consumers and not acknowledged (`XINFO GROUPS` `pending`) |
//! | `pythia_redis_group_consumers` | gauge | `group`, `stream` | consumers the group knows, live or not |
//! | `pythia_redis_list_length` | gauge | `group`, `list` | elements waiting in the list (`LLEN`) |
//! | `pythia_redis_processing_length` | gauge | `group`, `list`, `consumer` | elements in this instance's processing list |
//! | `pythia_redis_unacked_messages` | gauge | `group`, `input` | messages this instance holds and has not acknowledged |
//! | `pythia_redis_recovered_total` | counter | `group`, `input` | entries claimed from stopped instances, or elements the reaper moved back |
//! | `pythia_redis_delivery_limit_dead_letters_total` | counter | `group`, `input` | messages sent to the dead-letter stream over `redis.max_deliveries` |
//!
//! `group` is the worker's name (stream mode: the consumer group), shared by
//! its instances. The backlog for scaling: in stream mode `max by (stream)
//! (pythia_redis_group_lag + pythia_redis_group_pending)`, in list mode
//! `max by (list) (pythia_redis_list_length) + sum by (list)
//! (pythia_redis_processing_length)` (every instance reports the same
//! group and list series, hence `max`).

use prometheus::{IntCounterVec, IntGaugeVec, Opts};
use pythia_core::Metrics;

/// `pythia_redis_stream_length`.
pub const STREAM_LENGTH: &str = "pythia_redis_stream_length";
/// `pythia_redis_group_lag`.
pub const GROUP_LAG: &str = "pythia_redis_group_lag";
/// `pythia_redis_group_pending`.
pub const GROUP_PENDING: &str = "pythia_redis_group_pending";
/// `pythia_redis_group_consumers`.
pub const GROUP_CONSUMERS: &str = "pythia_redis_group_consumers";
/// `pythia_redis_list_length`.
pub const LIST_LENGTH: &str = "pythia_redis_list_length";
/// `pythia_redis_processing_length`.
pub const PROCESSING_LENGTH: &str = "pythia_redis_processing_length";
/// `pythia_redis_unacked_messages`.
pub const UNACKED_MESSAGES: &str = "pythia_redis_unacked_messages";
/// `pythia_redis_recovered_total`.
pub const RECOVERED_TOTAL: &str = "pythia_redis_recovered_total";
/// `pythia_redis_delivery_limit_dead_letters_total`.
pub const DELIVERY_LIMIT_DEAD_LETTERS_TOTAL: &str =
    "pythia_redis_delivery_limit_dead_letters_total";

/// Every series name above.
pub const ALL: &[&str] = &[
    STREAM_LENGTH,
    GROUP_LAG,
    GROUP_PENDING,
    GROUP_CONSUMERS,
    LIST_LENGTH,
    PROCESSING_LENGTH,
    UNACKED_MESSAGES,
    RECOVERED_TOTAL,
    DELIVERY_LIMIT_DEAD_LETTERS_TOTAL,
];

/// What `XINFO GROUPS` says of a group.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct GroupInfo {
    /// `None` when the server cannot tell (Redis < 7, or after deletions).
    pub(crate) lag: Option<i64>,
    pub(crate) pending: i64,
    pub(crate) consumers: i64,
}

/// The input's series, registered in a worker's [`Metrics`].
#[derive(Clone)]
pub(crate) struct InputMetrics {
    stream_length: IntGaugeVec,
    group_lag: IntGaugeVec,
    group_pending: IntGaugeVec,
    group_consumers: IntGaugeVec,
    list_length: IntGaugeVec,
    processing_length: IntGaugeVec,
    unacked: IntGaugeVec,
    recovered: IntCounterVec,
    dead_lettered: IntCounterVec,
}

impl InputMetrics {
    /// Registers the series in `metrics`' registry.
    pub(crate) fn register(metrics: &Metrics) -> Result<Self, prometheus::Error> {
        let gauge = |name: &str, help: &str, labels: &[&str]| {
            IntGaugeVec::new(Opts::new(name, help), labels)
        };
        let counter =
            |name: &str, help: &str| IntCounterVec::new(Opts::new(name, help), &["group", "input"]);
        let stream = &["group", "stream"];
        let this = Self {
            stream_length: gauge(STREAM_LENGTH, "Entries in the stream", stream)?,
            group_lag: gauge(
                GROUP_LAG,
                "Entries of the stream not yet delivered to the consumer group",
                stream,
            )?,
            group_pending: gauge(
                GROUP_PENDING,
                "Entries delivered to the group's consumers and not acknowledged",
                stream,
            )?,
            group_consumers: gauge(GROUP_CONSUMERS, "Consumers of the group", stream)?,
            list_length: gauge(
                LIST_LENGTH,
                "Elements waiting in the list",
                &["group", "list"],
            )?,
            processing_length: gauge(
                PROCESSING_LENGTH,
                "Elements in this instance's processing list",
                &["group", "list", "consumer"],
            )?,
            unacked: gauge(
                UNACKED_MESSAGES,
                "Messages this instance holds and has not acknowledged",
                &["group", "input"],
            )?,
            recovered: counter(
                RECOVERED_TOTAL,
                "Entries claimed from stopped instances, or elements moved back by the reaper",
            )?,
            dead_lettered: counter(
                DELIVERY_LIMIT_DEAD_LETTERS_TOTAL,
                "Messages dead-lettered for passing redis.max_deliveries",
            )?,
        };
        let registry = metrics.registry();
        registry.register(Box::new(this.stream_length.clone()))?;
        registry.register(Box::new(this.group_lag.clone()))?;
        registry.register(Box::new(this.group_pending.clone()))?;
        registry.register(Box::new(this.group_consumers.clone()))?;
        registry.register(Box::new(this.list_length.clone()))?;
        registry.register(Box::new(this.processing_length.clone()))?;
        registry.register(Box::new(this.unacked.clone()))?;
        registry.register(Box::new(this.recovered.clone()))?;
        registry.register(Box::new(this.dead_lettered.clone()))?;
        Ok(this)
    }

    /// Records what the server says of the stream and its group.
    pub(crate) fn set_stream(&self, group: &str, stream: &str, length: i64, info: GroupInfo) {
        let labels = &[group, stream];
        self.stream_length.with_label_values(labels).set(length);
        if let Some(lag) = info.lag {
            self.group_lag.with_label_values(labels).set(lag);
        }
        self.group_pending
            .with_label_values(labels)
            .set(info.pending);
        self.group_consumers
            .with_label_values(labels)
            .set(info.consumers);
    }

    /// Records what the server says of the list and the processing list.
    pub(crate) fn set_list(
        &self,
        group: &str,
        list: &str,
        consumer: &str,
        length: i64,
        processing: i64,
    ) {
        self.list_length
            .with_label_values(&[group, list])
            .set(length);
        self.processing_length
            .with_label_values(&[group, list, consumer])
            .set(processing);
    }

    /// Records this instance's unacknowledged messages and its running totals.
    pub(crate) fn set_instance(
        &self,
        group: &str,
        input: &str,
        unacked: usize,
        recovered: u64,
        dead_lettered: u64,
    ) {
        let labels = &[group, input];
        self.unacked
            .with_label_values(labels)
            .set(i64::try_from(unacked).unwrap_or(i64::MAX));
        for (counter, total) in [
            (&self.recovered, recovered),
            (&self.dead_lettered, dead_lettered),
        ] {
            let counter = counter.with_label_values(labels);
            let seen = counter.get();
            if total > seen {
                counter.inc_by(total - seen);
            }
        }
    }
}

/// The entry of `group` in an `XINFO GROUPS` reply.
pub(crate) fn group_info(reply: &redis::Value, group: &str) -> Option<GroupInfo> {
    use redis::Value;
    let groups = match reply {
        Value::Array(groups) => groups,
        _ => return None,
    };
    for item in groups {
        let pairs: Vec<(&Value, &Value)> = match item {
            Value::Array(flat) => flat
                .chunks(2)
                .filter_map(|c| Some((c.first()?, c.get(1)?)))
                .collect(),
            Value::Map(map) => map.iter().map(|(k, v)| (k, v)).collect(),
            _ => continue,
        };
        let field = |name: &str| {
            pairs.iter().find_map(|(k, v)| match k {
                Value::BulkString(b) if b == name.as_bytes() => Some(*v),
                Value::SimpleString(s) if s == name => Some(*v),
                _ => None,
            })
        };
        let text = |v: &Value| match v {
            Value::BulkString(b) => Some(String::from_utf8_lossy(b).into_owned()),
            Value::SimpleString(s) => Some(s.clone()),
            _ => None,
        };
        let int = |v: Option<&Value>| match v {
            Some(Value::Int(n)) => Some(*n),
            _ => None,
        };
        if field("name").and_then(text).as_deref() != Some(group) {
            continue;
        }
        return Some(GroupInfo {
            lag: int(field("lag")),
            pending: int(field("pending")).unwrap_or(0),
            consumers: int(field("consumers")).unwrap_or(0),
        });
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use redis::Value;

    #[test]
    fn the_series_are_exported_with_their_labels() {
        let metrics = Metrics::new();
        let input = InputMetrics::register(&metrics).unwrap();
        input.set_stream(
            "jobs-worker",
            "jobs",
            500,
            GroupInfo {
                lag: Some(120),
                pending: 10,
                consumers: 2,
            },
        );
        input.set_list("jobs-worker", "tasks", "pod-1", 40, 3);
        input.set_instance("jobs-worker", "jobs", 10, 3, 1);
        input.set_instance("jobs-worker", "jobs", 7, 5, 1);
        let text = metrics.encode();
        for line in [
            r#"pythia_redis_stream_length{group="jobs-worker",stream="jobs"} 500"#,
            r#"pythia_redis_group_lag{group="jobs-worker",stream="jobs"} 120"#,
            r#"pythia_redis_group_pending{group="jobs-worker",stream="jobs"} 10"#,
            r#"pythia_redis_group_consumers{group="jobs-worker",stream="jobs"} 2"#,
            r#"pythia_redis_list_length{group="jobs-worker",list="tasks"} 40"#,
            r#"pythia_redis_processing_length{consumer="pod-1",group="jobs-worker",list="tasks"} 3"#,
            r#"pythia_redis_unacked_messages{group="jobs-worker",input="jobs"} 7"#,
            r#"pythia_redis_recovered_total{group="jobs-worker",input="jobs"} 5"#,
            r#"pythia_redis_delivery_limit_dead_letters_total{group="jobs-worker",input="jobs"} 1"#,
        ] {
            assert!(text.contains(line), "{line} not in\n{text}");
        }
    }

    #[test]
    fn the_group_is_found_in_xinfo_groups() {
        let bulk = |s: &str| Value::BulkString(s.as_bytes().to_vec());
        let group = |name: &str, lag: Value| {
            Value::Array(vec![
                bulk("name"),
                bulk(name),
                bulk("consumers"),
                Value::Int(2),
                bulk("pending"),
                Value::Int(4),
                bulk("lag"),
                lag,
            ])
        };
        let reply = Value::Array(vec![
            group("other", Value::Int(1)),
            group("jobs", Value::Int(9)),
        ]);
        assert_eq!(
            group_info(&reply, "jobs"),
            Some(GroupInfo {
                lag: Some(9),
                pending: 4,
                consumers: 2
            })
        );
        let unknown_lag = Value::Array(vec![group("jobs", Value::Nil)]);
        assert_eq!(group_info(&unknown_lag, "jobs").unwrap().lag, None);
        assert_eq!(group_info(&reply, "missing"), None);
    }
}
