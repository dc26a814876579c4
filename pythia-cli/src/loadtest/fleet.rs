//! The instances of one load-test run: worker processes started from this
//! binary, and the tally of what they report having processed.

use std::io::{BufRead, BufReader};
use std::process::{Child, ChildStdin, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};

use super::work::Work;

/// What the instances reported, shared with their reader threads.
#[derive(Debug)]
pub(crate) struct Tally {
    /// Times each message id was processed (saturating).
    seen: Vec<u8>,
    /// Distinct message ids processed.
    pub(crate) unique: u64,
    /// Processings, duplicates included.
    pub(crate) processed: u64,
    /// Messages that carried no load-test id, or an id out of range.
    pub(crate) bad: u64,
    /// Processings per instance.
    pub(crate) per_instance: Vec<u64>,
    /// Partitions each instance holds.
    pub(crate) assigned: Vec<usize>,
    /// Latency of every processing, in microseconds from the create time.
    pub(crate) latencies_us: Vec<u64>,
    /// When the last new message id was processed.
    pub(crate) last_unique_at: Option<Instant>,
    /// When each instance processed its first message.
    pub(crate) first_at: Vec<Option<Instant>>,
    /// When each instance first held a partition.
    pub(crate) assigned_at: Vec<Option<Instant>>,
}

impl Tally {
    pub(crate) fn new(messages: u64, instances: usize) -> Self {
        Self {
            seen: vec![0; messages as usize],
            unique: 0,
            processed: 0,
            bad: 0,
            per_instance: vec![0; instances],
            assigned: vec![0; instances],
            latencies_us: Vec::with_capacity(messages as usize),
            last_unique_at: None,
            first_at: vec![None; instances],
            assigned_at: vec![None; instances],
        }
    }

    /// Makes room for instance `index`.
    fn grow(&mut self, index: usize) {
        let n = (index + 1).max(self.per_instance.len());
        self.per_instance.resize(n, 0);
        self.assigned.resize(n, 0);
        self.first_at.resize(n, None);
        self.assigned_at.resize(n, None);
    }

    /// Instance `instance` processed message `id`, `latency_us` after it was
    /// created.
    pub(crate) fn record(&mut self, instance: usize, id: u64, latency_us: u64) {
        self.grow(instance);
        self.processed += 1;
        self.per_instance[instance] += 1;
        self.first_at[instance].get_or_insert_with(Instant::now);
        self.latencies_us.push(latency_us);
        match usize::try_from(id)
            .ok()
            .and_then(|id| self.seen.get_mut(id))
        {
            Some(count) => {
                if *count == 0 {
                    self.unique += 1;
                    self.last_unique_at = Some(Instant::now());
                }
                *count = count.saturating_add(1);
            }
            None => self.bad += 1,
        }
    }

    /// Applies one report line of instance `instance`.
    fn apply(&mut self, instance: usize, line: &str) {
        let mut words = line.split_ascii_whitespace();
        match (words.next(), words.next(), words.next()) {
            (Some("assigned"), Some(n), None) => {
                self.assigned[instance] = n.parse().unwrap_or_default();
                if self.assigned[instance] > 0 && self.assigned_at[instance].is_none() {
                    self.assigned_at[instance] = Some(Instant::now());
                }
            }
            (Some("done"), Some(id), Some(_)) if id.parse() == Ok(super::load::WARM_UP_ID) => {}
            (Some("done"), Some(id), Some(latency)) => match id.parse::<u64>() {
                Ok(id) => self.record(instance, id, latency.parse().unwrap_or_default()),
                Err(_) => {
                    self.processed += 1;
                    self.per_instance[instance] += 1;
                    self.bad += 1;
                }
            },
            (Some("bad"), _, _) => {
                self.processed += 1;
                self.per_instance[instance] += 1;
                self.bad += 1;
            }
            _ => tracing::debug!(instance, line, "unknown report line"),
        }
    }
}

