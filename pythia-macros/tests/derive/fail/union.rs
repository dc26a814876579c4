use pythia_core::Worker;

#[derive(Worker)]
#[pythia(topic = "orders")]
union Billing {
    cents: u64,
}

fn main() {}
