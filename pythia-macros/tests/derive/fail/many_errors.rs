use pythia_core::Worker;

#[derive(Worker)]
#[pythia(
    topic = "new orders",
    partitions = 4,
    sinks(Billing = "billing.invoices", audit = "audit log"),
    default_sink = "archive",
    codec = "avro",
    max_in_flight = 0
)]
struct Billing;

fn main() {}
