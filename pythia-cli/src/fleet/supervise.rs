//! The instances of a fleet as child processes: start each with its own name
//! and metrics address, restart one that exits with a growing backoff, give
//! up on a crash loop, stop by SIGTERM and wait for the drain.

use std::collections::VecDeque;
use std::ffi::OsString;
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use tokio::process::{Child, ChildStdin, Command};

/// How and what to start.
#[derive(Debug, Clone)]
pub(crate) struct Launch {
    /// The worker binary and its arguments.
    pub(crate) program: OsString,
    pub(crate) args: Vec<OsString>,
    /// Variables every instance gets (group, topics, brokers from the flags).
    pub(crate) env: Vec<(String, String)>,
    /// Instance names are `<prefix>-<index>`.
    pub(crate) prefix: String,
    /// Metrics on `127.0.0.1:<base + index>`; `None`: a free port each.
    pub(crate) metrics_base_port: Option<u16>,
    /// First wait before a restart; it doubles with each crash in the window.
    pub(crate) backoff: Duration,
    /// Restarts allowed within `restart_window` before the fleet gives up.
    pub(crate) max_restarts: usize,
    pub(crate) restart_window: Duration,
    /// How long a stopping instance may drain before it is killed.
    pub(crate) stop_timeout: Duration,
}

/// The longest wait before a restart.
const MAX_BACKOFF: Duration = Duration::from_secs(30);

/// What one instance is doing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum State {
    Running,
    /// Exited; starts again at the instant.
    Restarting(Instant),
    /// Sent SIGTERM; killed at the instant if still running.
    Stopping(Instant),
}

struct Slot {
    index: usize,
    name: String,
    metrics: String,
    child: Option<Child>,
    /// Held open: some workers (`pythia loadtest-worker`) stop when it closes.
    _stdin: Option<ChildStdin>,
    pid: Option<u32>,
    started: Instant,
    restarts: usize,
    crashes: VecDeque<Instant>,
    state: State,
}

/// One instance as `fleet status` shows it.
#[derive(Debug, Clone)]
pub(crate) struct Instance {
    pub(crate) name: String,
    pub(crate) metrics: String,
    pub(crate) pid: Option<u32>,
    pub(crate) uptime: Duration,
    pub(crate) restarts: usize,
    pub(crate) state: &'static str,
}

/// An instance crashed more often than `--max-restarts` allows.
#[derive(Debug)]
pub(crate) struct CrashLoop(pub(crate) String);

/// The running instances.
pub(crate) struct Supervisor {
    launch: Launch,
    slots: Vec<Slot>,
}

impl Supervisor {
    pub(crate) fn new(launch: Launch) -> Self {
        Self {
            launch,
            slots: Vec::new(),
        }
    }

    /// Instances counted toward the fleet's size: all but those stopping.
    pub(crate) fn count(&self) -> usize {
        self.slots
            .iter()
            .filter(|s| !matches!(s.state, State::Stopping(_)))
            .count()
    }

    /// Starts or stops instances (the highest-numbered first) until `n` remain.
    pub(crate) fn scale_to(&mut self, n: usize) -> anyhow::Result<()> {
        while self.count() < n {
            let index = (0..)
                .find(|i| self.slots.iter().all(|s| s.index != *i))
                .unwrap_or(self.slots.len());
            let slot = self.start(index, None)?;
            self.slots.push(slot);
            self.slots.sort_by_key(|s| s.index);
        }
        let deadline = Instant::now() + self.launch.stop_timeout;
        while self.count() > n {
            let Some(slot) = self
                .slots
                .iter_mut()
                .rev()
                .find(|s| !matches!(s.state, State::Stopping(_)))
            else {
                break;
            };
            tracing::info!(instance = %slot.name, pid = slot.pid, "stopping (SIGTERM: drain, commit, leave)");
            terminate(slot);
            slot.state = State::Stopping(deadline);
        }
        Ok(())
    }

