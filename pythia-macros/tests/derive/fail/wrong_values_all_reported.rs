use pythia_core::Worker;

#[derive(Worker)]
#[pythia(topics = "orders", group = 5, max_in_flight = "64")]
struct Billing;

fn main() {}
