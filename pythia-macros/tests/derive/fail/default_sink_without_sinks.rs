use pythia_core::Worker;

#[derive(Worker)]
#[pythia(topic = "orders", default_sink = "billing")]
struct Billing;

fn main() {}
