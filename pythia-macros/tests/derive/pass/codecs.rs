//! Every way to name a codec: the built-ins by name, the default, a pair, and a
//! user-defined type.

use bytes::Bytes;
use pythia_core::codec::{Decode, DecodeError, Encode, EncodeError, Json, Raw, Utf8};
use pythia_core::{Context, Message, Outputs, Process, ProcessError, Worker};

macro_rules! echo {
    ($ty:ty, $payload:ty) => {
        impl Process for $ty {
            type Input = $payload;
            type Output = $payload;
            async fn process(
                &self,
                msg: Message<$payload>,
                _: &Context,
            ) -> Result<Outputs<$payload>, ProcessError> {
                Ok(Outputs::one(msg.into_payload()))
            }
        }
    };
}

#[derive(Worker)]
#[pythia(topic = "a", codec = "json")]
struct ExplicitJson;
echo!(ExplicitJson, serde_json::Value);

#[derive(Worker)]
#[pythia(topic = "a")]
struct DefaultJson;
echo!(DefaultJson, serde_json::Value);

#[derive(Worker)]
#[pythia(topic = "a", codec = "raw")]
struct RawBytes;
echo!(RawBytes, Vec<u8>);

#[derive(Worker)]
#[pythia(topic = "a", codec = "utf8")]
struct Text;
echo!(Text, String);

#[derive(Worker)]
#[pythia(topic = "a", codec = (Raw, Utf8))]
struct BytesToText;
impl Process for BytesToText {
    type Input = Bytes;
    type Output = String;
    async fn process(
        &self,
        msg: Message<Bytes>,
        _: &Context,
    ) -> Result<Outputs<String>, ProcessError> {
        Ok(Outputs::one(
            String::from_utf8_lossy(msg.payload()).into_owned(),
        ))
    }
}

/// A user-defined codec: decimal numbers as text.
struct Decimal;

impl Decode<u64> for Decimal {
    fn decode(payload: Option<&Bytes>) -> Result<u64, DecodeError> {
        let text = std::str::from_utf8(payload.ok_or(DecodeError::Null)?)?;
        Ok(text.parse().unwrap_or_default())
    }
}

impl Encode<u64> for Decimal {
    fn encode(value: &u64) -> Result<Bytes, EncodeError> {
        Ok(value.to_string().into())
    }
}

#[derive(Worker)]
#[pythia(topic = "a", codec = Decimal)]
struct Counter;
echo!(Counter, u64);

/// Compiles only if `W`'s codec is `C`.
fn codec_is<W: Worker<Codec = C>, C>() {}

fn main() {
    codec_is::<ExplicitJson, Json>();
    codec_is::<DefaultJson, Json>();
    codec_is::<RawBytes, Raw>();
    codec_is::<Text, Utf8>();
    codec_is::<BytesToText, (Raw, Utf8)>();
    codec_is::<Counter, Decimal>();

    let n = <<Counter as Worker>::Codec as Decode<u64>>::decode(Some(&Bytes::from_static(b"42")))
        .unwrap();
    assert_eq!(n, 42);
    let out = <<Counter as Worker>::Codec as Encode<u64>>::encode(&n).unwrap();
    assert_eq!(&out[..], b"42");

    assert_eq!(BytesToText::SPEC.name, "bytes-to-text");
    assert_eq!(ExplicitJson::SPEC.name, "explicit-json");
}
