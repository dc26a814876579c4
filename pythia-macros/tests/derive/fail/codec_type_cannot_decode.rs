use pythia_core::codec::{Json, Raw};
use pythia_core::{Context, Message, Outputs, Process, ProcessError, Worker};

#[derive(Worker)]
#[pythia(topic = "blobs", codec = (Raw, Json))]
struct Archiver;

impl Process for Archiver {
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
