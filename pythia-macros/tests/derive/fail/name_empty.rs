use pythia_core::Worker;

#[derive(Worker)]
#[pythia(topic = "orders", name = " ")]
struct Billing;

fn main() {}
