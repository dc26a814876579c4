use pythia_core::Worker;

#[derive(Worker)]
#[pythia(topic = "orders", max_in_flight = "64")]
struct Billing;

fn main() {}
