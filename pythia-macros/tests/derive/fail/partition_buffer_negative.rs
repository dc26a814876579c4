use pythia_core::Worker;

#[derive(Worker)]
#[pythia(topic = "orders", partition_buffer = -1)]
struct Billing;

fn main() {}
