//! Counting from outside the workers: the group's committed offsets against
//! the input's high watermarks, and every output read back from `out`. Nothing
//! here reads what the workers report.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::message::Message as _;
use rdkafka::{ClientConfig, Offset, TopicPartitionList};

use crate::broker::{INPUT, OUTPUT};
use crate::settings::PARTITIONS;

/// How often the committed offsets are read.
const POLL: Duration = Duration::from_millis(250);

/// The group's committed offset on each partition of `in` (`None`: nothing
/// committed), read by a fresh client that does not join the group.
pub(crate) fn committed(bootstrap: &str, group: &str) -> Result<Vec<Option<i64>>, String> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", group)
        .set("enable.auto.commit", "false")
        .create()
        .map_err(|e| e.to_string())?;
    let mut tpl = TopicPartitionList::new();
    for p in 0..PARTITIONS {
        tpl.add_partition(INPUT, p);
    }
    let committed = consumer
        .committed_offsets(tpl, Duration::from_secs(5))
        .map_err(|e| e.to_string())?;
    Ok((0..PARTITIONS)
        .map(
            |p| match committed.find_partition(INPUT, p).map(|e| e.offset()) {
                Some(Offset::Offset(o)) => Some(o),
                _ => None,
            },
        )
        .collect())
}

/// Reads the committed offsets every 250 ms until they equal `highs` on every
/// partition: how long that took, or `None` if it did not happen within
/// `bound`; and the last offsets read.
pub(crate) fn until_all_committed(
    bootstrap: &str,
    group: &str,
    highs: &[i64],
    bound: Duration,
) -> (Option<Duration>, Vec<Option<i64>>) {
    let start = Instant::now();
    let mut last = vec![None; highs.len()];
    loop {
        match committed(bootstrap, group) {
            Ok(offsets) => {
                let done = offsets
                    .iter()
                    .zip(highs)
                    .all(|(c, &h)| *c == Some(h) || (h == 0 && c.is_none()));
                last = offsets;
                if done {
                    return (Some(start.elapsed()), last);
                }
            }
            Err(e) => eprintln!("chaos: reading committed offsets: {e} (retrying)"),
        }
        if start.elapsed() > bound {
            return (None, last);
        }
        std::thread::sleep(POLL);
    }
}

/// Everything found in `out`.
#[derive(Debug)]
pub(crate) struct Outputs {
    /// Copies of each input id, indexed by id.
    copies: Vec<u32>,
    /// Outputs whose payload is no input id.
    pub(crate) foreign: u64,
    /// The CreateTime of every output, in ms since the epoch, sorted, per
    /// partition of `in` its input came from (id `i` is on partition
    /// `i % PARTITIONS`). The worker's producer sets it when it sends the
    /// output.
    times_ms: Vec<Vec<i64>>,
    /// Each output's CreateTime and input id, per partition of `in`.
    sent: Vec<Vec<(i64, u64)>>,
}

impl Outputs {
    fn new(n: u64) -> Self {
        Self {
            copies: vec![0; n as usize],
            foreign: 0,
            times_ms: vec![Vec::new(); PARTITIONS as usize],
            sent: vec![Vec::new(); PARTITIONS as usize],
        }
    }

    /// Input ids with no output.
    pub(crate) fn lost(&self) -> Vec<u64> {
        (0..self.copies.len() as u64)
            .filter(|&id| self.copies[id as usize] == 0)
            .collect()
    }

    /// Copies beyond the first of each id.
    pub(crate) fn duplicates(&self) -> u64 {
        self.copies
            .iter()
            .map(|&c| u64::from(c.saturating_sub(1)))
            .sum()
    }

    /// Outputs of input ids, in `out`.
    pub(crate) fn total(&self) -> usize {
        self.times_ms.iter().map(Vec::len).sum()
    }

    /// Outputs of inputs from `partition` of `in` sent in `from_ms..=to_ms`
    /// (ms since the epoch).
    pub(crate) fn sent_between(&self, partition: i32, from_ms: i64, to_ms: i64) -> u64 {
        let times = &self.times_ms[partition as usize];
        let lo = times.partition_point(|&t| t < from_ms);
        let hi = times.partition_point(|&t| t <= to_ms);
        hi.saturating_sub(lo) as u64
    }

