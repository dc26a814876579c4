//! The shell blocks of the documentation, checked and run.
//!
//! Every fenced block whose language is `sh` in `README.md`,
//! `CONTRIBUTING.md` and `docs/*.md` is checked: `bash -n` parses it, and
//! each `pythia <command> --flag` it shows must be a command and flag that
//! `pythia <command> --help` lists. Blocks are then run, in a scratch
//! directory with the release `pythia` first on `PATH`, unless their info
//! string says `sh,no_run` (they need a cluster, Docker or Kubernetes, or
//! they are the commands that run this very check). Rust blocks are
//! doctests of `pythia-kafka`, TOML blocks of `docs/configuration.md` are
//! loaded by its `config_reference` test.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// A fenced code block of a Markdown file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Block {
    /// Where it starts: `path:line` of the opening fence.
    pub(crate) place: String,
    /// The info string's first word (`sh`, `rust`, `toml`…).
    pub(crate) lang: String,
    /// Whether the info string says `no_run`.
    pub(crate) no_run: bool,
    /// The lines between the fences.
    pub(crate) text: String,
}

/// The fenced blocks of `markdown` (fences may be indented, as in lists).
pub(crate) fn blocks(path: &str, markdown: &str) -> Vec<Block> {
    let mut found = Vec::new();
    let mut open: Option<(usize, String, Vec<&str>)> = None;
    for (number, line) in markdown.lines().enumerate() {
        let trimmed = line.trim_start();
        match open.take() {
            None => {
                if let Some(info) = trimmed.strip_prefix("```") {
                    open = Some((number + 1, info.trim().to_owned(), Vec::new()));
                }
            }
            Some((start, info, mut lines)) => {
                if trimmed == "```" {
                    let mut words = info.split([',', ' ']).filter(|w| !w.is_empty());
                    found.push(Block {
                        place: format!("{path}:{start}"),
                        lang: words.next().unwrap_or_default().to_owned(),
                        no_run: words.any(|w| w == "no_run"),
                        text: lines.join("\n"),
                    });
                } else {
                    lines.push(line);
                    open = Some((start, info, lines));
                }
            }
        }
    }
    found
}

/// Words that may stand before a command: `do pythia …`, `time pythia …`.
const PREFIXES: &[&str] = &["do", "then", "else", "time", "exec", "!", "{", "("];

/// The `pythia` invocations of a shell block: `(command, flags)` per
/// invocation, continuation lines joined and comments dropped.
pub(crate) fn pythia_calls(script: &str) -> Vec<(String, Vec<String>)> {
    let joined = script.replace("\\\n", " ");
    let mut calls = Vec::new();
    for line in joined.lines() {
        let code = line.split(" #").next().unwrap_or_default();
        if code.trim_start().starts_with('#') {
            continue;
        }
        for part in code.split(['|', ';', '&']) {
            let mut words = part
                .split_whitespace()
                .skip_while(|w| w.contains('=') || PREFIXES.contains(w));
            if words.next() != Some("pythia") {
                continue;
            }
            let words: Vec<&str> = words.collect();
            // The command path: `lag`, `dlq replay`; empty for `pythia --help`.
            let path: Vec<&str> = words
                .iter()
                .take(2)
                .take_while(|w| w.chars().all(|c| c.is_ascii_lowercase() || c == '-'))
                .take_while(|w| !w.starts_with('-'))
                .copied()
                .collect();
            let flags = words[path.len()..]
                .iter()
                .filter(|w| w.starts_with("--") && **w != "--help")
                .map(|w| w.split('=').next().unwrap_or(w).to_owned())
                .collect();
            calls.push((path.join(" "), flags));
        }
    }
    calls
}

/// The Markdown files whose blocks are checked.
pub(crate) fn files(root: &Path) -> Vec<PathBuf> {
    let mut files = vec![root.join("README.md"), root.join("CONTRIBUTING.md")];
    let mut docs: Vec<PathBuf> = std::fs::read_dir(root.join("docs"))
        .map(|dir| {
            dir.filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.extension().is_some_and(|e| e == "md"))
                .collect()
        })
        .unwrap_or_default();
    docs.sort();
    files.extend(docs);
    files.retain(|f| f.is_file());
    files
}

