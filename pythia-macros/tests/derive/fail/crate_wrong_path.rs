use pythia_core::{Context, Message, Outputs, Process, ProcessError, Worker};

#[derive(Worker)]
#[pythia(topic = "orders", crate = "crate::runtime")]
struct Billing;

impl Process for Billing {
    type Input = String;
    type Output = String;

    async fn process(
        &self,
        msg: Message<String>,
        _: &Context,
    ) -> Result<Outputs<String>, ProcessError> {
        Ok(Outputs::one(msg.into_payload()))
    }
}

fn main() {}
