//! A struct with named fields and every non-sink key, spread over several
//! `#[pythia]` attributes: they merge into one declaration.

use std::future::Future;
use std::task::{Poll, Waker};

use pythia_core::codec::{Decode, Encode, Json, Utf8};
use pythia_core::{
    Context, Message, Outputs, PartitionId, Process, ProcessError, Worker, WorkerSpec,
};

/// Text lines in, JSON out.
#[derive(Worker)]
#[pythia(topics = ["clicks", "views"], name = "tracker", group = "tracking-v2")]
#[pythia(output = "events.parsed", codec = (Utf8, Json))]
#[pythia(max_in_flight = 64, partition_buffer = 100)]
struct Tracker {
    prefix: String,
}

impl Process for Tracker {
    type Input = String;
    type Output = serde_json::Value;

    async fn process(
        &self,
        msg: Message<String>,
        _: &Context,
    ) -> Result<Outputs<serde_json::Value>, ProcessError> {
        let line = format!("{}{}", self.prefix, msg.payload());
        Ok(Outputs::one(serde_json::json!({ "line": line })))
    }
}

/// Compiles only if `W`'s codec is `C`.
fn codec_is<W: Worker<Codec = C>, C>() {}

/// Runs a future that completes without waiting.
fn now<F: Future>(fut: F) -> F::Output {
    let mut fut = std::pin::pin!(fut);
    match fut
        .as_mut()
        .poll(&mut std::task::Context::from_waker(Waker::noop()))
    {
        Poll::Ready(out) => out,
        Poll::Pending => panic!("the future is not ready"),
    }
}

fn main() {
    let spec = Tracker::SPEC;
    assert_eq!(spec.name, "tracker");
    assert_eq!(spec.topics, ["clicks", "views"]);
    assert_eq!(spec.group, Some("tracking-v2"));
    assert_eq!(spec.group_or_name(), "tracking-v2");
    assert_eq!(spec.output, Some("events.parsed"));
    assert!(spec.sinks.is_empty());
    assert_eq!(spec.default_sink, None);
    assert_eq!(spec.max_in_flight, Some(64));
    assert_eq!(spec.partition_buffer, Some(100));
    assert_eq!(
        spec,
        WorkerSpec::new("tracker")
            .with_topics(&["clicks", "views"])
            .with_group("tracking-v2")
            .with_output("events.parsed")
            .with_max_in_flight(64)
            .with_partition_buffer(100)
    );

    // The pair decodes text and encodes JSON.
    codec_is::<Tracker, (Utf8, Json)>();
    type C = <Tracker as Worker>::Codec;
    let line = <C as Decode<String>>::decode(Some(&bytes::Bytes::from_static(b"home"))).unwrap();
    let worker = Tracker {
        prefix: "/".to_owned(),
    };
    let msg = Message::new(PartitionId::new("clicks", 3), 0, line);
    assert_eq!(
        now(worker.process(msg, &Context::detached("tracker")))
            .unwrap()
            .len(),
        1
    );
    let encoded =
        <C as Encode<serde_json::Value>>::encode(&serde_json::json!({ "line": "/home" })).unwrap();
    assert_eq!(&encoded[..], br#"{"line":"/home"}"#);
}
