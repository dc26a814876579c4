//! More worker processes than partitions: the extra members join the group,
//! report ready with an empty assignment (so a rollout or a disruption budget
//! does not wait on them), and the group keeps processing, also after a
//! member that held partitions dies and a standby takes them over.
//!
//! One test per group protocol: the protocol the selected broker runs best
//! (KIP-848 on the embedded broker, classic on Tansu), and classic
//! cooperative-sticky on the embedded broker.

use std::time::Duration;

use pythia_tests::*;

const PARTITIONS: i32 = 2;
const MEMBERS: usize = 4;

/// The body of `/health/ready` when it answers 200.
fn ready(address: &str) -> Option<String> {
    match http_get(address, "/health/ready") {
        Ok((200, body)) => Some(body),
        _ => None,
    }
}

fn standby_members_are_ready_and_the_group_keeps_processing(
    bootstrap: &str,
    spec: WorkerSpec<'_>,
    name: &str,
) {
    let dir = scratch(name);
    let spec = spec
        .env("PYTHIA_METRICS__ADDRESS", "127.0.0.1:0")
        .env("PYTHIA_METRICS__LAG_INTERVAL", "500ms");
    let mut workers: Vec<Worker> = (0..MEMBERS)
        .map(|i| spec.spawn(&dir, &format!("w{i}")))
        .collect();
    let addresses: Vec<String> = workers
        .iter()
        .map(|w| w.metrics_address(Duration::from_secs(60)))
        .collect();

    // Every member ready, the partitions held by exactly two of them.
    let mut bodies = Vec::new();
    wait_until(
        Duration::from_secs(90),
        "every member ready, the partitions covered",
        || {
            bodies = addresses.iter().map(|a| ready(a)).collect();
            let held: usize = workers.iter().map(|w| w.assigned().len()).sum();
            bodies.iter().all(Option::is_some) && held == PARTITIONS as usize
        },
    );
    let standing_by: Vec<usize> = (0..MEMBERS)
        .filter(|&i| workers[i].assigned().is_empty())
        .collect();
    assert_eq!(
        standing_by.len(),
        MEMBERS - PARTITIONS as usize,
        "members without partitions: {standing_by:?}"
    );
    for &i in &standing_by {
        let body = bodies[i].as_deref().unwrap_or_default();
        assert!(
            body.contains("no partitions assigned"),
            "w{i} is ready and should say it has no partitions: {body}"
        );
    }

    let files: Vec<_> = workers.iter().map(|w| w.record.clone()).collect();
    let records = || Records::read(&files);
    produce(bootstrap, "jobs", PARTITIONS, 0..400);
    wait_until(Duration::from_secs(60), "the first 400 processed", || {
        records().unique() == 400
    });

    // A member holding partitions dies: a standby takes them over.
    let holder = (0..MEMBERS)
        .find(|&i| !workers[i].assigned().is_empty())
        .expect("a member holds partitions");
    workers[holder].kill();
    produce(bootstrap, "jobs", PARTITIONS, 400..800);
    wait_until(
        Duration::from_secs(90),
        "all 800 processed after a member died",
        || records().unique() == 800,
    );
    // The group may first hand the dead member's partition to the other
    // holder and balance it onto a standby in a later round: what matters
    // is that a standby ends up holding one.
    wait_until(
        Duration::from_secs(60),
        &format!("a standby member holds a partition after w{holder} died"),
        || {
            standing_by
                .iter()
                .any(|&i| !workers[i].assigned().is_empty())
        },
    );
    for (i, a) in addresses.iter().enumerate() {
        if i != holder {
            assert!(ready(a).is_some(), "w{i} should still be ready");
        }
    }
    for (i, w) in workers.iter_mut().enumerate() {
        if i != holder {
            w.terminate();
            assert!(
                w.wait(Duration::from_secs(30)).success(),
                "{}",
                w.log_text()
            );
        }
    }
    // Nothing lost: the group's commits cover every message.
    let committed = committed(bootstrap, name, "jobs", PARTITIONS);
    let highs = high_watermarks(bootstrap, "jobs", PARTITIONS);
    assert_eq!(
        committed,
        highs.iter().map(|&h| Some(h)).collect::<Vec<_>>(),
        "committed offsets against high watermarks"
    );
}

#[test]
fn on_the_selected_broker() {
    let Some(broker) = selected_broker("jobs", PARTITIONS) else {
        return;
    };
    standby_members_are_ready_and_the_group_keeps_processing(
        broker.bootstrap_servers(),
        broker.worker("standby", "jobs"),
        "standby",
    );
}

#[test]
fn classic_cooperative_sticky_on_the_embedded_broker() {
    let broker = broker("jobs", PARTITIONS);
    let bootstrap = broker.bootstrap_servers();
    let spec = WorkerSpec::new(bootstrap, "standby-classic", "jobs")
        .env("PYTHIA_KAFKA__GROUP_PROTOCOL", "classic")
        .env("PYTHIA_KAFKA__ASSIGNMENT_STRATEGY", "cooperative-sticky")
        .env("PYTHIA_KAFKA__SESSION_TIMEOUT", "6s");
    standby_members_are_ready_and_the_group_keeps_processing(bootstrap, spec, "standby-classic");
}
