use pythia_core::Worker;

#[derive(Worker)]
#[pythia(topic = "orders", crate = "pythia core")]
struct Billing;

fn main() {}
