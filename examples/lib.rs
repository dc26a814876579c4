//! Runnable Pythia workers: see the files beside this one, and run them with
//! `cargo run --release --example <name>`.