    /// Outputs of inputs from `partition` of `in` at input offsets from
    /// `from_offset` on (`offsets` maps ids to input offsets), sent at or
    /// before `to_ms`: what its owner finished and had not committed.
    pub(crate) fn sent_from_offset(
        &self,
        partition: i32,
        from_offset: i64,
        offsets: &[i64],
        to_ms: i64,
    ) -> u64 {
        self.sent[partition as usize]
            .iter()
            .filter(|&&(time, id)| {
                time <= to_ms && offsets.get(id as usize).is_some_and(|&o| o >= from_offset)
            })
            .count() as u64
    }

    fn add(&mut self, id: u64, time_ms: i64) {
        self.copies[id as usize] += 1;
        let partition = (id % PARTITIONS as u64) as usize;
        self.times_ms[partition].push(time_ms);
        self.sent[partition].push((time_ms, id));
    }

    fn sort(&mut self) {
        for times in &mut self.times_ms {
            times.sort_unstable();
        }
    }
}

/// Reads the whole of `out` with a fresh consumer, from the beginning of every
/// partition to its end, and counts the copies of each of the ids `0..n`.
/// Run it once no worker is left: the end is then final.
pub(crate) fn read_outputs(bootstrap: &str, n: u64) -> Outputs {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", "chaos-outside-reader")
        .set("enable.auto.commit", "false")
        .set("enable.partition.eof", "true")
        .set("fetch.wait.max.ms", "100")
        .create()
        .expect("reader");
    let mut tpl = TopicPartitionList::new();
    for p in 0..PARTITIONS {
        tpl.add_partition_offset(OUTPUT, p, Offset::Beginning)
            .expect("partition offset");
    }
    consumer.assign(&tpl).expect("assign");
    let mut outputs = Outputs::new(n);
    let mut at_end = HashSet::new();
    let deadline = Instant::now() + Duration::from_secs(120);
    while at_end.len() < PARTITIONS as usize {
        assert!(
            Instant::now() < deadline,
            "reading {OUTPUT} to its end took over 120 s; at the end: {at_end:?}"
        );
        match consumer.poll(Duration::from_millis(100)) {
            Some(Ok(message)) => {
                let id = message
                    .payload()
                    .and_then(|p| std::str::from_utf8(p).ok())
                    .and_then(|s| s.parse::<u64>().ok())
                    .filter(|&id| id < n);
                let time = message.timestamp().to_millis().unwrap_or(i64::MIN);
                match id {
                    Some(id) => outputs.add(id, time),
                    None => outputs.foreign += 1,
                }
            }
            Some(Err(KafkaError::PartitionEOF(p))) => {
                at_end.insert(p);
            }
            Some(Err(e)) => panic!("reading {OUTPUT}: {e}"),
            None => {}
        }
    }
    outputs.sort();
    outputs
}

#[cfg(test)]
impl Outputs {
    /// Outputs of these ids, sent at these times (ms), of `n` inputs.
    pub(crate) fn from_parts(n: u64, sent: &[(u64, i64)]) -> Self {
        let mut outputs = Self::new(n);
        for &(id, time) in sent {
            outputs.add(id, time);
        }
        outputs.sort();
        outputs
    }
}

#[cfg(test)]
mod tests {
    use super::Outputs;

    #[test]
    fn lost_and_duplicates_are_counted_per_id() {
        let sent = [(0, 1), (2, 1), (2, 2), (2, 3), (3, 1)];
        let outputs = Outputs::from_parts(5, &sent);
        assert_eq!(outputs.lost(), vec![1, 4]);
        assert_eq!(outputs.duplicates(), 2);
        assert_eq!(outputs.total(), 5);
    }

    #[test]
    fn sent_between_counts_one_input_partition_and_includes_both_ends() {
        // Ids 1 and 9 come from partition 1, id 2 from partition 2.
        let sent = [(1, 30), (9, 10), (9, 20), (1, 20), (2, 20), (1, 40)];
        let outputs = Outputs::from_parts(10, &sent);
        assert_eq!(outputs.sent_between(1, 20, 30), 3);
        assert_eq!(outputs.sent_between(1, 11, 19), 0);
        assert_eq!(outputs.sent_between(1, 0, 100), 5);
        assert_eq!(outputs.sent_between(2, 0, 100), 1);
    }
}
