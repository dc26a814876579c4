use pythia_core::Worker;

#[derive(Worker)]
#[pythia(topic = "orders", sinks = "billing.invoices")]
struct Billing;

fn main() {}
