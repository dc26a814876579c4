//! A benchmark side in a process of its own: this program again, with a
//! hidden subcommand, stopped with the bench, and its one-line JSON report.

use std::os::unix::process::CommandExt as _;
use std::process::{Command, Stdio};

use anyhow::{Context as _, bail};
use serde::de::DeserializeOwned;

/// Runs this program with the arguments and environment `setup` adds, and
/// reads the report the `label` side prints as its last line on stdout.
/// `RUST_LOG` is passed on (`warn` when unset); stderr is this process's.
pub(crate) fn run_side<R: DeserializeOwned>(
    label: &str,
    setup: impl FnOnce(&mut Command),
) -> anyhow::Result<R> {
    let mut command = Command::new(std::env::current_exe().context("finding this program")?);
    // SAFETY: only async-signal-safe calls between fork and exec; a side
    // outlives no dead bench.
    unsafe {
        command.pre_exec(|| {
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM);
            Ok(())
        });
    }
    setup(&mut command);
    let out = command
        .env(
            "RUST_LOG",
            std::env::var("RUST_LOG").unwrap_or_else(|_| "warn".into()),
        )
        .stdin(Stdio::null())
        .stderr(Stdio::inherit())
        .output()
        .with_context(|| format!("starting the {label} process"))?;
    if !out.status.success() {
        bail!("the {label} process failed ({})", out.status);
    }
    let stdout = String::from_utf8_lossy(&out.stdout);
    let line = stdout.lines().last().unwrap_or_default();
    serde_json::from_str(line).with_context(|| format!("reading the {label} report: {line:?}"))
}
