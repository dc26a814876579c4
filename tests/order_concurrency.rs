//! Within a partition, messages are processed one at a time in offset order;
//! across partitions, processing overlaps.

use std::collections::BTreeMap;
use std::time::Duration;

use pythia_tests::*;

const PARTITIONS: i32 = 8;
const PER_PARTITION: u64 = 40;
const DELAY_MS: u64 = 10;

#[test]
fn partitions_run_concurrently_and_each_in_offset_order() {
    let dir = scratch("order");
    let broker = broker("events", PARTITIONS);
    let bootstrap = broker.bootstrap_servers();
    let n = PER_PARTITION * PARTITIONS as u64;
    produce(bootstrap, "events", PARTITIONS, 0..n);

    let mut worker = WorkerSpec::new(bootstrap, "order", "events")
        .env("TEST_DELAY_MS", DELAY_MS)
        .spawn(&dir, "w");
    wait_until(Duration::from_secs(60), "all messages processed", || {
        worker.records().unique() == n as usize
    });
    worker.terminate();
    assert!(
        worker.wait(Duration::from_secs(30)).success(),
        "{}",
        worker.log_text()
    );

    let records = worker.records();
    assert_eq!(records.duplicates(), 0);
    let mut by_partition: BTreeMap<i32, Vec<&Processed>> = BTreeMap::new();
    for p in &records.processed {
        by_partition.entry(p.partition).or_default().push(p);
    }
    assert_eq!(by_partition.len(), PARTITIONS as usize);
    for (partition, mut list) in by_partition {
        list.sort_by_key(|p| p.start_us);
        let offsets: Vec<i64> = list.iter().map(|p| p.offset).collect();
        let expected: Vec<i64> = (0..PER_PARTITION as i64).collect();
        assert_eq!(
            offsets, expected,
            "partition {partition} processed out of order"
        );
        for pair in list.windows(2) {
            assert!(
                pair[0].end_us <= pair[1].start_us,
                "partition {partition}: offset {} started before {} finished",
                pair[1].offset,
                pair[0].offset
            );
        }
    }

    let first = records.processed.iter().map(|p| p.start_us).min().unwrap();
    let last = records.processed.iter().map(|p| p.end_us).max().unwrap();
    let wall = Duration::from_micros((last - first) as u64);
    let serial: Duration = records
        .processed
        .iter()
        .map(|p| Duration::from_micros((p.end_us - p.start_us) as u64))
        .sum();
    eprintln!("wall {wall:?} for {serial:?} of serial handler time");
    assert!(
        wall < serial.mul_f64(0.4),
        "partitions did not overlap: wall {wall:?}, serial sum {serial:?}"
    );
}
