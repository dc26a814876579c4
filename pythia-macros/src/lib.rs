//! Procedural macros of Pythia.
//!
//! `#[derive(Worker)]` lands here; until then workers implement
//! `pythia_core::Worker` by hand.
