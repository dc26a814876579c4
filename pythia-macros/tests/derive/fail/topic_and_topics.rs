use pythia_core::Worker;

#[derive(Worker)]
#[pythia(topic = "orders", topics = ["orders", "refunds"])]
struct Billing;

fn main() {}
