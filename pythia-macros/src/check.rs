//! Checking the parsed attributes into a model the code is generated from.
//!
//! Every mistake is reported, each at the token that caused it.

use proc_macro2::{Span, TokenStream};
use quote::{format_ident, quote};
use syn::{DeriveInput, Ident};

use crate::attr::{Attr, Attrs, Codec, Str};
use crate::ctxt::Ctxt;

/// A checked worker declaration.
pub(crate) struct Model<'a> {
    pub(crate) input: &'a DeriveInput,
    pub(crate) krate: syn::Path,
    pub(crate) name: String,
    pub(crate) topics: Vec<String>,
    pub(crate) group: Option<String>,
    pub(crate) output: Option<String>,
    /// `(name, constant, topic)` per sink.
    pub(crate) sinks: Vec<(String, Ident, String)>,
    pub(crate) default_sink: Option<String>,
    pub(crate) codec: TokenStream,
    pub(crate) max_in_flight: Option<usize>,
    pub(crate) partition_buffer: Option<usize>,
    /// The `MessageOrder` variant's name.
    pub(crate) ordering: Option<syn::Ident>,
}

/// Checks `input` and its attributes; errors go to `cx`.
pub(crate) fn check<'a>(cx: &Ctxt, input: &'a DeriveInput, attrs: Attrs) -> Model<'a> {
    check_shape(cx, input);
    let krate = attrs
        .krate
        .map_or_else(crate::emit::default_crate_path, |a| a.value);

    let name = match attrs.name {
        Some(Attr { value, .. }) => {
            if value.value.trim().is_empty() {
                cx.error(
                    value.span,
                    format!(
                        "the worker name cannot be empty: write e.g. `name = \"billing\"`, or remove `name` to use `{}`",
                        kebab_case(&input.ident.to_string())
                    ),
                );
            }
            value.value
        }
        None => kebab_case(&input.ident.to_string()),
    };

    let topics = match (attrs.topic, attrs.topics) {
        (Some(one), Some(many)) => {
            cx.error(
                many.key,
                "use either `topic = \"...\"` or `topics = [...]`, not both",
            );
            vec![one.value]
        }
        (Some(one), None) => vec![one.value],
        (None, Some(many)) => {
            if many.value.is_empty() {
                cx.error(
                    many.key,
                    "a worker needs at least one input topic, e.g. `topics = [\"orders\"]`",
                );
            }
            many.value
        }
        // A bad `topics` value was reported already.
        (None, None) if attrs.source_seen => Vec::new(),
        (None, None) => {
            cx.error(
                input.ident.span(),
                format!(
                    "`{}` has no source: add `#[pythia(topic = \"orders\")]` or `#[pythia(topics = [\"orders\", \"refunds\"])]`",
                    input.ident
                ),
            );
            Vec::new()
        }
    };
    let mut seen = Vec::<&str>::new();
    for topic in &topics {
        check_topic(cx, topic);
        if seen.contains(&topic.value.as_str()) {
            cx.error(
                topic.span,
                format!("topic `{}` is listed twice", topic.value),
            );
        }
        seen.push(&topic.value);
    }

    let group = attrs.group.map(|g| {
        if g.value.value.trim().is_empty() {
            cx.error(
                g.value.span,
                "the group cannot be empty: write e.g. `group = \"billing\"`, or remove `group` to use the worker's name",
            );
        }
        g.value.value
    });
    let output = attrs.output.map(|o| {
        check_topic(cx, &o.value);
        o.value.value
    });

    let mut sinks: Vec<(String, Ident, String)> = Vec::new();
    for sink in attrs.sinks.map(|s| s.value).unwrap_or_default() {
        let name = sink.name.to_string();
        let is_snake = name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
        if !is_snake {
            cx.error(
                sink.name.span(),
                format!(
                    "sink names are lowercase snake_case (they are also config keys, `kafka.sinks.<name>`): write `{}`",
                    snake_case(&name)
                ),
            );
        }
        if sinks.iter().any(|(n, ..)| *n == name) {
            cx.error(
                sink.name.span(),
                format!("sink `{name}` is declared twice: give each sink its own name"),
            );
        }
        check_topic(cx, &sink.topic);
        // A raw name (`r#type`) is an error above; its constant drops the `r#`.
        let constant = format_ident!(
            "{}",
            name.trim_start_matches("r#").to_uppercase(),
            span = sink.name.span()
        );
        sinks.push((name, constant, sink.topic.value));
    }

    let default_sink_key = attrs.default_sink.as_ref().map(|d| d.key);
    let default_sink = attrs.default_sink.map(|d| {
        if !sinks.iter().any(|(n, ..)| *n == d.value.value) {
            let declared: Vec<&str> = sinks.iter().map(|(n, ..)| n.as_str()).collect();
            let hint = if declared.is_empty() {
                "declare it with `sinks(...)`".to_owned()
            } else {
                format!("declared sinks: {}", declared.join(", "))
            };
            cx.error(
                d.value.span,
                format!(
                    "`default_sink` names `{}`, which is not declared in `sinks(...)`: {hint}",
                    d.value.value
                ),
            );
        }
        d.value.value
    });
    if let (Some(output), Some(key)) = (&output, default_sink_key) {
        cx.error(
            key,
            format!("`output = \"{output}\"` and `default_sink` both say where unrouted outputs go: keep one"),
        );
    }

    let codec = match attrs.codec.map(|c| c.value) {
        None => quote!(#krate::codec::Json),
        Some(Codec::Type(ty)) => quote!(#ty),
        // Spanned on the string, so that an input or output type the codec
        // cannot handle is reported at `codec = "..."`.
        Some(Codec::Builtin(name)) => match name.value.as_str() {
            "json" => respan(quote!(#krate::codec::Json), name.span),
            "raw" => respan(quote!(#krate::codec::Raw), name.span),
            "utf8" => respan(quote!(#krate::codec::Utf8), name.span),
            other => {
                cx.error(
                    name.span,
                    format!("unknown codec \"{other}\": use \"json\", \"raw\", \"utf8\", or a type implementing `Decode` and `Encode`"),
                );
                quote!(#krate::codec::Json)
            }
        },
    };

    let max_in_flight = attrs
        .max_in_flight
        .and_then(|a| positive(cx, a, "max_in_flight"));
    let partition_buffer = attrs
        .partition_buffer
        .and_then(|a| positive(cx, a, "partition_buffer"));

    let ordering = attrs.ordering.and_then(|o| {
        let variant = match o.value.value.as_str() {
            "partition" => "Partition",
            "key" => "Key",
            "none" => "None",
            other => {
                cx.error(
                    o.value.span,
                    format!("unknown ordering \"{other}\": use \"partition\" (one at a time, the default), \"key\" (keys in parallel, each in order) or \"none\""),
                );
                return None;
            }
        };
        Some(syn::Ident::new(variant, o.value.span))
    });

    Model {
        input,
        krate,
        name,
        topics: topics.into_iter().map(|t| t.value).collect(),
        group,
        output,
        sinks,
        default_sink,
        codec,
        max_in_flight,
        partition_buffer,
        ordering,
    }
}

/// `tokens`, each placed at `span`.
fn respan(tokens: TokenStream, span: Span) -> TokenStream {
    tokens
        .into_iter()
        .map(|mut token| {
            token.set_span(span);
            token
        })
        .collect()
}

/// A worker is a struct with named fields (its state) or a unit struct.
fn check_shape(cx: &Ctxt, input: &DeriveInput) {
    match &input.data {
        syn::Data::Struct(data) => {
            if let syn::Fields::Unnamed(fields) = &data.fields {
                cx.error_spanned_by(
                    fields,
                    "`#[derive(Worker)]` needs a struct with named fields or a unit struct, not a tuple struct",
                );
            }
        }
        syn::Data::Enum(data) => cx.error(
            data.enum_token.span,
            "`#[derive(Worker)]` works on structs: a worker is a struct holding its state, not an enum",
        ),
        syn::Data::Union(data) => cx.error(
            data.union_token.span,
            "`#[derive(Worker)]` works on structs, not unions",
        ),
    }
}

/// Kafka topic names: 1 to 249 of `a-z A-Z 0-9 . _ -`, not `.` or `..`.
fn check_topic(cx: &Ctxt, topic: &Str) {
    let name = topic.value.as_str();
    let bad = name
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')));
    if name.is_empty() {
        cx.error(
            topic.span,
            "topic names cannot be empty: write e.g. `\"orders\"`",
        );
    } else if let Some(c) = bad {
        cx.error(
            topic.span,
            format!("topic `{name}` contains `{c}`: topic names use only letters, digits, `.`, `_` and `-`"),
        );
    } else if name.len() > 249 || name == "." || name == ".." {
        cx.error(topic.span, format!("`{name}` is not a valid topic name"));
    }
}

fn positive(cx: &Ctxt, attr: Attr<syn::LitInt>, key: &str) -> Option<usize> {
    match attr.value.base10_parse::<usize>() {
        Ok(0) => {
            cx.error(attr.value.span(), format!("`{key}` must be at least 1"));
            None
        }
        Ok(n) => Some(n),
        Err(_) => {
            cx.error(
                attr.value.span(),
                format!("`{key}` must be a positive integer"),
            );
            None
        }
    }
}

/// `OrderTotals` → `order-totals`.
fn kebab_case(ident: &str) -> String {
    snake_case(ident).replace('_', "-")
}

/// `OrderTotals` → `order_totals`.
fn snake_case(ident: &str) -> String {
    let mut out = String::with_capacity(ident.len() + 4);
    let mut prev_lower = false;
    for c in ident.trim_start_matches("r#").chars() {
        if c.is_ascii_uppercase() {
            if prev_lower {
                out.push('_');
            }
            out.push(c.to_ascii_lowercase());
            prev_lower = false;
        } else {
            out.push(c);
            prev_lower = c.is_ascii_lowercase() || c.is_ascii_digit();
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_from_idents() {
        assert_eq!(kebab_case("OrderTotals"), "order-totals");
        assert_eq!(kebab_case("Billing"), "billing");
        assert_eq!(kebab_case("Stage2Store"), "stage2-store");
        assert_eq!(snake_case("BillingEvents"), "billing_events");
    }
}
