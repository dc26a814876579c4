//! The message span as an OpenTelemetry span: parented on the input's
//! `traceparent`, its own id handed to the outputs.

use opentelemetry::Context;
use opentelemetry::trace::{SpanContext, SpanId, TraceContextExt, TraceFlags, TraceId, TraceState};
use tracing_opentelemetry::OpenTelemetrySpanExt;

use super::TraceParent;

/// Parents `span` on `incoming` (on nothing when there is none: a new trace)
/// and returns the context for the outputs: the span's trace id and its own
/// span id. `None` when no OpenTelemetry layer records `span`.
pub(super) fn continue_trace(
    span: &tracing::Span,
    incoming: Option<&TraceParent>,
) -> Option<TraceParent> {
    let parent = match incoming {
        Some(incoming) => Context::new().with_remote_span_context(remote(incoming)),
        // An empty parent rather than the enclosing span's: each message is
        // its own operation.
        None => Context::new(),
    };
    span.set_parent(parent).ok()?;
    let context = span.context();
    let own = context.span();
    let own = own.span_context();
    // Invalid once the tracer provider is shut down.
    if !own.is_valid() {
        return None;
    }
    TraceParent::new(
        u128::from_be_bytes(own.trace_id().to_bytes()),
        u64::from_be_bytes(own.span_id().to_bytes()),
        own.is_sampled(),
    )
}

/// The span that sent the message, in another process.
fn remote(parent: &TraceParent) -> SpanContext {
    // `TraceParent::parse` checked the hex digits.
    let flags = u8::from_str_radix(&parent.flags, 16).unwrap_or_default();
    SpanContext::new(
        TraceId::from_hex(&parent.trace_id).unwrap_or(TraceId::INVALID),
        SpanId::from_hex(&parent.parent_id).unwrap_or(SpanId::INVALID),
        TraceFlags::new(flags),
        true,
        TraceState::default(),
    )
}
