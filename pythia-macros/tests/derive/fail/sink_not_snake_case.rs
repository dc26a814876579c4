use pythia_core::Worker;

#[derive(Worker)]
#[pythia(topic = "orders", sinks(auditLog = "audit.log"))]
struct Billing;

fn main() {}
