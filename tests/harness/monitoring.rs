//! The monitoring in `deploy/` against a real Prometheus: a server that
//! scrapes jobs under the names the deploy files use and loads alert rule
//! files, and the checks that every rule evaluates and names only metrics
//! Prometheus has, and that every query of a Grafana dashboard returns data.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::{http_get, wait_until};

/// The repository's root.
pub fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ has a parent")
        .to_owned()
}

/// A Prometheus server scraping jobs every 500 ms and evaluating rule files
/// as often; stopped when dropped.
pub struct Prometheus {
    child: Child,
    /// `IP:PORT` of its HTTP API.
    pub address: String,
}

/// An alert pending or firing.
#[derive(Debug, Clone)]
pub struct Alert {
    /// `alertname`.
    pub name: String,
    /// `pending` or `firing`.
    pub state: String,
    /// Every label, `alertname` included.
    pub labels: serde_json::Value,
}

impl Prometheus {
    /// Starts Prometheus in `dir` with `rules` (files under the repository,
    /// e.g. `deploy/prometheus/alerts.yml`) and `jobs` (a job name and its
    /// `IP:PORT` targets), and waits until it is ready.
    pub fn start(dir: &Path, rules: &[&str], jobs: &[(&str, Vec<String>)]) -> Self {
        let mut config = String::from(
            "global:\n  scrape_interval: 500ms\n  evaluation_interval: 500ms\nrule_files:\n",
        );
        for rule in rules {
            config += &format!("  - '{}'\n", repo().join(rule).display());
        }
        config += "scrape_configs:\n";
        for (job, targets) in jobs {
            let targets: Vec<String> = targets.iter().map(|t| format!("'{t}'")).collect();
            config += &format!(
                "  - job_name: {job}\n    static_configs:\n      - targets: [{}]\n",
                targets.join(", ")
            );
        }
        let config_file = dir.join("prometheus.yml");
        std::fs::write(&config_file, config).expect("write prometheus.yml");
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("free port")
            .port();
        let address = format!("127.0.0.1:{port}");
        let log = dir.join("prometheus.log");
        let child = Command::new(crate::prometheus_server::binary())
            .arg(format!("--config.file={}", config_file.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.join("data").display()
            ))
            .arg(format!("--web.listen-address={address}"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).expect("prometheus log"))
            .spawn()
            .expect("start prometheus");
        let mut server = Self { child, address };
        wait_until(Duration::from_secs(60), "Prometheus to be ready", || {
            if let Ok(Some(status)) = server.child.try_wait() {
                panic!(
                    "Prometheus exited with {status}:\n{}",
                    std::fs::read_to_string(&log).unwrap_or_default()
                );
            }
            matches!(http_get(&server.address, "/-/ready"), Ok((200, _)))
        });
        server
    }

    /// `GET /api/v1/<path>`'s `data`, failing the test on an API error.
    pub fn api(&self, path: &str) -> serde_json::Value {
        let (code, body) = http_get(&self.address, &format!("/api/v1/{path}"))
            .unwrap_or_else(|e| panic!("GET /api/v1/{path}: {e}"));
        // Large answers come chunked (`http_get` speaks HTTP/1.1).
        let body = serde_json::from_str::<serde_json::Value>(&body)
            .map(|_| body.clone())
            .unwrap_or_else(|_| dechunk(&body));
        let json: serde_json::Value =
            serde_json::from_str(&body).unwrap_or_else(|_| panic!("not JSON: {body}"));
        assert_eq!(code, 200, "/api/v1/{path}: {body}");
        assert_eq!(json["status"], "success", "/api/v1/{path}: {body}");
        json["data"].clone()
    }

    /// The result vector of an instant query.
    pub fn query(&self, expr: &str) -> Vec<serde_json::Value> {
        let data = self.api(&format!("query?query={}", encode(expr)));
        data["result"].as_array().cloned().unwrap_or_default()
    }

    /// The sum of an instant query's samples; `None` when it yields nothing.
    pub fn value(&self, expr: &str) -> Option<f64> {
        let result = self.query(expr);
        (!result.is_empty()).then(|| result.iter().map(sample_value).sum())
    }

