//! Worker processes and payloads for a connector's integration tests:
//! start test worker binaries, signal them, wait for them, read their logs,
//! and count the ids that came out.
//!
//! Behind the `testing` feature, for a connector's `[dev-dependencies]`:
//!
//! ```toml
//! [dev-dependencies]
//! pythia-core = { workspace = true, features = ["testing"] }
//! ```

use std::collections::HashMap;
use std::ffi::OsString;
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

/// How much of a worker's log a failure message shows: its last bytes.
const LOG_TAIL: usize = 4000;

/// A name unique to this test run (process id and time), usable as a queue,
/// key, subject or stream name.
///
/// ```
/// let name = pythia_core::testing::unique("crash");
/// assert!(name.starts_with("pythia-it-crash-"));
/// assert_ne!(name, pythia_core::testing::unique("other"));
/// ```
pub fn unique(name: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .subsec_nanos();
    format!("pythia-it-{name}-{}-{nanos}", std::process::id())
}

/// The payloads `0..n` as text.
///
/// ```
/// let ids: Vec<Vec<u8>> = pythia_core::testing::ids(2).collect();
/// assert_eq!(ids, [b"0".to_vec(), b"1".to_vec()]);
/// ```
pub fn ids(n: u64) -> impl Iterator<Item = Vec<u8>> {
    (0..n).map(|i| i.to_string().into_bytes())
}

/// A message read back from the broker: an output or a dead letter.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Taken {
    /// Its payload.
    pub payload: Vec<u8>,
    /// Its headers, as text.
    pub headers: HashMap<String, String>,
}

/// Counts of ids taken: how many distinct, and how many more than once.
///
/// ```
/// use pythia_core::testing::{Taken, count_ids};
/// let taken: Vec<Taken> = [b"1", b"2", b"1"]
///     .iter()
///     .map(|p| Taken { payload: p.to_vec(), ..Taken::default() })
///     .collect();
/// assert_eq!(count_ids(&taken), (2, 1));
/// ```
pub fn count_ids(taken: &[Taken]) -> (usize, usize) {
    let mut seen: HashMap<&[u8], usize> = HashMap::new();
    for t in taken {
        *seen.entry(&t.payload).or_default() += 1;
    }
    let duplicates = seen.values().map(|n| n - 1).sum();
    (seen.len(), duplicates)
}

/// Worker processes of one test binary, killed at the end of the test if
/// still running; their logs are kept when the test fails.
///
/// ```no_run
/// use std::time::Duration;
/// use pythia_core::testing::Workers;
///
/// let mut workers = Workers::new("target/debug/my-test-worker")
///     .env("PYTHIA_REDIS__URL", "redis://127.0.0.1:6379");
/// let first = workers.spawn(&[("PYTHIA_REDIS__INPUT", "jobs".to_owned())]);
/// workers.signal(first, libc::SIGTERM);
/// assert!(workers.wait(first, Duration::from_secs(30)).success(), "{}", workers.log(first));
/// ```
#[derive(Debug)]
pub struct Workers {
    binary: PathBuf,
    args: Vec<OsString>,
    env: Vec<(String, String)>,
    children: Vec<Child>,
    logs: Vec<PathBuf>,
}

impl Workers {
    /// Workers running `binary` (`env!("CARGO_BIN_EXE_<name>")` in a test).
    pub fn new(binary: impl Into<PathBuf>) -> Self {
        Self {
            binary: binary.into(),
            args: Vec::new(),
            env: Vec::new(),
            children: Vec::new(),
            logs: Vec::new(),
        }
    }

    /// Passes `args` to every worker.
    pub fn args(mut self, args: impl IntoIterator<Item = impl Into<OsString>>) -> Self {
        self.args.extend(args.into_iter().map(Into::into));
        self
    }

    /// Sets `name` to `value` in every worker's environment (the broker's
    /// URL, say); [`Workers::spawn`]'s own variables come after.
    pub fn env(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.env.push((name.into(), value.into()));
        self
    }

