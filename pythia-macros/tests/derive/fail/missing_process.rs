use pythia_core::Worker;

#[derive(Worker)]
#[pythia(topic = "orders")]
struct Billing;

fn main() {}
