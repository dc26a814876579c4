use pythia_core::Worker;

#[derive(Worker)]
#[pythia(topics = ["orders", "refunds", "orders"])]
struct Billing;

fn main() {}
