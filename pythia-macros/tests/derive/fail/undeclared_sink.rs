use pythia_core::{Context, Message, Output, Outputs, Process, ProcessError, Worker};

#[derive(Worker)]
#[pythia(topic = "orders", sinks(billing = "billing.invoices"))]
struct Billing;

impl Process for Billing {
    type Input = String;
    type Output = String;

    async fn process(
        &self,
        msg: Message<String>,
        _: &Context,
    ) -> Result<Outputs<String>, ProcessError> {
        Ok(Output::new(msg.into_payload()).to(Self::NOPE).into())
    }
}

fn main() {}
