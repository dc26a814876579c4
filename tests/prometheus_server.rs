//! A real Prometheus server for the tests: the Debian `prometheus` package's
//! binary, started on a loopback port with a generated scrape config.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::{http_get, wait_until};

/// Where the binary is looked for: `PROMETHEUS_BIN`, else `prometheus` on PATH.
pub fn binary() -> PathBuf {
    if let Some(bin) = std::env::var_os("PROMETHEUS_BIN") {
        return bin.into();
    }
    let on_path = std::env::var_os("PATH")
        .map(|path| {
            std::env::split_paths(&path)
                .map(|dir| dir.join("prometheus"))
                .find(|bin| bin.is_file())
        })
        .unwrap_or_default();
    on_path.unwrap_or_else(|| {
        panic!(
            "the Prometheus server is not installed, and this test needs a real one: \
             install it with `apt-get install prometheus` (Debian/Ubuntu; .ci/run does this), \
             or set PROMETHEUS_BIN to a prometheus binary"
        )
    })
}

/// A Prometheus server process; stopped when dropped.
pub struct Prometheus {
    child: Child,
    /// `IP:PORT` of its HTTP API.
    pub address: String,
    log: PathBuf,
}

impl Prometheus {
    /// Starts Prometheus in `dir`, scraping `targets` (`IP:PORT`) every 500 ms,
    /// and waits until it is ready.
    pub fn start(dir: &Path, targets: &[&str]) -> Self {
        let bin = binary();
        let config = dir.join("prometheus.yml");
        let targets: Vec<String> = targets.iter().map(|t| format!("'{t}'")).collect();
        std::fs::write(
            &config,
            format!(
                "global:\n  scrape_interval: 500ms\n  evaluation_interval: 500ms\n\
                 scrape_configs:\n  - job_name: pythia\n    static_configs:\n      - targets: [{}]\n",
                targets.join(", ")
            ),
        )
        .expect("write prometheus.yml");
        // A free port: bound and released just before Prometheus takes it.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("free port")
            .port();
        let address = format!("127.0.0.1:{port}");
        let log = dir.join("prometheus.log");
        let child = Command::new(&bin)
            .arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.join("data").display()
            ))
            .arg(format!("--web.listen-address={address}"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).expect("prometheus log"))
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", bin.display()));
        let mut server = Self {
            child,
            address,
            log,
        };
        wait_until(Duration::from_secs(60), "Prometheus to be ready", || {
            if let Ok(Some(status)) = server.child.try_wait() {
                panic!(
                    "Prometheus exited with {status}:\n{}",
                    std::fs::read_to_string(&server.log).unwrap_or_default()
                );
            }
            matches!(http_get(&server.address, "/-/ready"), Ok((200, _)))
        });
        server
    }

    /// The value of an instant query that yields one sample; `None` when it
    /// yields nothing (yet).
    pub fn query(&self, expr: &str) -> Option<f64> {
        let path = format!("/api/v1/query?query={}", encode(expr));
        let (code, body) = http_get(&self.address, &path).ok()?;
        assert_eq!(code, 200, "query {expr} failed: {body}");
        let json: serde_json::Value = serde_json::from_str(&body).expect("query JSON");
        let result = json["data"]["result"].as_array()?;
        let value = result.first()?["value"][1].as_str()?;
        value.parse().ok()
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Percent-encodes a query parameter.
fn encode(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}
