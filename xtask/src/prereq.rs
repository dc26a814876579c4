//! What the test suite needs from the machine, checked and installed.
//!
//! Each [`Need`] is a command (or file) that some tests or checks cannot do
//! without, and the Debian package that provides it. Missing ones are
//! installed with `apt-get` in one go (as root, or through `sudo -n`); what
//! cannot be installed is an error that names it and the tests that need it.

use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// One thing the suite needs.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Need {
    /// The command looked for on `PATH`.
    pub(crate) command: &'static str,
    /// The Debian package that installs it.
    pub(crate) package: &'static str,
    /// Who needs it, for the error message.
    pub(crate) for_what: &'static str,
}

/// Everything `cargo xtask test` needs, in the order it is checked.
pub(crate) const NEEDS: &[Need] = &[
    Need {
        command: "cc",
        package: "build-essential",
        for_what: "building librdkafka (rdkafka-sys compiles it from source)",
    },
    Need {
        command: "make",
        package: "build-essential",
        for_what: "building librdkafka",
    },
    Need {
        command: "prometheus",
        package: "prometheus",
        for_what: "tests/metrics_prometheus.rs and tests/deploy_monitoring.rs (a real Prometheus)",
    },
    Need {
        command: "promtool",
        package: "prometheus",
        for_what: "checking and unit-testing deploy/prometheus/alerts.yml and queue_alerts.yml",
    },
    Need {
        command: "ip",
        package: "iproute2",
        for_what: "tests/chaos_network.rs (network namespaces)",
    },
    Need {
        command: "unzip",
        package: "unzip",
        for_what: ".ci/install-tansu (Tansu, the second test broker)",
    },
    Need {
        command: "python3",
        package: "python3",
        for_what: ".ci/install-tansu and deploy/check/k8s.py",
    },
    // Debian has no package called `kubectl` (that name is the Kubernetes
    // project's own repository); Debian's kubectl is in `kubernetes-client`.
    // Bookworm's is 1.20, whose kustomize (v2) predates `components`:
    // deploy/check/k8s.py says so and stops if that is the one found.
    Need {
        command: "kubectl",
        package: "kubernetes-client",
        for_what: "deploy/check/k8s.py (renders every overlay of deploy/k8s with `kubectl kustomize`)",
    },
    Need {
        command: "node",
        package: "nodejs",
        for_what: "deploy/check/crds.mjs (KEDA and prometheus-operator schemas)",
    },
    Need {
        command: "npm",
        package: "npm",
        for_what: "installing the CRD schemas of deploy/check/package.json and playwright-core for tests/console",
    },
    Need {
        command: "chromium",
        package: "chromium",
        for_what: "tests/console_browser.rs (the console in headless Chromium, driven by Playwright)",
    },
];

/// Python modules checked apart from commands: `(module, package, for what)`.
const PYTHON_MODULES: &[(&str, &str, &str)] = &[
    (
        "venv",
        "python3-venv",
        "deploy/check/k8s.py runs in a virtual environment",
    ),
    (
        "pip",
        "python3-pip",
        ".ci/install-tansu downloads Tansu with pip",
    ),
];

/// Where `name` is on `PATH`, if it is.
pub(crate) fn which(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(name))
        .find(|candidate| is_executable(candidate))
}

fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    path.metadata()
        .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

fn python_has(module: &str) -> bool {
    Command::new("python3")
        .args(["-c", &format!("import {module}")])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// The packages to install for what is missing, each once, in first-seen order.
pub(crate) fn packages_for<'a>(missing: impl IntoIterator<Item = &'a str>) -> Vec<&'a str> {
    let mut packages: Vec<&str> = Vec::new();
    for package in missing {
        if !packages.contains(&package) {
            packages.push(package);
        }
    }
    packages
}

/// What is missing now: `(what, package, for what)`.
fn missing() -> Vec<(String, &'static str, &'static str)> {
    let mut missing: Vec<(String, &str, &str)> = NEEDS
        .iter()
        .filter(|need| which(need.command).is_none())
        .filter(|need| {
            !(need.command == "prometheus" && std::env::var_os("PROMETHEUS_BIN").is_some())
        })
        .map(|need| (format!("`{}`", need.command), need.package, need.for_what))
        .collect();
    if which("python3").is_some() {
        for &(module, package, for_what) in PYTHON_MODULES {
            if !python_has(module) {
                missing.push((format!("python3's `{module}`"), package, for_what));
            }
        }
    }
    missing
}

