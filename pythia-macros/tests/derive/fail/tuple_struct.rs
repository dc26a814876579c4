use pythia_core::Worker;

#[derive(Worker)]
#[pythia(topic = "orders")]
struct Billing(u64);

fn main() {}