/// Checks and runs every shell block; `Err` lists each failure.
pub(crate) fn check(root: &Path, pythia: &Path) -> Result<(), String> {
    let mut failures = Vec::new();
    let mut help: BTreeMap<String, String> = BTreeMap::new();
    let scratch = root.join("target/xtask-docs");
    std::fs::create_dir_all(&scratch).map_err(|e| format!("{}: {e}", scratch.display()))?;
    let mut ran = 0;
    let mut checked = 0;
    for file in files(root) {
        let relative = file
            .strip_prefix(root)
            .unwrap_or(&file)
            .display()
            .to_string();
        let markdown = std::fs::read_to_string(&file).map_err(|e| format!("{relative}: {e}"))?;
        for block in blocks(&relative, &markdown)
            .into_iter()
            .filter(|b| b.lang == "sh")
        {
            checked += 1;
            if let Err(e) = syntax(&block.text) {
                failures.push(format!("{}: bash -n: {e}", block.place));
            }
            for (command, flags) in pythia_calls(&block.text) {
                let text = help
                    .entry(command.clone())
                    .or_insert_with(|| help_of(pythia, &command));
                if text.is_empty() {
                    failures.push(format!(
                        "{}: `pythia {command}` is not a command",
                        block.place
                    ));
                    continue;
                }
                for flag in flags {
                    if !text.contains(&flag) {
                        failures.push(format!(
                            "{}: `pythia {command}` has no option {flag}",
                            block.place
                        ));
                    }
                }
            }
            if block.no_run {
                continue;
            }
            ran += 1;
            println!("--- {} ---\n{}", block.place, block.text);
            if let Err(e) = run(&block.text, &scratch, pythia, Duration::from_secs(300)) {
                failures.push(format!("{}: {e}", block.place));
            }
        }
    }
    println!("docs: {checked} shell blocks checked, {ran} run");
    if let Err(e) = readme_project(root) {
        failures.push(format!("README.md as a project: {e}"));
    }
    if failures.is_empty() {
        Ok(())
    } else {
        Err(failures.join("\n"))
    }
}

/// Builds the README's `[dependencies]`, worker and test as a project of
/// their own, the way a new user would, and runs `cargo test` on it. The
/// dependency on this repository's git address is pointed at the checkout.
fn readme_project(root: &Path) -> Result<(), String> {
    let readme = std::fs::read_to_string(root.join("README.md")).map_err(|e| e.to_string())?;
    let found = blocks("README.md", &readme);
    let dependencies = found
        .iter()
        .find(|b| b.lang == "toml" && b.text.contains("[dependencies]"))
        .ok_or("no ```toml block with [dependencies]")?;
    let main: Vec<&str> = found
        .iter()
        .filter(|b| b.lang == "rust")
        .map(|b| b.text.as_str())
        .collect();
    if main.len() < 2 {
        return Err(format!(
            "expected the worker and its test, found {} Rust blocks",
            main.len()
        ));
    }
    let dir = root.join("target/xtask-docs/readme-project");
    std::fs::create_dir_all(dir.join("src")).map_err(|e| e.to_string())?;
    let manifest = project_manifest(&dependencies.text, root)?;
    std::fs::write(dir.join("Cargo.toml"), manifest).map_err(|e| e.to_string())?;
    std::fs::write(dir.join("src/main.rs"), main.join("\n\n")).map_err(|e| e.to_string())?;
    // The workspace's versions, so nothing is resolved anew.
    std::fs::copy(root.join("Cargo.lock"), dir.join("Cargo.lock")).map_err(|e| e.to_string())?;
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    println!(
        "--- README.md as a project: cargo test in {} ---",
        dir.display()
    );
    let status = Command::new(cargo)
        .current_dir(&dir)
        .args(["test", "--quiet"])
        .env("CARGO_TARGET_DIR", root.join("target"))
        .status()
        .map_err(|e| e.to_string())?;
    if status.success() {
        Ok(())
    } else {
        Err(format!("cargo test exited with {status}"))
    }
}

/// A manifest for the README's project: its `[dependencies]`, with the
/// repository's git address replaced by the checkout's path.
pub(crate) fn project_manifest(dependencies: &str, root: &Path) -> Result<String, String> {
    const GIT: &str = "git = \"https://github.com/pythia-rs/pythia\"";
    if !dependencies.contains(GIT) {
        return Err(format!("the [dependencies] block no longer says {GIT}"));
    }
    let local = format!("path = \"{}\"", root.join("pythia-kafka").display());
    Ok(format!(
        "[package]\nname = \"readme-billing\"\nversion = \"0.1.0\"\nedition = \"2024\"\npublish = false\n\n\
         [workspace]\n\n{}\n",
        dependencies.replace(GIT, &local)
    ))
}

fn syntax(script: &str) -> Result<(), String> {
    let out = Command::new("bash")
        .args(["-n", "-c", script])
        .output()
        .map_err(|e| e.to_string())?;
    if out.status.success() {
        Ok(())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).trim().to_owned())
    }
}