/// Where and how the instances run.
pub(crate) struct Setup<'a> {
    pub(crate) brokers: &'a str,
    pub(crate) embedded: bool,
    pub(crate) group: &'a str,
    pub(crate) topic: &'a str,
    pub(crate) work: Work,
    pub(crate) concurrency: Option<usize>,
    /// Run the classic rdkafka poll loop instead of a Pythia worker.
    pub(crate) raw: bool,
    /// `kafka.group_protocol` for the instances (default: the worker's).
    pub(crate) protocol: Option<&'a str>,
    /// `kafka.session_timeout` for the instances, unless set by the user.
    pub(crate) session_timeout: Option<&'a str>,
}

struct Instance {
    child: Child,
    stdin: Option<ChildStdin>,
    reader: Option<JoinHandle<()>>,
}

/// The running instances of one run.
pub(crate) struct Fleet {
    instances: Vec<Instance>,
    tally: Arc<Mutex<Tally>>,
}

impl Fleet {
    /// Starts `count` instances expecting message ids `0..messages`.
    pub(crate) fn start(setup: &Setup<'_>, count: usize, messages: u64) -> anyhow::Result<Self> {
        let mut fleet = Self {
            instances: Vec::with_capacity(count),
            tally: Arc::new(Mutex::new(Tally::new(messages, count))),
        };
        for _ in 0..count {
            fleet.add(setup)?;
        }
        Ok(fleet)
    }

    /// Starts one more instance; returns its index.
    pub(crate) fn add(&mut self, setup: &Setup<'_>) -> anyhow::Result<usize> {
        let exe = std::env::current_exe().context("locating the pythia binary")?;
        let index = self.instances.len();
        self.tally().grow(index);
        let mut command = Command::new(&exe);
        command
            .arg("loadtest-worker")
            .arg("--work")
            .arg(setup.work.to_string())
            .env("PYTHIA_KAFKA__BROKERS", setup.brokers)
            .env("PYTHIA_KAFKA__GROUP", setup.group)
            .env("PYTHIA_KAFKA__TOPICS", setup.topic)
            .env("PYTHIA_WORKER__NAME", format!("loadtest-{index}"))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        if setup.raw {
            command.arg("--raw");
        }
        if let Some(c) = setup.concurrency {
            command.env("PYTHIA_WORKER__MAX_IN_FLIGHT", c.to_string());
        }
        if let Some(protocol) = setup.protocol {
            command.env("PYTHIA_KAFKA__GROUP_PROTOCOL", protocol);
        }
        if let Some(timeout) = setup.session_timeout
            && std::env::var_os("PYTHIA_KAFKA__SESSION_TIMEOUT").is_none()
        {
            command.env("PYTHIA_KAFKA__SESSION_TIMEOUT", timeout);
        }
        if setup.embedded {
            // What `kafka.brokers = "embedded"` sets for the mock cluster.
            if setup.protocol.is_none() {
                command.env("PYTHIA_KAFKA__GROUP_PROTOCOL", "consumer");
            }
            if std::env::var_os("PYTHIA_KAFKA__CONSUMER__FETCH_WAIT_MAX_MS").is_none() {
                command.env(
                    "PYTHIA_KAFKA__CONSUMER__FETCH_WAIT_MAX_MS",
                    pythia_kafka::EMBEDDED_FETCH_WAIT.1,
                );
            }
        }
        if std::env::var_os("RUST_LOG").is_none() {
            command.env("RUST_LOG", "warn,librdkafka=error,rdkafka=error");
        }
        let mut child = command
            .spawn()
            .with_context(|| format!("starting instance {index}"))?;
        let stdin = child.stdin.take();
        let stdout = child.stdout.take().context("instance stdout")?;
        let tally = self.tally.clone();
        let reader = std::thread::spawn(move || {
            let mut lines = BufReader::new(stdout);
            let mut line = String::new();
            while matches!(lines.read_line(&mut line), Ok(n) if n > 0) {
                lock(&tally).apply(index, line.trim_end());
                line.clear();
            }
        });
        self.instances.push(Instance {
            child,
            stdin,
            reader: Some(reader),
        });
        Ok(index)
    }

