//! `cargo xtask`: the project's own tasks, in Rust, with no dependencies.
//!
//! `cargo xtask test` is the README's test command and what CI runs: it
//! installs what the suite needs (Prometheus, iproute2, Tansu, the deploy
//! checks' tools, Chromium and Playwright for the console's browser test), then runs every step even when one fails, and ends with a
//! table of the steps and an exit code that is non-zero if any failed.

#![forbid(unsafe_code)]

mod docs;
mod prereq;

use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};
use std::time::Instant;

const USAGE: &str = "\
usage: cargo xtask <task>

tasks:
  test [STEP...]   install the prerequisites, then run the steps (all by default):
                     workspace  cargo test --workspace --no-fail-fast (RabbitMQ included)
                     otel       the trace-export tests (feature otel)
                     tansu      the broker-agnostic process tests on Tansu
                     kafka      the same on Apache Kafka in a container (testcontainers;
                                each test prints why it skips when no Docker engine answers)
                     deploy     alert rules, Kubernetes manifests and CRDs of deploy/
                     docs       the shell blocks of README.md, CONTRIBUTING.md and docs/
  prerequisites    only check and install what the suite needs
";

/// The process tests that run on any broker `TEST_BROKER` selects.
const BROKER_TESTS: &[&str] = &[
    "broker_checks",
    "group_split",
    "shutdown_restart",
    "crash_recovery",
    "group_scaling",
    "poison_messages",
    "poison_oversize",
    "retry_dead_letter",
    "crash_three",
    "rebalance_storm",
    "standby_members",
    "transaction_markers",
];

/// Every step of `cargo xtask test`, in the order they run.
const STEPS: &[&str] = &["workspace", "otel", "tansu", "kafka", "deploy", "docs"];

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let root = root();
    match args.first().map(String::as_str) {
        Some("test") => test(&root, &args[1..]),
        Some("prerequisites") => match prepare(&root) {
            Ok(_) => ExitCode::SUCCESS,
            Err(e) => fail(&e),
        },
        Some("-h" | "--help" | "help") => {
            print!("{USAGE}");
            ExitCode::SUCCESS
        }
        other => {
            eprint!("unknown task {other:?}\n\n{USAGE}");
            ExitCode::from(2)
        }
    }
}

/// The workspace root: the parent of this crate's directory.
fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask lives in the workspace")
        .to_path_buf()
}

fn fail(message: &str) -> ExitCode {
    eprintln!("error: {message}");
    ExitCode::FAILURE
}

/// Installs what is missing; returns Tansu's path.
fn prepare(root: &Path) -> Result<PathBuf, String> {
    banner("prerequisites");
    prereq::ensure()?;
    for need in prereq::NEEDS {
        let at = prereq::which(need.command).map(|p| p.display().to_string());
        println!(
            "{:<10} {}",
            need.command,
            at.as_deref().unwrap_or("(PROMETHEUS_BIN)")
        );
    }
    let tansu = prereq::tansu(root)?;
    println!("{:<10} {}", "tansu", tansu.display());
    prereq::rabbitmq()?;
    println!("{:<10} {}", "rabbitmq", prereq::RABBITMQ_ADDRESS);
    prereq::redis()?;
    println!("{:<10} {}", "redis", prereq::REDIS_ADDRESS);
    prereq::nats()?;
    println!("{:<10} {}", "nats", prereq::NATS_ADDRESS);
    prereq::playwright(root)?;
    println!(
        "{:<10} tests/console/node_modules/playwright-core",
        "playwright"
    );
    if let Some(gap) = prereq::netns_gap() {
        println!("note: {gap}");
    }
    Ok(tansu)
}