    fn start(&self, index: usize, previous: Option<&Slot>) -> anyhow::Result<Slot> {
        let name = format!("{}-{index}", self.launch.prefix);
        // A fixed port stays; a free port is looked up again, in case another
        // process took the old one while the instance was down.
        let metrics = match (previous, self.launch.metrics_base_port) {
            (Some(slot), Some(_)) => slot.metrics.clone(),
            _ => metrics_address(self.launch.metrics_base_port, index)?,
        };
        let mut command = Command::new(&self.launch.program);
        command
            .args(&self.launch.args)
            .envs(self.launch.env.iter().map(|(k, v)| (k, v)))
            .env("PYTHIA_WORKER__INSTANCE", &name)
            .env("PYTHIA_METRICS__ADDRESS", &metrics)
            .stdin(Stdio::piped())
            // Its own process group: a terminal's Ctrl-C reaches the fleet
            // only, which then stops the instances in order.
            .process_group(0)
            .kill_on_drop(true);
        #[cfg(target_os = "linux")]
        // SAFETY: between fork and exec only prctl(2), which is
        // async-signal-safe, runs; it touches no memory of the parent.
        unsafe {
            // Should the fleet die without stopping them (SIGKILL), the
            // instances get SIGTERM rather than running on unsupervised.
            command.pre_exec(|| {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM) == -1 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let mut child = command.spawn().with_context(|| {
            format!(
                "starting instance {name}: `{}`; check the command after --",
                self.launch.program.to_string_lossy()
            )
        })?;
        let pid = child.id();
        tracing::info!(instance = %name, pid, %metrics, "instance started");
        let stdin = child.stdin.take();
        let (restarts, crashes) =
            previous.map_or((0, VecDeque::new()), |s| (s.restarts, s.crashes.clone()));
        Ok(Slot {
            index,
            name,
            metrics,
            child: Some(child),
            _stdin: stdin,
            pid,
            started: Instant::now(),
            restarts,
            crashes,
            state: State::Running,
        })
    }

    /// Reaps exited instances, restarts those due, kills those past their
    /// drain deadline. Fails on a crash loop.
    pub(crate) fn poll(&mut self) -> Result<(), CrashLoop> {
        let now = Instant::now();
        let mut i = 0;
        while i < self.slots.len() {
            let slot = &mut self.slots[i];
            let exited = match slot.child.as_mut().map(Child::try_wait) {
                Some(Ok(Some(status))) => Some(status.to_string()),
                Some(Err(error)) => Some(format!("cannot be waited for: {error}")),
                _ => None,
            };
            match slot.state {
                State::Stopping(deadline) => {
                    if let Some(status) = exited {
                        tracing::info!(instance = %slot.name, %status, "instance stopped");
                        self.slots.remove(i);
                        continue;
                    }
                    if now >= deadline
                        && let Some(child) = slot.child.as_mut()
                    {
                        tracing::warn!(instance = %slot.name, "did not drain within --stop-timeout; killed");
                        let _ = child.start_kill();
                    }
                }
                State::Running => {
                    if let Some(status) = exited {
                        slot.child = None;
                        slot.pid = None;
                        slot.crashes.push_back(now);
                        let window = self.launch.restart_window;
                        while slot
                            .crashes
                            .front()
                            .is_some_and(|at| now.duration_since(*at) > window)
                        {
                            slot.crashes.pop_front();
                        }
                        let recent = slot.crashes.len();
                        if recent > self.launch.max_restarts {
                            return Err(CrashLoop(format!(
                                "instance {} exited {recent} times within {} (last: {status}); not restarting it. Fix the worker (its log is above), or allow more with --max-restarts / --restart-window",
                                slot.name,
                                humantime::format_duration(window),
                            )));
                        }
                        let backoff = self
                            .launch
                            .backoff
                            .saturating_mul(1 << (recent - 1).min(16))
                            .min(MAX_BACKOFF);
                        tracing::warn!(instance = %slot.name, %status, restart_in = ?backoff, "instance exited; restarting");
                        slot.state = State::Restarting(now + backoff);
                    }
                }
                State::Restarting(at) if now >= at => {
                    let index = slot.index;
                    let previous = self.slots.remove(i);
                    match self.start(index, Some(&previous)) {
                        Ok(mut slot) => {
                            slot.restarts += 1;
                            self.slots.insert(i, slot);
                        }
                        Err(error) => {
                            return Err(CrashLoop(format!("{error:#}")));
                        }
                    }
                }
                State::Restarting(_) => {}
            }
            i += 1;
        }
        Ok(())
    }

    /// The instances, in order.
    pub(crate) fn instances(&self) -> Vec<Instance> {
        self.slots
            .iter()
            .map(|s| Instance {
                name: s.name.clone(),
                metrics: s.metrics.clone(),
                pid: s.pid,
                uptime: if s.child.is_some() {
                    s.started.elapsed()
                } else {
                    Duration::ZERO
                },
                restarts: s.restarts,
                state: match s.state {
                    State::Running => "running",
                    State::Restarting(_) => "restarting",
                    State::Stopping(_) => "stopping",
                },
            })
            .collect()
    }

    /// SIGTERM to every instance, then waits for all to drain and exit
    /// (killing those past `--stop-timeout`). Returns how many failed to stop
    /// cleanly.
    pub(crate) async fn shutdown(&mut self) -> usize {
        let deadline = Instant::now() + self.launch.stop_timeout;
        for slot in &mut self.slots {
            terminate(slot);
        }
        let mut failed = 0;
        for slot in &mut self.slots {
            let Some(child) = slot.child.as_mut() else {
                continue;
            };
            let left = deadline.saturating_duration_since(Instant::now());
            match tokio::time::timeout(left, child.wait()).await {
                Ok(Ok(status)) if status.success() => {
                    tracing::info!(instance = %slot.name, "instance stopped");
                }
                Ok(Ok(status)) => {
                    tracing::warn!(instance = %slot.name, %status, "instance stopped with a failure");
                    failed += 1;
                }
                Ok(Err(error)) => {
                    tracing::warn!(instance = %slot.name, %error, "instance cannot be waited for");
                    failed += 1;
                }
                Err(_) => {
                    tracing::warn!(instance = %slot.name, "did not drain within --stop-timeout; killed");
                    let _ = child.kill().await;
                    failed += 1;
                }
            }
        }
        self.slots.clear();
        failed
    }
}

/// Asks an instance to stop: SIGTERM, which a Pythia worker answers by
/// draining, committing and leaving its group.
fn terminate(slot: &Slot) {
    let (Some(pid), Some(_)) = (slot.pid, slot.child.as_ref()) else {
        return;
    };
    let Ok(pid) = libc::pid_t::try_from(pid) else {
        return;
    };
    // SAFETY: kill(2) with a pid of our own child that has not been reaped
    // (we hold its `Child`), so the pid cannot name another process.
    let sent = unsafe { libc::kill(pid, libc::SIGTERM) };
    if sent != 0 {
        tracing::warn!(instance = %slot.name, error = %std::io::Error::last_os_error(), "cannot send SIGTERM");
    }
}

/// `127.0.0.1:<base + index>`, or a port free now when there is no base.
fn metrics_address(base: Option<u16>, index: usize) -> anyhow::Result<String> {
    let port = match base {
        Some(base) => u16::try_from(index)
            .ok()
            .and_then(|i| base.checked_add(i))
            .with_context(|| {
                format!("--metrics-base-port {base} + instance {index} is not a port; choose a lower base")
            })?,
        None => std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .context("finding a free port for an instance's metrics")?
            .port(),
    };
    Ok(format!("127.0.0.1:{port}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn launch(program: &str, args: &[&str]) -> Launch {
        Launch {
            program: program.into(),
            args: args.iter().map(Into::into).collect(),
            env: Vec::new(),
            prefix: "t".into(),
            metrics_base_port: None,
            backoff: Duration::from_millis(10),
            max_restarts: 2,
            restart_window: Duration::from_secs(60),
            stop_timeout: Duration::from_secs(5),
        }
    }

    #[tokio::test]
    async fn a_crash_loop_is_restarted_up_to_the_limit_then_named() {
        let mut fleet = Supervisor::new(launch("/bin/false", &[]));
        fleet.scale_to(1).unwrap();
        let started = Instant::now();
        let error = loop {
            if let Err(error) = fleet.poll() {
                break error;
            }
            assert!(started.elapsed() < Duration::from_secs(10), "no crash loop");
            tokio::time::sleep(Duration::from_millis(5)).await;
        };
        assert!(
            error.0.contains("instance t-0 exited 3 times"),
            "{}",
            error.0
        );
        assert!(error.0.contains("--max-restarts"), "{}", error.0);
        assert_eq!(fleet.instances()[0].restarts, 2);
    }

    #[tokio::test]
    async fn scaling_down_stops_the_highest_and_sigterm_ends_them() {
        let mut fleet = Supervisor::new(launch("/bin/sleep", &["30"]));
        fleet.scale_to(3).unwrap();
        let names: Vec<String> = fleet.instances().into_iter().map(|i| i.name).collect();
        assert_eq!(names, ["t-0", "t-1", "t-2"]);
        fleet.scale_to(1).unwrap();
        assert_eq!(fleet.count(), 1);
        let started = Instant::now();
        while fleet.instances().len() > 1 {
            fleet.poll().unwrap();
            assert!(
                started.elapsed() < Duration::from_secs(5),
                "SIGTERM did not stop sleep"
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        assert_eq!(fleet.instances()[0].name, "t-0");
        fleet.scale_to(2).unwrap();
        assert_eq!(
            fleet.instances()[1].name,
            "t-1",
            "the free number is reused"
        );
        // sleep dies of SIGTERM: not a clean exit.
        assert_eq!(fleet.shutdown().await, 2);
        assert!(fleet.instances().is_empty());
    }
}
