use pythia_core::Worker;

#[derive(Worker)]
#[pythia(topic = "orders", codec = "avro")]
struct Billing;

fn main() {}
