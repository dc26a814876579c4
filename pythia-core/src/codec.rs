//! Codecs: how payload bytes become the worker's input, and outputs become bytes.
//!
//! A codec is a marker type. [`Json`] uses serde, [`Raw`] passes bytes through and
//! [`Utf8`] checks for text. A pair `(In, Out)` decodes with the first and encodes
//! with the second, e.g. `(Raw, Json)`.

use bytes::Bytes;
use serde::Serialize;
use serde::de::DeserializeOwned;

/// Why a payload could not be decoded.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DecodeError {
    /// The payload is not valid JSON, or not of the expected shape.
    #[error("payload is not valid JSON for the input type: {0}")]
    Json(#[from] serde_json::Error),
    /// The payload is not UTF-8.
    #[error("payload is not valid UTF-8: {0}")]
    Utf8(#[from] std::str::Utf8Error),
    /// The message has no payload (a null value) and the codec needs one.
    #[error("message has no payload (null value)")]
    Null,
}

/// Why an output could not be encoded.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum EncodeError {
    /// Serialization to JSON failed.
    #[error("output could not be encoded as JSON: {0}")]
    Json(#[from] serde_json::Error),
}

/// Decodes a payload into `T`.
#[diagnostic::on_unimplemented(
    message = "the codec `{Self}` cannot decode payloads into `{T}`",
    note = "`Json` decodes types that implement `serde::Deserialize`, `Raw` decodes `Bytes` and `Vec<u8>`, `Utf8` decodes `String`"
)]
pub trait Decode<T> {
    /// Decodes one payload. `None` is a null payload.
    fn decode(payload: Option<&Bytes>) -> Result<T, DecodeError>;
}

/// Encodes `T` into a payload.
#[diagnostic::on_unimplemented(
    message = "the codec `{Self}` cannot encode `{T}`",
    note = "`Json` encodes types that implement `serde::Serialize`, `Raw` encodes `Bytes` and `Vec<u8>`, `Utf8` encodes `String`"
)]
pub trait Encode<T> {
    /// Encodes one value.
    fn encode(value: &T) -> Result<Bytes, EncodeError>;
}

/// JSON via serde.
///
/// ```
/// use pythia_core::codec::{Decode, Encode, Json};
/// #[derive(serde::Serialize, serde::Deserialize, PartialEq, Debug)]
/// struct Order { id: u64 }
/// let bytes = <Json as Encode<Order>>::encode(&Order { id: 7 })?;
/// let back: Order = <Json as Decode<Order>>::decode(Some(&bytes))?;
/// assert_eq!(back, Order { id: 7 });
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone, Copy, Default)]
pub struct Json;

/// Raw bytes, passed through untouched.
#[derive(Debug, Clone, Copy, Default)]
pub struct Raw;

/// UTF-8 text.
#[derive(Debug, Clone, Copy, Default)]
pub struct Utf8;

impl<T: DeserializeOwned> Decode<T> for Json {
    fn decode(payload: Option<&Bytes>) -> Result<T, DecodeError> {
        let payload = payload.ok_or(DecodeError::Null)?;
        Ok(serde_json::from_slice(payload)?)
    }
}

impl<T: Serialize> Encode<T> for Json {
    fn encode(value: &T) -> Result<Bytes, EncodeError> {
        Ok(serde_json::to_vec(value)?.into())
    }
}

impl Decode<Bytes> for Raw {
    fn decode(payload: Option<&Bytes>) -> Result<Bytes, DecodeError> {
        Ok(payload.cloned().unwrap_or_default())
    }
}

impl Decode<Vec<u8>> for Raw {
    fn decode(payload: Option<&Bytes>) -> Result<Vec<u8>, DecodeError> {
        Ok(payload.map(|p| p.to_vec()).unwrap_or_default())
    }
}

impl Decode<String> for Utf8 {
    fn decode(payload: Option<&Bytes>) -> Result<String, DecodeError> {
        let payload = payload.ok_or(DecodeError::Null)?;
        Ok(std::str::from_utf8(payload)?.to_owned())
    }
}

impl Encode<Bytes> for Raw {
    fn encode(value: &Bytes) -> Result<Bytes, EncodeError> {
        Ok(value.clone())
    }
}

impl Encode<Vec<u8>> for Raw {
    fn encode(value: &Vec<u8>) -> Result<Bytes, EncodeError> {
        Ok(Bytes::copy_from_slice(value))
    }
}

impl Encode<String> for Utf8 {
    fn encode(value: &String) -> Result<Bytes, EncodeError> {
        Ok(Bytes::copy_from_slice(value.as_bytes()))
    }
}

/// Workers that produce nothing use `()` as their output type.
impl Encode<()> for Raw {
    fn encode(_: &()) -> Result<Bytes, EncodeError> {
        Ok(Bytes::new())
    }
}

impl Encode<()> for Utf8 {
    fn encode(_: &()) -> Result<Bytes, EncodeError> {
        Ok(Bytes::new())
    }
}

impl<T, In, Out> Decode<T> for (In, Out)
where
    In: Decode<T>,
{
    fn decode(payload: Option<&Bytes>) -> Result<T, DecodeError> {
        In::decode(payload)
    }
}

impl<T, In, Out> Encode<T> for (In, Out)
where
    Out: Encode<T>,
{
    fn encode(value: &T) -> Result<Bytes, EncodeError> {
        Out::encode(value)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(serde::Deserialize, Debug)]
    struct Order {
        #[allow(dead_code)]
        id: u64,
    }

    #[test]
    fn json_rejects_wrong_shape_and_invalid_json() {
        let wrong = Bytes::from_static(br#"{"name": "x"}"#);
        let err = <Json as Decode<Order>>::decode(Some(&wrong)).unwrap_err();
        assert!(err.to_string().contains("missing field `id`"), "{err}");

        let invalid = Bytes::from_static(b"{not json");
        assert!(matches!(
            <Json as Decode<Order>>::decode(Some(&invalid)),
            Err(DecodeError::Json(_))
        ));
        assert!(matches!(
            <Json as Decode<Order>>::decode(None),
            Err(DecodeError::Null)
        ));
    }

    #[test]
    fn utf8_rejects_invalid_text_and_raw_passes_anything() {
        let bad = Bytes::from_static(&[0xff, 0xfe]);
        assert!(matches!(
            <Utf8 as Decode<String>>::decode(Some(&bad)),
            Err(DecodeError::Utf8(_))
        ));
        let raw: Bytes = <Raw as Decode<Bytes>>::decode(Some(&bad)).unwrap();
        assert_eq!(raw, bad);
        let empty: Bytes = <Raw as Decode<Bytes>>::decode(None).unwrap();
        assert!(empty.is_empty());
    }

    #[test]
    fn pair_decodes_with_first_and_encodes_with_second() {
        let payload = Bytes::from_static(b"hello");
        let text: String = <(Utf8, Json) as Decode<String>>::decode(Some(&payload)).unwrap();
        let encoded = <(Utf8, Json) as Encode<String>>::encode(&text).unwrap();
        assert_eq!(&encoded[..], b"\"hello\"");
    }
}
