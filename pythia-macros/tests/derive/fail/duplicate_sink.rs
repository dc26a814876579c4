use pythia_core::Worker;

#[derive(Worker)]
#[pythia(
    topic = "orders",
    sinks(billing = "billing.invoices", billing = "billing.v2")
)]
struct Billing;

fn main() {}
