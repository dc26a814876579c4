use pythia_core::Worker;

#[derive(Worker)]
#[pythia(
    topic = "orders",
    output = "invoices",
    sinks(billing = "billing.invoices"),
    default_sink = "billing"
)]
struct Billing;

fn main() {}
