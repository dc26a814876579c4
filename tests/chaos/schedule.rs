//! The chaos schedule: on a seed, every 3–5 s one random live instance is
//! killed (SIGKILL) or stopped (SIGTERM, waiting for its exit), and a
//! replacement is started at once.

use std::fmt;
use std::path::{Path, PathBuf};
use std::process::ExitStatus;
use std::time::{Duration, Instant, SystemTime};

use pythia_tests::{Worker, WorkerSpec};

use crate::settings::{Mode, SHUTDOWN_TIMEOUT};

/// How long a SIGTERMed instance may take to exit before it counts as hung:
/// its shutdown timeout plus slack for the loaded machine.
pub(crate) const EXIT_WAIT: Duration = SHUTDOWN_TIMEOUT.saturating_add(Duration::from_secs(10));

/// Marsaglia's xorshift64: the same seed, the same schedule.
pub(crate) struct XorShift(u64);

impl XorShift {
    /// A generator for `seed` (any value, zero included).
    pub(crate) fn new(seed: u64) -> Self {
        // Mix the seed so that nearby seeds give unrelated schedules; never zero.
        Self(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    /// The next value.
    pub(crate) fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }

    /// A value in `0..n`.
    pub(crate) fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// How an instance ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Exit {
    /// It exited with this code.
    Code(i32),
    /// A signal ended it.
    Signal(i32),
    /// It had not exited after `EXIT_WAIT`, and was killed.
    Hung,
}

impl Exit {
    fn of(status: ExitStatus) -> Self {
        use std::os::unix::process::ExitStatusExt;
        match (status.code(), status.signal()) {
            (Some(code), _) => Self::Code(code),
            (None, Some(signal)) => Self::Signal(signal),
            (None, None) => Self::Code(-1),
        }
    }

    /// Exited 0.
    pub(crate) fn is_clean(self) -> bool {
        self == Self::Code(0)
    }

    /// Exited with `code`.
    pub(crate) fn is_code(self, code: i32) -> bool {
        self == Self::Code(code)
    }
}

impl fmt::Display for Exit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Code(code) => write!(f, "{code}"),
            Self::Signal(signal) => write!(f, "sig{signal}"),
            Self::Hung => f.write_str("hung"),
        }
    }
}

/// One worker process of the fleet.
struct Member {
    name: String,
    worker: Worker,
    started: Instant,
}

/// How one instance ended, with the evidence.
#[derive(Debug, Clone)]
pub(crate) struct Ended {
    /// `w<N>`, in start order.
    pub(crate) name: String,
    /// Its exit.
    pub(crate) exit: Exit,
    /// From its start to the signal, or to its exit when it exited unasked.
    pub(crate) age: Duration,
    /// Its last log lines.
    pub(crate) log: String,
}

impl Ended {
    fn of(member: &Member, exit: Exit, age: Duration) -> Self {
        let log = member.worker.log_text();
        let lines: Vec<&str> = log.lines().collect();
        Self {
            name: member.name.clone(),
            exit,
            age,
            log: lines[lines.len().saturating_sub(12)..].join("\n"),
        }
    }
}

impl fmt::Display for Ended {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} exited {} ({:.1} s after it started); its log ends:\n{}",
            self.name,
            self.exit,
            self.age.as_secs_f64(),
            if self.log.is_empty() {
                "(nothing logged)"
            } else {
                &self.log
            }
        )
    }
}

/// The instances of a run. Every process it started is killed on drop.
pub(crate) struct Fleet<'a> {
    spec: WorkerSpec<'a>,
    dir: PathBuf,
    live: Vec<Member>,
    stopped: Vec<Member>,
    spawned: usize,
}

impl<'a> Fleet<'a> {
    /// Starts `n` instances, `w0`, `w1`, ..., logging into `dir`.
    pub(crate) fn start(spec: WorkerSpec<'a>, dir: PathBuf, n: usize) -> Self {
        let mut fleet = Self {
            spec,
            dir,
            live: Vec::new(),
            stopped: Vec::new(),
            spawned: 0,
        };
        for _ in 0..n {
            fleet.add();
        }
        fleet
    }

    /// Starts one more instance.
    pub(crate) fn add(&mut self) {
        let name = format!("w{}", self.spawned);
        self.spawned += 1;
        let started = Instant::now();
        let worker = self.spec.spawn(&self.dir, &name);
        self.live.push(Member {
            name,
            worker,
            started,
        });
    }

    /// How long after `since` instance `name` first reported a partition;
    /// `None` after `wait`. See [`first_partition`].
    pub(crate) fn first_partition(
        &self,
        name: &str,
        since: Instant,
        wait: Duration,
    ) -> Option<Duration> {
        first_partition(&self.dir.join(format!("{name}.rec")), since, wait)
    }

    /// Instances started so far.
    pub(crate) fn spawned(&self) -> usize {
        self.spawned
    }

    /// Instances that exited without being asked; each is replaced.
    fn reap_unasked(&mut self) -> Vec<Ended> {
        let mut died = Vec::new();
        let mut i = 0;
        while i < self.live.len() {
            if let Some(status) = self.live[i].worker.try_status() {
                let member = self.live.remove(i);
                died.push(Ended::of(
                    &member,
                    Exit::of(status),
                    member.started.elapsed(),
                ));
                self.stopped.push(member);
                self.add();
            } else {
                i += 1;
            }
        }
        died
    }

