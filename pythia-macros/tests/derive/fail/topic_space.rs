use pythia_core::Worker;

#[derive(Worker)]
#[pythia(topic = "new orders")]
struct Billing;

fn main() {}
