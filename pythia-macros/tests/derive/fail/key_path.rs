use pythia_core::Worker;

#[derive(Worker)]
#[pythia(topic = "orders", kafka::group = "billing")]
struct Billing;

fn main() {}
