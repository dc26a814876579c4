use pythia_core::{Context, Message, Outputs, Process, ProcessError, Worker};

#[derive(Worker)]
#[pythia(topic = "amounts", codec = "utf8")]
struct Billing;

impl Process for Billing {
    type Input = u64;
    type Output = String;

    async fn process(
        &self,
        msg: Message<u64>,
        _: &Context,
    ) -> Result<Outputs<String>, ProcessError> {
        Ok(Outputs::one(msg.payload().to_string()))
    }
}

fn main() {}
