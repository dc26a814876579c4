use pythia_core::Worker;

#[derive(Worker)]
#[pythia(topic = "orders", partitions = 4)]
struct Billing;

fn main() {}
