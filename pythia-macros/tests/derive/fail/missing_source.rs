use pythia_core::Worker;

#[derive(Worker)]
#[pythia(group = "billing")]
struct Billing;

fn main() {}
