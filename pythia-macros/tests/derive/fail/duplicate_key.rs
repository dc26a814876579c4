use pythia_core::Worker;

#[derive(Worker)]
#[pythia(topic = "orders", group = "billing")]
#[pythia(group = "billing-v2")]
struct Billing;

fn main() {}