    /// Alerts pending or firing.
    pub fn alerts(&self) -> Vec<Alert> {
        self.api("alerts")["alerts"]
            .as_array()
            .cloned()
            .unwrap_or_default()
            .into_iter()
            .map(|a| Alert {
                name: a["labels"]["alertname"].as_str().unwrap_or("").to_owned(),
                state: a["state"].as_str().unwrap_or("").to_owned(),
                labels: a["labels"].clone(),
            })
            .collect()
    }

    /// Every metric name Prometheus has stored.
    pub fn metric_names(&self) -> BTreeSet<String> {
        self.api("label/__name__/values")
            .as_array()
            .expect("names")
            .iter()
            .filter_map(|n| n.as_str().map(str::to_owned))
            .collect()
    }

    /// The rules of the groups in `file` (a path under the repository), once
    /// each has been evaluated.
    pub fn evaluated_rules(&self, file: &str) -> Vec<serde_json::Value> {
        let file = repo().join(file).display().to_string();
        let mut rules = Vec::new();
        wait_until(
            Duration::from_secs(30),
            &format!("every rule of {file} to have been evaluated"),
            || {
                rules = self.api("rules")["groups"]
                    .as_array()
                    .expect("rule groups")
                    .iter()
                    .filter(|g| g["file"] == file.as_str())
                    .flat_map(|g| g["rules"].as_array().cloned().unwrap_or_default())
                    .collect();
                !rules.is_empty()
                    && rules.iter().all(|r| {
                        r["lastEvaluation"]
                            .as_str()
                            .is_some_and(|t| !t.starts_with("0001"))
                    })
            },
        );
        rules
    }

    /// Checks the rules of `file`: each evaluates without error, has a
    /// summary and a runbook, and names only metrics Prometheus has. Returns
    /// the alert names and the metrics the rules name.
    pub fn check_rules(&self, file: &str) -> (BTreeSet<String>, BTreeSet<String>) {
        let rules = self.evaluated_rules(file);
        let known = self.metric_names();
        let mut names = BTreeSet::new();
        let mut metrics = BTreeSet::new();
        for rule in &rules {
            let name = rule["name"].as_str().unwrap_or_default();
            names.insert(name.to_owned());
            assert_eq!(rule["health"], "ok", "rule {name} evaluates: {rule}");
            for annotation in ["summary", "runbook"] {
                assert!(
                    rule["annotations"][annotation]
                        .as_str()
                        .is_some_and(|a| !a.is_empty()),
                    "rule {name} has a {annotation}"
                );
            }
            metrics.extend(metric_names(rule["query"].as_str().expect("query")));
        }
        for name in &metrics {
            assert!(
                known.contains(name),
                "{file} uses {name}, which Prometheus does not have: {known:?}"
            );
        }
        (names, metrics)
    }