    /// Stops one live instance, the `index`th: SIGKILL, or SIGTERM and its
    /// exit (`Some`).
    fn stop(&mut self, index: usize, mode: Mode) -> Option<Ended> {
        let mut member = self.live.remove(index);
        let age = member.started.elapsed();
        let ended = match mode {
            Mode::Kill => {
                member.worker.kill();
                None
            }
            Mode::Term => {
                member.worker.terminate();
                let exit = wait_exit(&mut member.worker);
                Some(Ended::of(&member, exit, age))
            }
        };
        self.stopped.push(member);
        ended
    }

    /// Sends SIGTERM to every live instance and waits for each exit.
    pub(crate) fn stop_all(&mut self) -> Vec<Ended> {
        for member in &self.live {
            member.worker.terminate();
        }
        let signalled = Instant::now();
        let mut exits = Vec::new();
        for mut member in std::mem::take(&mut self.live) {
            let exit = wait_exit(&mut member.worker);
            let age = signalled.duration_since(member.started);
            exits.push(Ended::of(&member, exit, age));
            self.stopped.push(member);
        }
        exits
    }
}

/// How long after `since` the worker recording to `record` first reported a
/// partition (an `assigned <pid> <partitions>` line with some partition),
/// polling every 10 ms; `None` after `wait`. The test worker writes the line
/// when its assignment changes: this is when the runtime got the partition.
pub(crate) fn first_partition(record: &Path, since: Instant, wait: Duration) -> Option<Duration> {
    while since.elapsed() < wait {
        let text = std::fs::read_to_string(record).unwrap_or_default();
        let assigned = text.lines().any(|l| {
            let mut fields = l.split(' ');
            fields.next() == Some("assigned")
                && fields
                    .nth(1)
                    .is_some_and(|partitions| !partitions.is_empty())
        });
        if assigned {
            return Some(since.elapsed());
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    None
}

/// Waits up to `EXIT_WAIT` for a SIGTERMed instance; kills it if it hangs.
fn wait_exit(worker: &mut Worker) -> Exit {
    let deadline = Instant::now() + EXIT_WAIT;
    loop {
        if let Some(status) = worker.try_status() {
            return Exit::of(status);
        }
        if Instant::now() > deadline {
            worker.kill();
            return Exit::Hung;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// What the chaos did.
#[derive(Debug, Default)]
pub(crate) struct Chaos {
    /// When each instance was stopped (killed or SIGTERMed).
    pub(crate) stops: Vec<SystemTime>,
    /// The group's committed offsets, read from outside just before each stop.
    pub(crate) committed_at_stops: Vec<Vec<Option<i64>>>,
    /// How each SIGTERMed instance ended, in order.
    pub(crate) exits: Vec<Ended>,
    /// Instances that exited without being asked (and were replaced).
    pub(crate) died: Vec<Ended>,
}

/// Runs the chaos for `length`: 3–5 s (drawn from `seed`) after the previous
/// stop, one random live instance is stopped as `mode` says and a replacement
/// started. With
/// `spare` set, the instance of that name is never chosen.
pub(crate) fn run(
    fleet: &mut Fleet<'_>,
    mode: Mode,
    seed: u64,
    length: Duration,
    spare: Option<&str>,
    committed: &mut dyn FnMut() -> Vec<Option<i64>>,
) -> Chaos {
    let mut rng = XorShift::new(seed);
    let end = Instant::now() + length;
    let mut chaos = Chaos::default();
    loop {
        // Counted from the end of the previous stop (a SIGTERMed instance may
        // take seconds to exit): every instance runs 3 s at least.
        let next = Instant::now() + Duration::from_millis(3000 + rng.below(2001));
        let until = next.min(end);
        while Instant::now() < until {
            chaos.died.extend(fleet.reap_unasked());
            std::thread::sleep(
                Duration::from_millis(50).min(until.saturating_duration_since(Instant::now())),
            );
        }
        if next >= end {
            break;
        }
        let candidates: Vec<usize> = (0..fleet.live.len())
            .filter(|&i| Some(fleet.live[i].name.as_str()) != spare)
            .collect();
        let index = candidates[rng.below(candidates.len() as u64) as usize];
        chaos.committed_at_stops.push(committed());
        chaos.stops.push(SystemTime::now());
        chaos.exits.extend(fleet.stop(index, mode));
        fleet.add();
    }
    chaos.died.extend(fleet.reap_unasked());
    chaos
}

#[cfg(test)]
mod tests {
    use super::XorShift;

    #[test]
    fn a_seed_gives_the_same_schedule_and_seeds_differ() {
        let draw = |seed| {
            let mut rng = XorShift::new(seed);
            (0..20).map(|_| rng.below(2001)).collect::<Vec<_>>()
        };
        assert_eq!(draw(42), draw(42));
        assert_ne!(draw(42), draw(43));
        assert!(draw(0).iter().all(|&v| v <= 2000));
        assert!(
            draw(0).iter().any(|&v| v != draw(0)[0]),
            "seed 0 is not stuck"
        );
    }
}