/// How packages can be installed here: `apt-get` directly as root, or
/// through `sudo -n`; `None` when neither works.
fn installer() -> Option<Vec<&'static str>> {
    which("apt-get")?;
    if is_root() {
        return Some(vec![]);
    }
    let sudo = Command::new("sudo")
        .args(["-n", "true"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    sudo.then(|| vec!["sudo", "-n"])
}

/// Whether this process runs as root.
pub(crate) fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|out| String::from_utf8_lossy(&out.stdout).trim() == "0")
}

/// Checks every need and installs what is missing. `Err` names what is
/// still missing, the package that provides it and who needs it.
pub(crate) fn ensure() -> Result<(), String> {
    let first = missing();
    if first.is_empty() {
        return Ok(());
    }
    let packages = packages_for(first.iter().map(|m| m.1));
    println!("installing: {}", packages.join(" "));
    let Some(prefix) = installer() else {
        return Err(explain(
            &first,
            "this user cannot install packages (not root, and `sudo -n` is refused)",
        ));
    };
    if !apt_install(&prefix, &packages) {
        eprintln!("apt-get failed; checking what is still missing");
    }
    let still = missing();
    if still.is_empty() {
        Ok(())
    } else {
        Err(explain(&still, "apt-get did not install them"))
    }
}

/// Runs `apt-get update` and installs `packages` through `prefix` (see
/// [`installer`]); whether both succeeded.
fn apt_install(prefix: &[&str], packages: &[&str]) -> bool {
    let apt = |args: &[&str]| {
        let mut command = Command::new(prefix.first().copied().unwrap_or("apt-get"));
        command.args(prefix.iter().skip(1));
        if !prefix.is_empty() {
            command.arg("apt-get");
        }
        // Another apt (unattended upgrades, a provisioning script) may hold
        // the package lock for a while: wait for it rather than fail.
        command
            .args(["-o", "DPkg::Lock::Timeout=600"])
            .args(args)
            .env("DEBIAN_FRONTEND", "noninteractive")
            .status()
            .is_ok_and(|s| s.success())
    };
    let mut install = vec!["install", "-y", "--no-install-recommends"];
    install.extend(packages);
    apt(&["update"]) && apt(&install)
}

fn explain(missing: &[(String, &str, &str)], why: &str) -> String {
    let mut text = format!("missing prerequisites ({why}):\n");
    for (what, package, for_what) in missing {
        text.push_str(&format!(
            "  {what}: Debian package `{package}`, needed by {for_what}\n"
        ));
    }
    let packages = packages_for(missing.iter().map(|m| m.1));
    text.push_str(&format!(
        "install them with `apt-get install -y {}` and run `cargo xtask test` again",
        packages.join(" ")
    ));
    text
}

/// Where the RabbitMQ connector's tests find their broker.
pub(crate) const RABBITMQ_ADDRESS: &str = "127.0.0.1:5672";

/// Where the RabbitMQ jobs example keeps its documents, and where
/// pythia-redis's tests find their server.
pub(crate) const REDIS_ADDRESS: &str = "127.0.0.1:6379";

/// Where pythia-nats's tests find NATS with JetStream.
pub(crate) const NATS_ADDRESS: &str = "127.0.0.1:4222";

/// Whether something accepts TCP connections at `address`.
pub(crate) fn answers(address: &str) -> bool {
    address
        .parse()
        .is_ok_and(|addr| TcpStream::connect_timeout(&addr, Duration::from_secs(1)).is_ok())
}

/// A server the suite needs running on this machine.
struct Service {
    /// What it is called in messages.
    name: &'static str,
    address: &'static str,
    /// The Debian package that brings it.
    package: &'static str,
    /// Its server program, on `PATH` or at one of these paths.
    program: &'static str,
    paths: &'static [&'static str],
    /// Starts it where no service manager runs (and, without `service`,
    /// always).
    detached: &'static [&'static str],
    /// Whether the program stays in the foreground with `detached`: then it
    /// is spawned in a session of its own and not waited for.
    foreground: bool,
    /// Whether `service <package> start` may start it: not for Redis, whose
    /// Debian service saves snapshots and refuses writes when it cannot.
    service: bool,
    /// How long it may take to answer once started.
    start: Duration,
    /// Who needs it, for messages.
    needed_by: &'static str,
}