    /// Checks the Grafana dashboard `file` (a path under the repository):
    /// every template variable has values, every panel query returns a
    /// number, every metric named exists. Returns the metrics it names.
    pub fn check_dashboard(&self, file: &str) -> BTreeSet<String> {
        let dashboard: serde_json::Value = serde_json::from_str(
            &std::fs::read_to_string(repo().join(file))
                .unwrap_or_else(|e| panic!("read {file}: {e}")),
        )
        .unwrap_or_else(|e| panic!("{file} is JSON: {e}"));
        let templating = dashboard["templating"]["list"]
            .as_array()
            .expect("templating");
        let variables: Vec<String> = templating
            .iter()
            .filter_map(|v| v["name"].as_str().map(str::to_owned))
            .collect();
        let mut metrics = BTreeSet::new();
        for variable in templating.iter().filter(|v| v["type"] == "query") {
            let query = variable["query"]["query"]
                .as_str()
                .or(variable["query"].as_str())
                .expect("variable query");
            let inner = query
                .strip_prefix("label_values(")
                .and_then(|q| q.strip_suffix(')'))
                .expect("label_values(<series>, <label>)");
            let (series, label) = inner.rsplit_once(',').expect("series, label");
            let series = concrete(series.trim(), &variables);
            let values = self.api(&format!(
                "label/{}/values?match[]={}",
                label.trim(),
                encode(&series)
            ));
            assert!(
                values.as_array().is_some_and(|v| !v.is_empty()),
                "{file}: variable {query} has values"
            );
            metrics.extend(metric_names(&series));
        }
        let queries = dashboard_queries(&dashboard);
        assert!(queries.len() >= 10, "{file}: {} queries", queries.len());
        for (title, expr) in &queries {
            metrics.extend(metric_names(expr));
            let query = concrete(expr, &variables);
            let result = self.query(&query);
            assert!(
                result.iter().any(|s| sample_value(s).is_finite()),
                "{file}: panel {title:?}: {query} returns no data: {result:?}"
            );
        }
        let known = self.metric_names();
        for name in &metrics {
            assert!(
                known.contains(name),
                "{file} uses {name}, which Prometheus does not have"
            );
        }
        metrics
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The body of a `Transfer-Encoding: chunked` response.
fn dechunk(body: &str) -> String {
    let mut rest = body.as_bytes();
    let mut out = Vec::new();
    while let Some(line_end) = rest.windows(2).position(|w| w == b"\r\n") {
        let size = std::str::from_utf8(&rest[..line_end])
            .ok()
            .and_then(|s| usize::from_str_radix(s.trim(), 16).ok())
            .unwrap_or(0);
        if size == 0 {
            break;
        }
        let start = line_end + 2;
        out.extend_from_slice(&rest[start..start + size]);
        rest = &rest[(start + size + 2).min(rest.len())..];
    }
    String::from_utf8(out).expect("UTF-8 body")
}

/// The value of one sample of a query result (NaN if it has none).
pub fn sample_value(sample: &serde_json::Value) -> f64 {
    sample["value"][1]
        .as_str()
        .and_then(|v| v.parse().ok())
        .unwrap_or(f64::NAN)
}

/// Percent-encodes a query parameter.
pub fn encode(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// The metric names (`pythia_…`) an expression mentions.
pub fn metric_names(expr: &str) -> BTreeSet<String> {
    let bytes = expr.as_bytes();
    let ident = |b: u8| b.is_ascii_alphanumeric() || b == b'_' || b == b':';
    let mut names = BTreeSet::new();
    let mut i = 0;
    while let Some(at) = expr[i..].find("pythia_") {
        let start = i + at;
        let mut end = start;
        while end < bytes.len() && ident(bytes[end]) {
            end += 1;
        }
        if start == 0 || !ident(bytes[start - 1]) {
            names.insert(expr[start..end].to_owned());
        }
        i = end;
    }
    names
}

/// A dashboard query made concrete: Grafana's interval variables become a
/// minute (or five for the range), template variables match everything.
fn concrete(expr: &str, variables: &[String]) -> String {
    let mut out = expr
        .replace("$__rate_interval", "1m")
        .replace("$__interval", "1m")
        .replace("$__range", "5m");
    for name in variables {
        out = out
            .replace(&format!("${{{name}}}"), ".*")
            .replace(&format!("${name}"), ".*");
    }
    assert!(
        !out.contains('$'),
        "a variable the dashboard does not define: {expr}"
    );
    out
}

/// Every panel query of a dashboard, as (panel title, expression).
fn dashboard_queries(dashboard: &serde_json::Value) -> Vec<(String, String)> {
    let mut queries = Vec::new();
    for panel in dashboard["panels"].as_array().expect("panels") {
        let nested = panel["panels"].as_array().cloned().unwrap_or_default();
        for p in std::iter::once(panel).chain(nested.iter()) {
            for target in p["targets"].as_array().into_iter().flatten() {
                if let Some(expr) = target["expr"].as_str() {
                    queries.push((p["title"].as_str().unwrap_or("").to_owned(), expr.into()));
                }
            }
        }
    }
    queries
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metric_names_finds_whole_names_only() {
        let names = metric_names(
            r#"sum(rate(pythia_messages_total{x="a"}[1m])) or {__name__=~"pythia_queue_consumers|pythia_redis_list_length"} or my_pythia_thing"#,
        );
        assert_eq!(
            names.into_iter().collect::<Vec<_>>(),
            [
                "pythia_messages_total",
                "pythia_queue_consumers",
                "pythia_redis_list_length"
            ]
        );
    }

    #[test]
    fn concrete_replaces_intervals_and_variables() {
        let variables = vec!["group".to_owned(), "queue".to_owned()];
        assert_eq!(
            concrete(
                r#"rate(x{group=~"$group", q=~"${queue}"}[$__rate_interval])"#,
                &variables
            ),
            r#"rate(x{group=~".*", q=~".*"}[1m])"#
        );
    }
}
