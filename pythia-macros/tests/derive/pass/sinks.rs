//! Named sinks, `default_sink` and the raw codec. Each sink becomes a constant
//! with the visibility of the struct, usable from other modules.

use bytes::Bytes;
use pythia_core::codec::Raw;
use pythia_core::{Output, Worker};

mod workers {
    use bytes::Bytes;
    use pythia_core::{Context, Message, Output, Outputs, Process, ProcessError, Worker};

    /// Raw bytes; outputs that name no sink go to `archive`.
    #[derive(Worker)]
    #[pythia(
        topic = "blobs",
        codec = "raw",
        sinks(
            archive = "blobs.archive",
            large = "blobs.large",
            dead_letters_v2 = "blobs.dlq"
        ),
        default_sink = "archive"
    )]
    pub struct Archiver;

    impl Archiver {
        pub fn route(&self, blob: Bytes) -> Output<Bytes> {
            let large = blob.len() > 4;
            let out = Output::new(blob);
            if large { out.to(Self::LARGE) } else { out }
        }
    }

    impl Process for Archiver {
        type Input = Bytes;
        type Output = Bytes;

        async fn process(
            &self,
            msg: Message<Bytes>,
            _: &Context,
        ) -> Result<Outputs<Bytes>, ProcessError> {
            Ok(self.route(msg.into_payload()).into())
        }
    }
}

use workers::Archiver;

/// Compiles only if `W`'s codec is `C`.
fn codec_is<W: Worker<Codec = C>, C>() {}

fn main() {
    let spec = Archiver::SPEC;
    assert_eq!(spec.name, "archiver");
    assert_eq!(spec.group_or_name(), "archiver");
    assert_eq!(spec.topics, ["blobs"]);
    assert_eq!(spec.output, None);
    assert_eq!(
        spec.sinks,
        [
            ("archive", "blobs.archive"),
            ("large", "blobs.large"),
            ("dead_letters_v2", "blobs.dlq")
        ]
    );
    assert_eq!(spec.default_sink, Some("archive"));
    assert_eq!(spec.sink_topic("large"), Some("blobs.large"));
    assert_eq!(spec.sink_topic("nope"), None);

    // One constant per sink, named in SCREAMING_SNAKE_CASE, holding the sink's name.
    let names: [&'static str; 3] = [
        Archiver::ARCHIVE,
        Archiver::LARGE,
        Archiver::DEAD_LETTERS_V2,
    ];
    assert_eq!(names, ["archive", "large", "dead_letters_v2"]);
    assert_eq!(
        Output::new(()).to(Archiver::DEAD_LETTERS_V2).sink_name(),
        Some("dead_letters_v2")
    );

    codec_is::<Archiver, Raw>();
    let small = Archiver.route(Bytes::from_static(b"abc"));
    assert_eq!(small.sink_name(), None);
    let large = Archiver.route(Bytes::from_static(b"abcdef"));
    assert_eq!(large.sink_name(), Some("large"));
}
