//! Compile-time behaviour of `#[derive(Worker)]`: what it accepts (and the
//! `WorkerSpec` and sink constants it generates), and the error every mistake
//! gets, checked against `.stderr` snapshots.
//!
//! Regenerate the snapshots with `TRYBUILD=overwrite cargo test -p pythia-macros
//! --test derive_ui`, then read the diff: each message must point at the
//! offending token and say what to write.

#[test]
fn derive_ui() {
    let t = trybuild::TestCases::new();
    t.pass("tests/derive/pass/*.rs");
    t.compile_fail("tests/derive/fail/*.rs");
}
