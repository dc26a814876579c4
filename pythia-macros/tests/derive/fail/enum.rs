use pythia_core::Worker;

#[derive(Worker)]
#[pythia(topic = "orders")]
enum Billing {
    Invoice,
}

fn main() {}
