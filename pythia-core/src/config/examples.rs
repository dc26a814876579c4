//! Test support for configuration: an application's config to load, and the
//! TOML examples in the docs, loaded by the real loader so that an example
//! copied as it is works.

use serde::Deserialize;

use super::{ConfigError, ConfigLoader, WorkerConfig};

/// An application's config: the runtime's `[worker]` beside a `[source]`
/// of its own.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct App {
    #[serde(default)]
    pub(crate) worker: WorkerConfig,
    #[serde(default)]
    pub(crate) source: Source,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct Source {
    pub(crate) brokers: Option<String>,
    pub(crate) properties: std::collections::BTreeMap<String, String>,
}

/// A loader that reads no file and an empty environment.
pub(crate) fn loader() -> ConfigLoader {
    ConfigLoader::new().no_file().env::<&str, &str>([])
}

/// The ```` ```toml ```` block of the doc comment of `pub struct {item}` in
/// `source`, with the `/// ` taken off.
pub(crate) fn toml_example(source: &str, item: &str) -> String {
    let end = source
        .find(&format!("\npub struct {item} "))
        .unwrap_or_else(|| panic!("no `pub struct {item}` in the source"));
    let start = source[..end]
        .rfind("/// ```toml\n")
        .unwrap_or_else(|| panic!("no TOML example in the docs of {item}"));
    let lines: Vec<&str> = source[start..end]
        .lines()
        .skip(1)
        .map(|line| line.trim_start())
        .take_while(|line| *line != "/// ```")
        .map(|line| line.strip_prefix("///").unwrap_or(line))
        .map(|line| line.strip_prefix(' ').unwrap_or(line))
        .collect();
    assert!(
        source[start..end].contains("\n/// ```\n"),
        "the TOML example of {item} is not closed before the item"
    );
    lines.join("\n") + "\n"
}

/// What a `pythia.toml` holding just `toml` gives `[worker]`, validated.
pub(crate) fn load_worker(toml: &str, name: &str) -> Result<WorkerConfig, ConfigError> {
    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    struct File {
        #[serde(default)]
        worker: WorkerConfig,
    }
    let dir = std::env::temp_dir().join(format!("pythia-example-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let path = dir.join(format!("{name}.toml"));
    std::fs::write(&path, toml).expect("write the example");
    let file: File = ConfigLoader::new()
        .file(&path)
        .env::<&str, &str>([])
        .load()?;
    file.worker.validate()?;
    Ok(file.worker)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_after_a_table_line_is_caught_by_the_example_check() {
        // What the WorkerConfig example used to do: `ordering` under [worker.retry].
        let err = load_worker(
            "[worker]\nname = \"billing\"\n[worker.retry]\nmax_attempts = 3\nordering = \"key\"\n",
            "misplaced",
        )
        .unwrap_err();
        assert_eq!(err.key(), "worker.retry.ordering", "{err}");
    }
}
