use pythia_core::Worker;

#[derive(Worker)]
#[pythia(
    topic = "orders",
    sinks(billing = "billing.invoices", audit = "audit.log"),
    default_sink = "biling"
)]
struct Billing;

fn main() {}
