use pythia_core::Worker;

#[derive(Worker)]
#[pythia(topics = [])]
struct Billing;

fn main() {}
