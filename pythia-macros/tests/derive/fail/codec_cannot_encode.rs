use pythia_core::{Context, Message, Outputs, Process, ProcessError, Worker};

/// Not `serde::Serialize`.
struct Invoice;

#[derive(Worker)]
#[pythia(topic = "orders")]
struct Billing;

impl Process for Billing {
    type Input = String;
    type Output = Invoice;

    async fn process(
        &self,
        _: Message<String>,
        _: &Context,
    ) -> Result<Outputs<Invoice>, ProcessError> {
        Ok(Outputs::one(Invoice))
    }
}

fn main() {}
