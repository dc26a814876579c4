//! `docs/configuration.md` against the code: its TOML blocks load through the
//! real loader, and every key the code accepts is on the page.

use std::collections::BTreeSet;
use std::path::PathBuf;

use pythia_kafka::Config;
use pythia_kafka::core::ConfigLoader;

/// The sections of the configuration and their keys are read from the code:
/// an unknown key's error lists the allowed ones.
const SECTIONS: &[&str] = &[
    "worker",
    "worker.retry",
    "worker.dead_letter",
    "kafka",
    "kafka.security",
    "metrics",
    "health",
    "log",
    "otel",
];

fn page() -> String {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../docs/configuration.md");
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The ```toml blocks of a Markdown page.
fn toml_blocks(markdown: &str) -> Vec<String> {
    let mut blocks = Vec::new();
    let mut current: Option<Vec<&str>> = None;
    for line in markdown.lines() {
        match current.as_mut() {
            None if line.trim() == "```toml" => current = Some(Vec::new()),
            None => {}
            Some(lines) if line.trim() == "```" => {
                blocks.push(lines.join("\n"));
                current = None;
            }
            Some(lines) => lines.push(line),
        }
    }
    blocks
}

fn load(toml: &str) -> Result<Config, String> {
    let dir = std::env::temp_dir().join(format!("pythia-config-reference-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join(format!("{}.toml", toml.len()));
    std::fs::write(&file, toml).unwrap();
    let loaded = ConfigLoader::new()
        .file(&file)
        .env(std::iter::empty::<(String, String)>())
        .load::<Config>()
        .map_err(|e| e.to_string());
    let _ = std::fs::remove_file(&file);
    loaded
}

/// The keys the code accepts in `section`, from the error of an unknown one.
fn keys_of(section: &str) -> BTreeSet<String> {
    let error = load(&format!("[{section}]\nzz_not_a_key = 1\n"))
        .err()
        .unwrap_or_else(|| panic!("[{section}] accepted an unknown key"));
    // "unknown configuration key `s.zz_not_a_key`: allowed keys are `a`, `b`"
    // (or "allowed: `a` or `b`"): the names after the unknown one.
    let allowed = error
        .split_once("zz_not_a_key`")
        .filter(|(_, rest)| rest.contains("allowed"))
        .unwrap_or_else(|| panic!("[{section}]: no list of allowed keys in: {error}"))
        .1;
    allowed
        .split('`')
        .skip(1)
        .step_by(2)
        .map(str::to_owned)
        .collect()
}

/// The keys a TOML table sets directly (not its sub-tables).
fn documented(config: &toml_like::Table, section: &str) -> BTreeSet<String> {
    config.keys_in(section)
}

#[test]
fn every_block_of_the_page_loads_through_the_real_loader() {
    let blocks = toml_blocks(&page());
    assert!(blocks.len() >= 8, "found only {} TOML blocks", blocks.len());
    for block in &blocks {
        if let Err(e) = load(block) {
            panic!("this block of docs/configuration.md does not load: {e}\n{block}");
        }
    }
    let whole = blocks.join("\n");
    let config = load(&whole).expect("the blocks together load");
    assert_eq!(
        config.kafka.brokers.as_deref(),
        Some("kafka-1:9092,kafka-2:9092")
    );
    assert_eq!(config.worker.retry.max_attempts, 3);
}

#[test]
fn every_key_the_code_accepts_is_on_the_page() {
    let table = toml_like::Table::parse(&toml_blocks(&page()).join("\n"));
    let mut missing = Vec::new();
    for section in SECTIONS {
        let accepted = keys_of(section);
        assert!(!accepted.is_empty(), "[{section}] has no keys?");
        let on_page = documented(&table, section);
        for key in accepted {
            let sub_table = SECTIONS.contains(&format!("{section}.{key}").as_str())
                || matches!((*section, key.as_str()), ("kafka", "consumer" | "producer"));
            if !sub_table && !on_page.contains(&key) {
                missing.push(format!("{section}.{key}"));
            }
        }
        for key in documented(&table, section) {
            assert!(
                keys_of(section).contains(&key),
                "docs/configuration.md documents {section}.{key}, which the code does not accept"
            );
        }
    }
    assert!(
        missing.is_empty(),
        "keys missing from docs/configuration.md: {missing:?}"
    );
}

/// Just enough of TOML to list the keys each `[table]` sets: the page's
/// blocks are simple (`key = value` lines under `[section]` headers).
mod toml_like {
    use std::collections::{BTreeMap, BTreeSet};

    pub(crate) struct Table(BTreeMap<String, BTreeSet<String>>);

    impl Table {
        pub(crate) fn parse(text: &str) -> Self {
            let mut tables: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
            let mut current = String::new();
            for line in text.lines() {
                let line = line.split(" #").next().unwrap_or_default().trim();
                if line.is_empty() || line.starts_with('#') {
                    continue;
                }
                if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
                    current = name.trim().to_owned();
                    continue;
                }
                if let Some((key, _)) = line.split_once('=') {
                    let key = key.trim().trim_matches('"').to_owned();
                    tables.entry(current.clone()).or_default().insert(key);
                }
            }
            Self(tables)
        }

        pub(crate) fn keys_in(&self, section: &str) -> BTreeSet<String> {
            self.0.get(section).cloned().unwrap_or_default()
        }
    }

    #[test]
    fn keys_are_listed_per_table_without_comments() {
        let table = Table::parse("[a]\nx = 1  # note\n# y = 2\n[a.b]\n\"z.w\" = 3\n");
        assert_eq!(table.keys_in("a").into_iter().collect::<Vec<_>>(), ["x"]);
        assert_eq!(
            table.keys_in("a.b").into_iter().collect::<Vec<_>>(),
            ["z.w"]
        );
    }
}