impl Service {
    fn program(&self) -> Option<PathBuf> {
        which(self.program).or_else(|| {
            self.paths
                .iter()
                .map(PathBuf::from)
                .find(|p| is_executable(p))
        })
    }

    /// Makes sure it answers on its address: installs the package with apt
    /// if the program is missing, starts its service (or the program
    /// detached, where no service manager runs) if it does not answer, and
    /// waits for it.
    fn ensure(&self) -> Result<(), String> {
        if answers(self.address) {
            return Ok(());
        }
        let prefix = installer();
        if self.program().is_none() {
            println!("installing: {}", self.package);
            let Some(prefix) = &prefix else {
                return Err(format!(
                    "{} is not installed and this user cannot install packages: \
                     `apt-get install -y {}` (needed by {})",
                    self.name, self.package, self.needed_by
                ));
            };
            if !apt_install(prefix, &[self.package]) {
                eprintln!("apt-get failed to install {}", self.package);
            }
        }
        let sudo: Vec<&str> = prefix.unwrap_or_default();
        let run = |program: &str, args: &[&str]| {
            let mut command = Command::new(sudo.first().copied().unwrap_or(program));
            command.args(sudo.iter().skip(1));
            if !sudo.is_empty() {
                command.arg(program);
            }
            command
                .args(args)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|s| s.success())
        };
        println!("starting {}", self.name);
        let started = (self.service && run("service", &[self.package, "start"]))
            || self.program().is_some_and(|server| {
                let server = server.display().to_string();
                if self.foreground {
                    spawn_detached(&sudo, &server, self.detached)
                } else {
                    run(&server, self.detached)
                }
            });
        let deadline = Instant::now() + self.start;
        while Instant::now() < deadline {
            if answers(self.address) {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(500));
        }
        Err(format!(
            "{} does not answer on {} ({}): start it with `service {} start` (or `{} {}`); \
             {} need it",
            self.name,
            self.address,
            if started {
                "started, but silent"
            } else {
                "could not be started"
            },
            self.package,
            self.program,
            self.detached.join(" "),
            self.needed_by,
        ))
    }
}

/// Makes sure RabbitMQ answers on [`RABBITMQ_ADDRESS`]: pythia-rabbitmq's
/// tests need it, and fail rather than skip without it.
pub(crate) fn rabbitmq() -> Result<(), String> {
    Service {
        name: "RabbitMQ",
        address: RABBITMQ_ADDRESS,
        package: "rabbitmq-server",
        program: "rabbitmq-server",
        paths: &[
            "/usr/sbin/rabbitmq-server",
            "/usr/lib/rabbitmq/bin/rabbitmq-server",
        ],
        detached: &["-detached"],
        foreground: false,
        service: true,
        start: Duration::from_secs(90),
        needed_by: "pythia-rabbitmq's tests",
    }
    .ensure()
}

/// Makes sure Redis answers on [`REDIS_ADDRESS`]: the RabbitMQ jobs example
/// writes its documents there, and its tests need it.
pub(crate) fn redis() -> Result<(), String> {
    Service {
        name: "Redis",
        address: REDIS_ADDRESS,
        package: "redis-server",
        program: "redis-server",
        paths: &["/usr/bin/redis-server"],
        detached: &[
            "--daemonize",
            "yes",
            "--bind",
            "127.0.0.1",
            "--port",
            "6379",
            "--save",
            "",
            "--appendonly",
            "no",
        ],
        foreground: false,
        service: false,
        start: Duration::from_secs(30),
        needed_by: "pythia-redis's tests and the rabbitmq_jobs example's",
    }
    .ensure()
}

/// Makes sure NATS with JetStream answers on [`NATS_ADDRESS`]: pythia-nats's
/// tests need it, and fail rather than skip without it. Started as this
/// machine's own is (`-js`, a store under the temporary directory), never by
/// Debian's service, which leaves JetStream off.
pub(crate) fn nats() -> Result<(), String> {
    Service {
        name: "NATS",
        address: NATS_ADDRESS,
        package: "nats-server",
        program: "nats-server",
        paths: &["/usr/sbin/nats-server", "/usr/bin/nats-server"],
        detached: &[
            "-a",
            "127.0.0.1",
            "-p",
            "4222",
            "-js",
            "-sd",
            "/tmp/pythia-nats-store",
        ],
        foreground: true,
        service: false,
        start: Duration::from_secs(30),
        needed_by: "pythia-nats's tests",
    }
    .ensure()
}

