use pythia_core::Worker;

#[derive(Worker)]
#[pythia(topic = "orders", group = 5)]
struct Billing;

fn main() {}