    /// Starts a worker with `env` (and no other `PYTHIA_*` variable of this
    /// process), `RUST_LOG=info`, its stderr to a log file; returns its
    /// index.
    ///
    /// # Panics
    ///
    /// When the binary cannot start.
    pub fn spawn(&mut self, env: &[(&str, String)]) -> usize {
        let stem = self
            .binary
            .file_stem()
            .unwrap_or_default()
            .to_string_lossy();
        let log = std::env::temp_dir().join(format!(
            "{}.log",
            unique(&format!("{stem}-{}", self.children.len()))
        ));
        let mut command = Command::new(&self.binary);
        for (name, _) in std::env::vars() {
            if name.starts_with("PYTHIA_") {
                command.env_remove(name);
            }
        }
        command
            .args(&self.args)
            .env("RUST_LOG", "info")
            .envs(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).expect("log file"));
        self.children
            .push(command.spawn().expect("the test worker starts"));
        self.logs.push(log);
        self.children.len() - 1
    }

    /// The process id of worker `i`.
    pub fn pid(&self, i: usize) -> u32 {
        self.children[i].id()
    }

    /// Sends `signal` (`libc::SIGTERM`, say) to worker `i`.
    ///
    /// # Panics
    ///
    /// When the signal cannot be sent.
    pub fn signal(&self, i: usize, signal: i32) {
        let pid = libc::pid_t::try_from(self.children[i].id()).expect("a pid");
        // SAFETY: kill(2) takes no pointers; the pid is a child this value started.
        let rc = unsafe { libc::kill(pid, signal) };
        assert_eq!(rc, 0, "kill failed");
    }

    /// Waits for worker `i` to exit, at most `within`.
    ///
    /// # Panics
    ///
    /// When it does not exit in time, with the end of its log.
    pub fn wait(&mut self, i: usize, within: Duration) -> ExitStatus {
        let end = Instant::now() + within;
        loop {
            if let Some(status) = self.children[i].try_wait().expect("wait") {
                return status;
            }
            assert!(
                Instant::now() < end,
                "worker {i} did not exit in {within:?}:\n{}",
                self.log(i)
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The end of what worker `i` logged, for a failure message.
    pub fn log(&self, i: usize) -> String {
        let bytes = std::fs::read(&self.logs[i]).unwrap_or_default();
        let start = bytes.len().saturating_sub(LOG_TAIL);
        String::from_utf8_lossy(&bytes[start..]).into_owned()
    }

    /// Stops every running worker with SIGTERM and waits for them.
    pub fn stop_all(&mut self) {
        for i in 0..self.children.len() {
            if self.children[i].try_wait().ok().flatten().is_none() {
                self.signal(i, libc::SIGTERM);
            }
        }
        for i in 0..self.children.len() {
            let _ = self.wait(i, Duration::from_secs(30));
        }
    }
}

impl Drop for Workers {
    fn drop(&mut self) {
        for child in &mut self.children {
            let _ = child.kill();
            let _ = child.wait();
        }
        if !std::thread::panicking() {
            for log in &self.logs {
                let _ = std::fs::remove_file(log);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A worker that logs its greeting and name, then waits to be stopped.
    fn shell() -> Workers {
        let script = r#"echo "$GREETING $NAME" >&2; exec sleep 30"#;
        Workers::new("/bin/sh")
            .args(["-c", script])
            .env("GREETING", "hello")
    }

    fn log_when_written(workers: &Workers, i: usize) -> String {
        let end = Instant::now() + Duration::from_secs(10);
        while workers.log(i).is_empty() && Instant::now() < end {
            std::thread::sleep(Duration::from_millis(10));
        }
        workers.log(i)
    }

    #[test]
    fn a_worker_gets_both_environments_and_its_stderr_is_logged() {
        let mut workers = shell();
        let i = workers.spawn(&[("NAME", "jobs".to_owned())]);
        assert_eq!(log_when_written(&workers, i), "hello jobs\n");
        assert!(workers.pid(i) > 0);
    }

    #[test]
    fn a_signalled_worker_exits() {
        let mut workers = shell();
        let i = workers.spawn(&[]);
        log_when_written(&workers, i);
        workers.signal(i, libc::SIGTERM);
        let status = workers.wait(i, Duration::from_secs(10));
        assert!(!status.success(), "terminated by the signal: {status:?}");
    }

    #[test]
    #[should_panic(expected = "did not exit")]
    fn waiting_too_long_fails_with_the_log() {
        let mut workers = shell();
        let i = workers.spawn(&[]);
        workers.wait(i, Duration::from_millis(50));
    }

    #[test]
    fn stop_all_stops_every_running_worker() {
        let mut workers = shell();
        let (a, b) = (workers.spawn(&[]), workers.spawn(&[]));
        workers.stop_all();
        assert!(workers.children[a].try_wait().unwrap().is_some());
        assert!(workers.children[b].try_wait().unwrap().is_some());
    }

    #[test]
    fn ids_are_counted_with_their_duplicates() {
        let taken: Vec<Taken> = ids(3)
            .chain(ids(2))
            .map(|payload| Taken {
                payload,
                headers: HashMap::new(),
            })
            .collect();
        assert_eq!(count_ids(&taken), (3, 2));
        assert_eq!(count_ids(&[]), (0, 0));
    }

    #[test]
    fn unique_names_differ_between_calls() {
        let a = unique("x");
        std::thread::sleep(Duration::from_millis(1));
        assert_ne!(a, unique("x"));
    }
}
