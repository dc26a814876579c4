//! No import cycle between the modules of `pythia-core`.
//!
//! Each top-level module (`src/x.rs` or `src/x/`) is a node; a path
//! `crate::y` in its code (not in comments or its `#[cfg(test)] mod tests`)
//! is an edge to `y`. The graph must have no cycle: leaf types live in leaf
//! modules, and the message path's stages only call forward.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

type Graph = BTreeMap<String, BTreeSet<String>>;

fn src() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

/// The source files of each top-level module.
fn modules(src: &Path) -> BTreeMap<String, Vec<PathBuf>> {
    let mut modules: BTreeMap<String, Vec<PathBuf>> = BTreeMap::new();
    for entry in std::fs::read_dir(src).expect("src") {
        let path = entry.expect("entry").path();
        let name = path.file_stem().unwrap().to_string_lossy().into_owned();
        if name == "lib" {
            continue;
        }
        if path.is_dir() {
            modules.entry(name).or_default().extend(rust_files(&path));
        } else if path.extension().is_some_and(|e| e == "rs") {
            modules.entry(name).or_default().push(path);
        }
    }
    modules
}

fn rust_files(dir: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).expect("dir") {
        let path = entry.expect("entry").path();
        if path.is_dir() {
            files.extend(rust_files(&path));
        } else if path.extension().is_some_and(|e| e == "rs") {
            files.push(path);
        }
    }
    files
}

/// The modules a file's code names as `crate::<module>`, leaving out
/// comments and everything from `#[cfg(test)]` on (tests sit at the end).
fn uses(code: &str) -> BTreeSet<String> {
    let mut found = BTreeSet::new();
    for line in code.lines() {
        let trimmed = line.trim_start();
        if trimmed.starts_with("#[cfg(test)]") {
            break;
        }
        if trimmed.starts_with("//") {
            continue;
        }
        let code = line.split("//").next().unwrap_or_default();
        let mut rest = code;
        while let Some(at) = rest.find("crate::") {
            let before = rest[..at].chars().last();
            rest = &rest[at + "crate::".len()..];
            if before.is_some_and(|c| c.is_alphanumeric() || c == '_') {
                continue; // `pythia_core::crate::` or `$crate::`-like
            }
            let name: String = rest
                .chars()
                .take_while(|c| c.is_alphanumeric() || *c == '_')
                .collect();
            if !name.is_empty() {
                found.insert(name);
            }
            // `use crate::{a, b::c}`: every name at the top of the braces.
            if rest.starts_with('{') {
                found.extend(braced(rest));
            }
        }
    }
    found
}

/// The first path segment of each item of `{a, b::c, d::{e}}`.
fn braced(text: &str) -> Vec<String> {
    let mut depth = 0;
    let mut names = Vec::new();
    let mut current = String::new();
    let mut at_start = true;
    for c in text.chars() {
        match c {
            '{' => {
                depth += 1;
                at_start = depth == 1;
                if !current.is_empty() {
                    names.push(std::mem::take(&mut current));
                }
            }
            '}' => {
                depth -= 1;
                if depth == 0 {
                    break;
                }
            }
            ',' if depth == 1 => {
                if !current.is_empty() {
                    names.push(std::mem::take(&mut current));
                }
                at_start = true;
            }
            c if depth == 1 && at_start && (c.is_alphanumeric() || c == '_') => current.push(c),
            _ => {
                if !current.is_empty() {
                    names.push(std::mem::take(&mut current));
                    at_start = false;
                }
            }
        }
    }
    if !current.is_empty() {
        names.push(current);
    }
    names
}

fn graph(src: &Path) -> Graph {
    let modules = modules(src);
    let mut graph = Graph::new();
    for (name, files) in &modules {
        let edges = graph.entry(name.clone()).or_default();
        for file in files {
            let code = std::fs::read_to_string(file).expect("read");
            for used in uses(&code) {
                if used != *name && modules.contains_key(&used) {
                    edges.insert(used);
                }
            }
        }
    }
    graph
}

/// The strongly connected components with more than one module (Tarjan).
fn cycles(graph: &Graph) -> Vec<Vec<String>> {
    struct State<'a> {
        graph: &'a Graph,
        index: BTreeMap<&'a str, usize>,
        low: BTreeMap<&'a str, usize>,
        stack: Vec<&'a str>,
        on_stack: BTreeSet<&'a str>,
        found: Vec<Vec<String>>,
    }
    fn visit<'a>(s: &mut State<'a>, node: &'a str) {
        let i = s.index.len();
        s.index.insert(node, i);
        s.low.insert(node, i);
        s.stack.push(node);
        s.on_stack.insert(node);
        for next in s.graph.get(node).into_iter().flatten() {
            let next = next.as_str();
            if !s.index.contains_key(next) {
                visit(s, next);
                let low = s.low[node].min(s.low[next]);
                s.low.insert(node, low);
            } else if s.on_stack.contains(next) {
                let low = s.low[node].min(s.index[next]);
                s.low.insert(node, low);
            }
        }
        if s.low[node] == s.index[node] {
            let mut component = Vec::new();
            while let Some(top) = s.stack.pop() {
                s.on_stack.remove(top);
                component.push(top.to_owned());
                if top == node {
                    break;
                }
            }
            if component.len() > 1 {
                component.sort();
                s.found.push(component);
            }
        }
    }
    let mut state = State {
        graph,
        index: BTreeMap::new(),
        low: BTreeMap::new(),
        stack: Vec::new(),
        on_stack: BTreeSet::new(),
        found: Vec::new(),
    };
    for node in graph.keys() {
        if !state.index.contains_key(node.as_str()) {
            visit(&mut state, node);
        }
    }
    state.found
}

#[test]
fn pythia_core_has_no_import_cycle() {
    let graph = graph(&src());
    assert!(graph.len() > 10, "found only {} modules", graph.len());
    let cycles = cycles(&graph);
    let shown: Vec<String> = cycles
        .iter()
        .map(|c| {
            let edges: Vec<String> = c
                .iter()
                .flat_map(|m| {
                    graph[m]
                        .iter()
                        .filter(|n| c.contains(n))
                        .map(move |n| format!("{m} → {n}"))
                })
                .collect();
            format!("{{{}}} through {}", c.join(", "), edges.join(", "))
        })
        .collect();
    assert!(
        cycles.is_empty(),
        "import cycles in pythia-core: {}",
        shown.join("; ")
    );
}

#[test]
fn uses_are_read_from_code_not_comments_or_tests() {
    let code = "use crate::{a, b::{c, d}, e::f};\n// crate::comment\nfn x() { crate::g::h(); }\n#[cfg(test)]\nmod tests { use crate::t; }\n";
    let found: Vec<String> = uses(code).into_iter().collect();
    assert_eq!(found, ["a", "b", "e", "g"]);
}

#[test]
fn a_cycle_is_found_and_a_chain_is_not() {
    let edges = |pairs: &[(&str, &str)]| {
        let mut graph = Graph::new();
        for (from, to) in pairs {
            graph
                .entry((*from).into())
                .or_default()
                .insert((*to).into());
            graph.entry((*to).into()).or_default();
        }
        graph
    };
    assert!(cycles(&edges(&[("a", "b"), ("b", "c")])).is_empty());
    assert_eq!(
        cycles(&edges(&[("a", "b"), ("b", "c"), ("c", "a"), ("c", "d")])),
        [vec!["a".to_owned(), "b".into(), "c".into()]]
    );
}