/// Starts `program args` (through `sudo` when given) in a session of its own
/// with its output discarded, and leaves it running.
fn spawn_detached(sudo: &[&str], program: &str, args: &[&str]) -> bool {
    use std::os::unix::process::CommandExt as _;
    let mut command = Command::new(sudo.first().copied().unwrap_or(program));
    command.args(sudo.iter().skip(1));
    if !sudo.is_empty() {
        command.arg(program);
    }
    command
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .process_group(0)
        .spawn()
        .is_ok()
}

/// Installs Tansu with `.ci/install-tansu` (which checks its hash) and
/// returns the binary's path.
pub(crate) fn tansu(root: &Path) -> Result<PathBuf, String> {
    let out = Command::new(root.join(".ci/install-tansu"))
        .stderr(Stdio::inherit())
        .output()
        .map_err(|e| format!("running .ci/install-tansu: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            ".ci/install-tansu failed ({}): Tansu is needed by the chaos suite and the \
             TEST_BROKER=tansu pass",
            out.status
        ));
    }
    let path = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    Ok(PathBuf::from(path))
}

/// Installs the npm package `playwright-core` (pinned by
/// `tests/console/package-lock.json`) for the console's browser test.
pub(crate) fn playwright(root: &Path) -> Result<(), String> {
    let dir = root.join("tests/console");
    let installed = dir.join("node_modules/playwright-core/package.json");
    let out = Command::new("npm")
        .current_dir(&dir)
        .args(["ci", "--no-audit", "--no-fund", "--loglevel=error"])
        .stdout(Stdio::inherit())
        .stderr(Stdio::inherit())
        .status();
    match out {
        Ok(status) if status.success() && installed.is_file() => Ok(()),
        Ok(status) => Err(format!(
            "`npm ci` in tests/console failed ({status}): the npm package `playwright-core` is needed by tests/console_browser.rs; install it with `cd tests/console && npm ci`"
        )),
        Err(e) => Err(format!(
            "running npm in tests/console: {e}; the npm package `playwright-core` is needed by tests/console_browser.rs"
        )),
    }
}

/// Why the network-fault tests will skip here, if they will: they need root
/// and the TUN driver (`ip` is a [`Need`]).
pub(crate) fn netns_gap() -> Option<&'static str> {
    if !is_root() {
        Some("not root: tests/chaos_network.rs creates network namespaces and will skip")
    } else if !Path::new("/dev/net/tun").exists() {
        Some("/dev/net/tun is missing: tests/chaos_network.rs will skip")
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_package_is_installed_once_in_first_seen_order() {
        let packages = packages_for(["build-essential", "prometheus", "build-essential", "npm"]);
        assert_eq!(packages, ["build-essential", "prometheus", "npm"]);
    }

    #[test]
    fn the_explanation_names_what_where_and_who() {
        let text = explain(
            &[("`prometheus`".into(), "prometheus", "the metrics test")],
            "no root",
        );
        assert!(
            text.contains("`prometheus`: Debian package `prometheus`, needed by the metrics test")
        );
        assert!(text.contains("apt-get install -y prometheus"), "{text}");
        assert!(text.contains("(no root)"), "{text}");
    }

    #[test]
    fn which_finds_a_command_on_path_and_not_a_made_up_one() {
        assert!(which("sh").is_some());
        assert!(which("no-such-command-pythia").is_none());
    }

    #[test]
    fn a_closed_port_does_not_answer_and_a_listening_one_does() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let open = listener.local_addr().unwrap().to_string();
        assert!(answers(&open));
        drop(listener);
        assert!(!answers(&open));
        assert!(!answers("not an address"));
    }

    #[test]
    fn every_need_names_a_package_and_a_reason() {
        for need in NEEDS {
            assert!(
                !need.package.is_empty() && !need.for_what.is_empty(),
                "{need:?}"
            );
        }
    }
}
