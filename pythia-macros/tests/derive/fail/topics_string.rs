use pythia_core::Worker;

#[derive(Worker)]
#[pythia(topics = "orders")]
struct Billing;

fn main() {}
