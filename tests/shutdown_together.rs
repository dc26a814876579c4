//! Members stopped at the same moment all commit and exit cleanly. (Under load,
//! one member's leaving can make another's final commit stale for a moment on
//! KIP-848; the source retries such a commit. This test runs the scenario; it
//! does not force that timing.)

use std::time::Duration;

use pythia_tests::*;

const PARTITIONS: i32 = 8;
const N: u64 = 900;

#[test]
fn three_members_terminated_together_commit_everything() {
    for round in 0..4 {
        let dir = scratch("together");
        let broker = broker("jobs", PARTITIONS);
        let bootstrap = broker.bootstrap_servers();
        let group = format!("together-{round}");
        let spec = WorkerSpec::new(bootstrap, &group, "jobs");
        let mut workers: Vec<Worker> = (0..3).map(|i| spec.spawn(&dir, &format!("w{i}"))).collect();
        wait_until(Duration::from_secs(60), "every member assigned", || {
            workers.iter().all(|w| !w.assigned().is_empty())
        });
        produce(bootstrap, "jobs", PARTITIONS, 0..N);
        let files: Vec<_> = workers.iter().map(|w| w.record.clone()).collect();
        wait_until(Duration::from_secs(60), "everything processed", || {
            Records::read(&files).unique() == N as usize
        });
        for worker in &workers {
            worker.terminate();
        }
        for worker in &mut workers {
            let status = worker.wait(Duration::from_secs(30));
            assert!(status.success(), "round {round}: {}", worker.log_text());
        }
        let highs = high_watermarks(bootstrap, "jobs", PARTITIONS);
        let committed = committed(bootstrap, &group, "jobs", PARTITIONS);
        let expected: Vec<Option<i64>> = highs.into_iter().map(Some).collect();
        assert_eq!(committed, expected, "round {round}: everything committed");
    }
}
