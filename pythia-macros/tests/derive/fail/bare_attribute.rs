use pythia_core::Worker;

#[derive(Worker)]
#[pythia]
struct Billing;

fn main() {}
