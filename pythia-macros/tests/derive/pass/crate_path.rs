//! `crate = "..."`: the generated code names the runtime through the given
//! path instead of `::pythia_core`. `shim` re-exports the runtime but has its
//! own `codec::Json`, so the worker's codec shows which path was used.

use std::any::TypeId;

mod reexport {
    pub use pythia_core as core;
}

/// A re-export of the runtime with its own default codec.
mod shim {
    pub use pythia_core::{Worker, WorkerSpec};

    pub mod codec {
        use bytes::Bytes;
        pub use pythia_core::codec::Utf8;
        use pythia_core::codec::{Decode, DecodeError, Encode, EncodeError};

        /// Not `pythia_core::codec::Json`.
        pub struct Json;

        impl Decode<String> for Json {
            fn decode(_: Option<&Bytes>) -> Result<String, DecodeError> {
                Ok("shim".to_owned())
            }
        }

        impl Encode<String> for Json {
            fn encode(_: &String) -> Result<Bytes, EncodeError> {
                Ok(Bytes::from_static(b"shim"))
            }
        }
    }
}

use pythia_core::{Context, Message, Outputs, Process, ProcessError};

#[derive(reexport::core::Worker)]
#[pythia(
    crate = "crate::reexport::core",
    topic = "orders",
    sinks(audit = "audit.log")
)]
struct ViaReexport;

#[derive(pythia_core::Worker)]
#[pythia(topic = "orders")]
#[pythia(crate = "shim")]
struct ViaShim;

#[derive(pythia_core::Worker)]
#[pythia(topic = "orders", crate = "shim", codec = "utf8")]
struct ViaShimText;

macro_rules! echo {
    ($ty:ty) => {
        impl Process for $ty {
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
    };
}
echo!(ViaReexport);
echo!(ViaShim);
echo!(ViaShimText);

fn main() {
    use pythia_core::Worker;

    assert_eq!(ViaReexport::SPEC.name, "via-reexport");
    assert_eq!(ViaReexport::SPEC.sink_topic("audit"), Some("audit.log"));
    assert_eq!(ViaReexport::AUDIT, "audit");
    assert_eq!(
        TypeId::of::<<ViaReexport as Worker>::Codec>(),
        TypeId::of::<pythia_core::codec::Json>()
    );

    assert_eq!(ViaShim::SPEC.name, "via-shim");
    assert_eq!(
        TypeId::of::<<ViaShim as Worker>::Codec>(),
        TypeId::of::<shim::codec::Json>()
    );
    assert_eq!(ViaShimText::SPEC.name, "via-shim-text");
    assert_eq!(
        TypeId::of::<<ViaShimText as Worker>::Codec>(),
        TypeId::of::<pythia_core::codec::Utf8>()
    );
}