/// `pythia <command> --help`, or empty when there is no such command.
fn help_of(pythia: &Path, command: &str) -> String {
    Command::new(pythia)
        .args(command.split_whitespace())
        .arg("--help")
        .output()
        .ok()
        .filter(|out| out.status.success())
        .map(|out| String::from_utf8_lossy(&out.stdout).into_owned())
        .unwrap_or_default()
}

/// Runs `script` with bash in `dir`, `pythia` first on `PATH`, killing it
/// after `limit`.
fn run(script: &str, dir: &Path, pythia: &Path, limit: Duration) -> Result<(), String> {
    let bin_dir = pythia.parent().unwrap_or(Path::new("."));
    let path = std::env::var_os("PATH").unwrap_or_default();
    let mut dirs = vec![bin_dir.to_path_buf()];
    dirs.extend(std::env::split_paths(&path));
    let path = std::env::join_paths(dirs).map_err(|e| e.to_string())?;
    let mut child = Command::new("bash")
        .args(["-euo", "pipefail", "-c", script])
        .current_dir(dir)
        .env("PATH", path)
        .stdin(Stdio::null())
        .spawn()
        .map_err(|e| format!("bash: {e}"))?;
    let started = Instant::now();
    loop {
        if let Some(status) = child.try_wait().map_err(|e| e.to_string())? {
            return if status.success() {
                Ok(())
            } else {
                Err(format!("exited with {status}"))
            };
        }
        if started.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            return Err(format!("still running after {limit:?}; killed"));
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MARKDOWN: &str = "intro\n\n```sh\npythia lag --brokers b:9092 --group g   # lag\n```\n\n- a list\n  ```sh,no_run\n  kubectl apply -k deploy\n  ```\n\n```rust,no_run\nfn main() {}\n```\n";

    #[test]
    fn blocks_are_found_with_their_language_flags_and_place() {
        let found = blocks("doc.md", MARKDOWN);
        assert_eq!(found.len(), 3);
        assert_eq!(found[0].place, "doc.md:3");
        assert_eq!((found[0].lang.as_str(), found[0].no_run), ("sh", false));
        assert_eq!(
            found[0].text,
            "pythia lag --brokers b:9092 --group g   # lag"
        );
        assert_eq!((found[1].lang.as_str(), found[1].no_run), ("sh", true));
        assert_eq!(found[1].text.trim(), "kubectl apply -k deploy");
        assert_eq!((found[2].lang.as_str(), found[2].no_run), ("rust", true));
    }

    #[test]
    fn an_unclosed_block_is_not_a_block() {
        assert!(blocks("doc.md", "```sh\necho never closed\n").is_empty());
    }

    #[test]
    fn pythia_calls_join_continuations_and_skip_comments_and_env() {
        let script = "# pythia commented --out\nPYTHIA_X=1 pythia loadtest --instances 2 \\\n    --json=true\ncargo run -p x -- broker\nfor i in 1; do pythia bench --rounds 1 & done\necho pythia-not-a-call\npythia dlq replay --topic t.dlq\npythia --help";
        let calls = pythia_calls(script);
        assert_eq!(
            calls,
            vec![
                (
                    "loadtest".to_owned(),
                    vec!["--instances".to_owned(), "--json".to_owned()]
                ),
                ("bench".to_owned(), vec!["--rounds".to_owned()]),
                ("dlq replay".to_owned(), vec!["--topic".to_owned()]),
                (String::new(), vec![]),
            ]
        );
    }

    #[test]
    fn a_script_that_fails_or_hangs_is_an_error() {
        let dir = std::env::temp_dir();
        let sh = Path::new("/bin/sh");
        assert!(run("true", &dir, sh, Duration::from_secs(10)).is_ok());
        assert!(run("exit 3", &dir, sh, Duration::from_secs(10)).is_err());
        let hung = run("sleep 30", &dir, sh, Duration::from_millis(300));
        assert!(hung.is_err_and(|e| e.contains("killed")));
    }

    #[test]
    fn the_readme_project_points_at_the_checkout() {
        let deps =
            "[dependencies]\npythia-kafka = { git = \"https://github.com/pythia-rs/pythia\" }\n";
        let manifest = project_manifest(deps, Path::new("/src/pythia")).unwrap();
        assert!(manifest.contains("pythia-kafka = { path = \"/src/pythia/pythia-kafka\" }"));
        assert!(manifest.contains("[workspace]"), "{manifest}");
        assert!(project_manifest("[dependencies]\nx = \"1\"", Path::new("/")).is_err());
    }

    #[test]
    fn bash_n_refuses_a_broken_script() {
        assert!(syntax("echo ok").is_ok());
        assert!(syntax("if then fi (").is_err());
    }
}
