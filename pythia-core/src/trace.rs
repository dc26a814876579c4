//! Trace context: the W3C `traceparent` header carried from a message to its
//! outputs, so one message can be followed across pipeline stages.
//!
//! The outputs of a message keep the input's trace id and flags and get a new
//! parent id (this processing step), as the W3C Trace Context spec asks of an
//! intermediary. An output that sets its own `traceparent` keeps it. Messages
//! without a valid `traceparent` get none added.
//!
//! With the `otel` feature and a `tracing-opentelemetry` layer recording the
//! message span, that span is the processing step: its parent is the input's
//! `traceparent`, the outputs' parent id is its span id, and a message without
//! a `traceparent` starts a new trace that its outputs carry on.

use std::hash::{BuildHasher, Hasher};

use crate::message::Headers;

#[cfg(feature = "otel")]
mod otel;

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

    /// A context from its parts: a 128-bit trace id, the 64-bit id of the
    /// span that sent the message, and whether the trace is sampled. `None`
    /// when an id is zero, which the spec forbids.
    ///
    /// ```
    /// use pythia_core::trace::TraceParent;
    /// let parent = TraceParent::new(0x4bf92f3577b34da6a3ce929d0e0e4736, 0x00f067aa0ba902b7, true)
    ///     .ok_or("zero id")?;
    /// assert_eq!(parent.to_string(), "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01");
    /// assert_eq!(parent.parent_id(), "00f067aa0ba902b7");
    /// assert!(parent.sampled());
    /// # Ok::<(), &str>(())
    /// ```
    pub fn new(trace_id: u128, parent_id: u64, sampled: bool) -> Option<Self> {
        (trace_id != 0 && parent_id != 0).then(|| Self {
            trace_id: format!("{trace_id:032x}"),
            parent_id: format!("{parent_id:016x}"),
            flags: if sampled { "01" } else { "00" }.to_owned(),
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

    /// The parent id, 16 lowercase hex digits: the span that sent the message.
    pub fn parent_id(&self) -> &str {
        &self.parent_id
    }

    /// Whether the sender records this trace (the `sampled` flag).
    pub fn sampled(&self) -> bool {
        u8::from_str_radix(&self.flags, 16).is_ok_and(|flags| flags & 1 == 1)
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

/// The trace context of a message's outputs, also recorded as the `trace_id`
/// field of `span` (the message span).
///
/// Without OpenTelemetry export it is the input's `traceparent` with a new
/// parent id, and none when the input has none. When an OpenTelemetry layer
/// records `span` (feature `otel`), the span continues the input's trace or
/// starts one, and the outputs carry its id: the next stage's span is its child.
pub(crate) fn continue_trace(span: &tracing::Span, headers: &Headers) -> Option<TraceParent> {
    let incoming = TraceParent::from_headers(headers);
    #[cfg(feature = "otel")]
    let exported = otel::continue_trace(span, incoming.as_ref());
    #[cfg(not(feature = "otel"))]
    let exported = None;
    let trace = exported.or_else(|| incoming.map(|t| t.child()));
    if let Some(trace) = &trace {
        span.record("trace_id", trace.trace_id());
    }
    trace
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

    #[test]
    fn built_from_parts_it_reads_back() {
        let built = TraceParent::new(0x4bf92f3577b34da6a3ce929d0e0e4736, 0xf067aa0ba902b7, true);
        assert_eq!(built, TraceParent::parse(VALID));
        let unsampled = TraceParent::new(1, 2, false).unwrap();
        assert_eq!(
            unsampled.to_string(),
            "00-00000000000000000000000000000001-0000000000000002-00"
        );
        assert!(!unsampled.sampled());
        assert_eq!(TraceParent::new(0, 2, true), None);
        assert_eq!(TraceParent::new(1, 0, true), None);
    }

    #[test]
    fn without_export_outputs_get_a_child_of_the_input() {
        let span = tracing::Span::none();
        let mut headers = Headers::new();
        assert_eq!(continue_trace(&span, &headers), None);
        headers.append(TRACEPARENT, VALID);
        let outputs = continue_trace(&span, &headers).unwrap();
        assert_eq!(outputs.trace_id(), "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_ne!(outputs.parent_id(), "00f067aa0ba902b7");
        assert!(outputs.sampled());
    }
}