    /// The tally so far.
    pub(crate) fn tally(&self) -> MutexGuard<'_, Tally> {
        lock(&self.tally)
    }

    /// Fails if an instance has exited.
    pub(crate) fn check_alive(&mut self) -> anyhow::Result<()> {
        for (index, instance) in self.instances.iter_mut().enumerate() {
            if let Some(status) = instance.child.try_wait()? {
                bail!("instance {index} exited early ({status}); its log is above");
            }
        }
        Ok(())
    }

    /// Waits until every instance holds its share of the `partitions`.
    pub(crate) fn wait_joined(
        &mut self,
        partitions: usize,
        timeout: Duration,
    ) -> anyhow::Result<()> {
        let deadline = Instant::now() + timeout;
        loop {
            {
                let tally = self.tally();
                let held: usize = tally.assigned.iter().sum();
                let most = tally.assigned.iter().copied().max().unwrap_or(0);
                let least = tally.assigned.iter().copied().min().unwrap_or(0);
                if held == partitions && most - least <= 1 {
                    return Ok(());
                }
                if Instant::now() > deadline {
                    bail!(
                        "the instances did not join and split the {partitions} partitions within {timeout:?} (they hold {:?}); check the brokers",
                        tally.assigned
                    );
                }
            }
            self.check_alive()?;
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Stops every instance (closing its stdin: drain, commit, leave), waits
    /// for them and their last reports. Returns how many failed.
    pub(crate) fn stop(mut self, timeout: Duration) -> usize {
        for instance in &mut self.instances {
            drop(instance.stdin.take());
        }
        let deadline = Instant::now() + timeout;
        let mut failed = 0;
        for (index, instance) in self.instances.iter_mut().enumerate() {
            let status = wait_until(&mut instance.child, deadline);
            match status {
                Some(status) if status.success() => {}
                Some(status) => {
                    tracing::warn!(instance = index, %status, "instance failed");
                    failed += 1;
                }
                None => {
                    tracing::warn!(instance = index, "instance did not stop in time; killed");
                    let _ = instance.child.kill();
                    let _ = instance.child.wait();
                    failed += 1;
                }
            }
            if let Some(reader) = instance.reader.take() {
                let _ = reader.join();
            }
        }
        failed
    }

    /// Stops the fleet and returns its final tally and the number of failed instances.
    pub(crate) fn finish(self, timeout: Duration) -> (Tally, usize) {
        let tally = self.tally.clone();
        let failed = self.stop(timeout);
        let tally = std::mem::replace(&mut *lock(&tally), Tally::new(0, 0));
        (tally, failed)
    }
}

impl Drop for Fleet {
    fn drop(&mut self) {
        // On an error path: never leave instances behind.
        for instance in &mut self.instances {
            if let Ok(None) = instance.child.try_wait() {
                let _ = instance.child.kill();
                let _ = instance.child.wait();
            }
        }
    }
}

fn wait_until(child: &mut Child, deadline: Instant) -> Option<ExitStatus> {
    loop {
        if let Ok(Some(status)) = child.try_wait() {
            return Some(status);
        }
        if Instant::now() >= deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn lock(tally: &Mutex<Tally>) -> MutexGuard<'_, Tally> {
    tally.lock().unwrap_or_else(|p| p.into_inner())
}

#[cfg(test)]
mod tests {
    use super::Tally;

    #[test]
    fn tally_counts_duplicates_and_unknown_ids() {
        let mut tally = Tally::new(3, 2);
        tally.apply(0, "assigned 4");
        tally.apply(0, "done 0 1500");
        tally.apply(1, "done 1 900");
        tally.apply(1, "done 1 950");
        tally.apply(1, "done 7 10");
        tally.apply(0, "bad 3 12");
        assert_eq!(tally.assigned, [4, 0]);
        assert_eq!(tally.unique, 2);
        assert_eq!(tally.processed, 5);
        assert_eq!(tally.per_instance, [2, 3]);
        assert_eq!(tally.bad, 2);
        assert_eq!(tally.latencies_us.len(), 4);
        assert!(tally.first_at.iter().all(Option::is_some));
        assert!(tally.assigned_at[0].is_some() && tally.assigned_at[1].is_none());
    }

    #[test]
    fn an_instance_added_later_gets_its_own_counts() {
        let mut tally = Tally::new(3, 1);
        tally.grow(1);
        tally.apply(1, "assigned 2");
        tally.apply(1, "done 2 10");
        assert_eq!(tally.per_instance, [0, 1]);
        assert_eq!(tally.assigned, [0, 2]);
        assert!(tally.first_at[0].is_none() && tally.first_at[1].is_some());
    }
}
