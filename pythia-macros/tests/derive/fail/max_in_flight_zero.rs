use pythia_core::Worker;

#[derive(Worker)]
#[pythia(topic = "orders", max_in_flight = 0)]
struct Billing;

fn main() {}
