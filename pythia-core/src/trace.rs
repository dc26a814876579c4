//! Trace context: the W3C `traceparent` header carried from a message to its
//! outputs, so one message can be followed across pipeline stages.
//!
//! The outputs of a message keep the input's trace id and flags and get a new
//! parent id (this processing step), as the W3C Trace Context spec asks of an
//! intermediary. An output that sets its own `traceparent` keeps it. Messages
//! without a valid `traceparent` get none added.

use std::hash::{BuildHasher, Hasher};

use crate::message::Headers;

/// The header name, as the W3C Trace Context spec writes it.
pub const TRACEPARENT: &str = "traceparent";

/// A parsed `traceparent`: `00-<32 hex trace id>-<16 hex parent id>-<2 hex flags>`.
///
/// ```
/// use pythia_core::trace::TraceParent;
/// let parent = TraceParent::parse("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01").unwrap();
/// assert_eq!(parent.trace_id(), "4bf92f3577b34da6a3ce929d0e0e4736");
/// let child = parent.child();
/// assert_eq!(child.trace_id(), parent.trace_id());
/// assert_ne!(child.to_string(), parent.to_string());
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TraceParent {
    trace_id: String,
    parent_id: String,
    flags: String,
}

impl TraceParent {
    /// Parses a header value; `None` when it is not a valid version-00 value.
    pub fn parse(value: &str) -> Option<Self> {
        let mut parts = value.trim().split('-');
        let (version, trace_id, parent_id, flags) =
            (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
        let hex = |s: &str, len: usize| {
            s.len() == len
                && s.bytes()
                    .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        };
        let valid = hex(version, 2)
            && version != "ff"
            && hex(trace_id, 32)
            && trace_id.bytes().any(|b| b != b'0')
            && hex(parent_id, 16)
            && parent_id.bytes().any(|b| b != b'0')
            && hex(flags, 2)
            && (version != "00" || parts.next().is_none());
        valid.then(|| Self {
            trace_id: trace_id.to_owned(),
            parent_id: parent_id.to_owned(),
            flags: flags.to_owned(),
        })
    }

    /// The `traceparent` of a message's headers, if valid.
    pub fn from_headers(headers: &Headers) -> Option<Self> {
        headers.get_str(TRACEPARENT).and_then(Self::parse)
    }

    /// The trace id, 32 lowercase hex digits.
    pub fn trace_id(&self) -> &str {
        &self.trace_id
    }

    /// The same trace with a new parent id: the context for this step's outputs.
    pub fn child(&self) -> Self {
        let mut id = random_u64();
        while id == 0 {
            id = random_u64();
        }
        Self {
            trace_id: self.trace_id.clone(),
            parent_id: format!("{id:016x}"),
            flags: self.flags.clone(),
        }
    }

    /// Adds this context to `headers` unless they carry a `traceparent` already.
    pub fn inject(&self, headers: &mut Headers) {
        if headers.get(TRACEPARENT).is_none() {
            headers.append(TRACEPARENT, self.to_string());
        }
    }
}

impl std::fmt::Display for TraceParent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "00-{}-{}-{}", self.trace_id, self.parent_id, self.flags)
    }
}

/// A random id from the standard library's randomly seeded hasher.
fn random_u64() -> u64 {
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u64(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64),
    );
    hasher.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    const VALID: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    #[test]
    fn invalid_values_are_ignored() {
        for bad in [
            "",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
        ] {
            assert_eq!(TraceParent::parse(bad), None, "{bad}");
        }
    }

    #[test]
    fn outputs_get_a_child_unless_they_set_their_own() {
        let parent = TraceParent::parse(VALID).unwrap();
        let mut headers = Headers::new();
        parent.child().inject(&mut headers);
        let injected = TraceParent::from_headers(&headers).unwrap();
        assert_eq!(injected.trace_id(), parent.trace_id());
        assert_ne!(injected, parent);

        let mut own = Headers::new();
        own.append(TRACEPARENT, VALID);
        TraceParent::parse("00-11111111111111111111111111111111-2222222222222222-00")
            .unwrap()
            .inject(&mut own);
        assert_eq!(own.get_str(TRACEPARENT), Some(VALID));
        assert_eq!(own.len(), 1);
    }
}
