use pythia_core::Worker;

#[derive(Worker)]
#[pythia(topic = "orders", sinks(billing = "billing/invoices"))]
struct Billing;

fn main() {}