fn test(root: &Path, steps: &[String]) -> ExitCode {
    if let Some(unknown) = steps.iter().find(|s| !STEPS.contains(&s.as_str())) {
        eprint!("unknown step {unknown:?}\n\n{USAGE}");
        return ExitCode::from(2);
    }
    let selected: Vec<&str> = if steps.is_empty() {
        STEPS.to_vec()
    } else {
        STEPS
            .iter()
            .copied()
            .filter(|s| steps.iter().any(|x| x == s))
            .collect()
    };
    let tansu = match prepare(root) {
        Ok(tansu) => tansu,
        Err(e) => return fail(&e),
    };
    let report = root.join("target/chaos-report.txt");
    let _ = std::fs::remove_file(&report);
    let env = [
        ("TEST_TANSU_BIN", tansu.into_os_string()),
        ("CHAOS_REPORT", report.clone().into_os_string()),
    ];
    let mut results = Vec::new();
    for step in selected {
        banner(step);
        let started = Instant::now();
        let outcome = run_step(root, step, &env);
        if let Err(e) = &outcome {
            eprintln!("step {step} failed: {e}");
        }
        results.push((step, outcome.is_ok(), started.elapsed().as_secs()));
        free_disk(root);
    }
    if let Ok(lines) = std::fs::read_to_string(&report) {
        banner("chaos and network-fault figures (docs/chaos.md, docs/network-faults.md)");
        print!("{lines}");
    }
    banner("summary");
    for (step, ok, seconds) in &results {
        println!(
            "{:<10} {:<6} {seconds:>5} s",
            step,
            if *ok { "ok" } else { "FAILED" }
        );
    }
    if results.iter().all(|r| r.1) {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

fn run_step(root: &Path, step: &str, env: &[(&str, std::ffi::OsString)]) -> Result<(), String> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let cargo_test = |extra_env: &[(&str, &str)], args: &[&str]| {
        let mut command = Command::new(&cargo);
        command.current_dir(root).arg("test").args(args);
        command.envs(env.iter().map(|(k, v)| (*k, v)));
        command.envs(extra_env.iter().copied());
        status(&mut command)
    };
    let with_tests = |args: &[&'static str]| {
        let mut all = args.to_vec();
        for test in BROKER_TESTS {
            all.extend(["--test", test]);
        }
        all
    };
    match step {
        "workspace" => cargo_test(&[], &["--workspace", "--no-fail-fast"]),
        "otel" => cargo_test(
            &[],
            &[
                "-p",
                "pythia-kafka",
                "--features",
                "otel",
                "--no-fail-fast",
                "--lib",
            ]
            .into_iter()
            .chain(["--test", "otel_export", "--test", "otel_unreachable"])
            .collect::<Vec<_>>(),
        ),
        "tansu" => cargo_test(
            &[("TEST_BROKER", "tansu")],
            &with_tests(&["-p", "pythia-tests", "--no-fail-fast"]),
        ),
        "kafka" => cargo_test(
            &[("TEST_BROKER", "kafka")],
            &with_tests(&["-p", "pythia-tests", "--no-fail-fast"]),
        ),
        "deploy" => deploy(root),
        "docs" => {
            let mut build = Command::new(&cargo);
            build.current_dir(root).args([
                "build",
                "--release",
                "-p",
                "pythia-cli",
                "--bin",
                "pythia",
            ]);
            status(&mut build)?;
            docs::check(root, &root.join("target/release/pythia"))
        }
        other => Err(format!("no step {other}")),
    }
}

/// The checks of `deploy/`: promtool on the alert rules and their unit
/// tests; `deploy/check/k8s.py`, which renders every overlay with
/// `kubectl kustomize`, validates it against Kubernetes' schemas and checks
/// that the pieces agree; then the custom resources against their CRDs
/// (`deploy/check/crds.mjs`).
fn deploy(root: &Path) -> Result<(), String> {
    let work = root.join("target/deploy-check");
    std::fs::create_dir_all(&work).map_err(|e| e.to_string())?;
    let python = work.join("venv/bin/python");
    let in_root = |program: &str, args: &[&str]| {
        let mut command = Command::new(program);
        command.current_dir(root).args(args);
        status(&mut command)
    };
    in_root(
        "promtool",
        &[
            "check",
            "rules",
            "deploy/prometheus/alerts.yml",
            "deploy/prometheus/queue_alerts.yml",
        ],
    )?;
    in_root(
        "promtool",
        &[
            "test",
            "rules",
            "deploy/prometheus/alerts_test.yml",
            "deploy/prometheus/queue_alerts_test.yml",
        ],
    )?;
    if !python.is_file() {
        in_root("python3", &["-m", "venv", "target/deploy-check/venv"])?;
    }
    let pip = work.join("venv/bin/pip");
    in_root(
        pip.to_str().unwrap_or_default(),
        &["install", "--quiet", "--disable-pip-version-check"]
            .into_iter()
            .chain(["kubernetes-validate==1.37.0", "PyYAML"])
            .collect::<Vec<_>>(),
    )?;
    let crds = work.join("custom-resources.json");
    let crds = crds.to_str().unwrap_or_default();
    in_root(
        python.to_str().unwrap_or_default(),
        &["deploy/check/k8s.py", "--crd-json", crds],
    )?;
    for file in ["package.json", "crds.mjs"] {
        std::fs::copy(root.join("deploy/check").join(file), work.join(file))
            .map_err(|e| format!("copying deploy/check/{file}: {e}"))?;
    }
    let mut npm = Command::new("npm");
    npm.current_dir(&work).args([
        "install",
        "--no-audit",
        "--no-fund",
        "--no-package-lock",
        "--loglevel=error",
    ]);
    status(&mut npm)?;
    let script = work.join("crds.mjs");
    in_root("node", &[script.to_str().unwrap_or_default(), crds])
}

/// Prints the free space where `target/` lives: a full disk shows up as a
/// linker killed by SIGBUS or a crashed tool, and this line says why.
fn free_disk(root: &Path) {
    let out = Command::new("df")
        .args(["-h", "--output=avail,pcent"])
        .arg(root)
        .output();
    if let Ok(out) = out {
        let text = String::from_utf8_lossy(&out.stdout);
        if let Some(line) = text.lines().nth(1) {
            println!("free disk: {}", line.trim());
        }
    }
}

fn status(command: &mut Command) -> Result<(), String> {
    let shown = format!("{command:?}");
    match command.status() {
        Ok(s) if s.success() => Ok(()),
        Ok(s) => Err(format!("{shown}: {s}")),
        Err(e) => Err(format!("{shown}: {e}")),
    }
}

fn banner(title: &str) {
    println!("\n== {title} ==");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_usage_names_every_step() {
        for step in STEPS {
            assert!(USAGE.contains(&format!("  {step} ")), "{step}");
        }
    }

    #[test]
    fn the_broker_tests_are_test_targets_of_the_tests_crate() {
        let manifest = std::fs::read_to_string(root().join("tests/Cargo.toml")).unwrap();
        for test in BROKER_TESTS {
            assert!(manifest.contains(&format!("name = \"{test}\"")), "{test}");
        }
    }
}
