//! A mistake in the attribute is the only error: the worker's impl and its
//! sink constants still exist, so its uses report nothing more.

use pythia_core::{Context, Message, Output, Outputs, Process, ProcessError, Worker};

#[derive(Worker)]
#[pythia(topic = "new orders", sinks(billing = "billing.invoices"))]
struct Billing;

impl Process for Billing {
    type Input = String;
    type Output = String;

    async fn process(
        &self,
        msg: Message<String>,
        _: &Context,
    ) -> Result<Outputs<String>, ProcessError> {
        Ok(Output::new(msg.into_payload()).to(Self::BILLING).into())
    }
}

fn run<W: Worker>(_: W) {}

fn main() {
    run(Billing);
}
