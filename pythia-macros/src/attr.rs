//! Parsing `#[pythia(...)]` into a model, collecting every error on the way.

use proc_macro2::{Span, TokenStream};
use syn::meta::ParseNestedMeta;
use syn::punctuated::Punctuated;
use syn::{Ident, LitInt, LitStr, Token};

use crate::ctxt::Ctxt;

/// The attribute's name.
pub(crate) const PYTHIA: &str = "pythia";

/// Every key `#[pythia(...)]` accepts.
pub(crate) const NAME: &str = "name";
pub(crate) const TOPIC: &str = "topic";
pub(crate) const TOPICS: &str = "topics";
pub(crate) const GROUP: &str = "group";
pub(crate) const OUTPUT: &str = "output";
pub(crate) const SINKS: &str = "sinks";
pub(crate) const DEFAULT_SINK: &str = "default_sink";
pub(crate) const CODEC: &str = "codec";
pub(crate) const MAX_IN_FLIGHT: &str = "max_in_flight";
pub(crate) const PARTITION_BUFFER: &str = "partition_buffer";
pub(crate) const ORDERING: &str = "ordering";
pub(crate) const CRATE: &str = "crate";

const KEYS: &[&str] = &[
    NAME,
    TOPIC,
    TOPICS,
    GROUP,
    OUTPUT,
    SINKS,
    DEFAULT_SINK,
    CODEC,
    MAX_IN_FLIGHT,
    PARTITION_BUFFER,
    ORDERING,
    CRATE,
];

/// A value and the span of the key that set it.
pub(crate) struct Attr<T> {
    pub(crate) key: Span,
    pub(crate) value: T,
}

/// A string value with its span.
#[derive(Clone)]
pub(crate) struct Str {
    pub(crate) value: String,
    pub(crate) span: Span,
}

impl From<LitStr> for Str {
    fn from(lit: LitStr) -> Self {
        Self {
            value: lit.value(),
            span: lit.span(),
        }
    }
}

/// How payloads are encoded.
pub(crate) enum Codec {
    /// One of the built-in codecs, by name.
    Builtin(Str),
    /// A type implementing `Decode`/`Encode`.
    Type(syn::Type),
}

/// A named sink: `name = "topic"`.
pub(crate) struct SinkDecl {
    pub(crate) name: Ident,
    pub(crate) topic: Str,
}

/// Everything `#[pythia(...)]` said, each key at most once.
#[derive(Default)]
pub(crate) struct Attrs {
    pub(crate) name: Option<Attr<Str>>,
    pub(crate) topic: Option<Attr<Str>>,
    pub(crate) topics: Option<Attr<Vec<Str>>>,
    pub(crate) group: Option<Attr<Str>>,
    pub(crate) output: Option<Attr<Str>>,
    pub(crate) sinks: Option<Attr<Vec<SinkDecl>>>,
    pub(crate) default_sink: Option<Attr<Str>>,
    pub(crate) codec: Option<Attr<Codec>>,
    pub(crate) max_in_flight: Option<Attr<LitInt>>,
    pub(crate) partition_buffer: Option<Attr<LitInt>>,
    pub(crate) ordering: Option<Attr<Str>>,
    pub(crate) krate: Option<Attr<syn::Path>>,
    /// Whether `topic` or `topics` was written, even with a bad value.
    pub(crate) source_seen: bool,
}

impl Attrs {
    /// Reads every `#[pythia(...)]` attribute of the item.
    pub(crate) fn parse(cx: &Ctxt, attrs: &[syn::Attribute]) -> Self {
        let mut out = Self::default();
        for attr in attrs.iter().filter(|a| a.path().is_ident(PYTHIA)) {
            let parsed = attr.parse_nested_meta(|meta| {
                let rest = meta.input;
                match out.parse_key(cx, meta) {
                    // A value of the wrong type was read whole: report it and
                    // read the keys after it.
                    Err(error) if rest.is_empty() || rest.peek(Token![,]) => {
                        cx.push(error);
                        Ok(())
                    }
                    result => result,
                }
            });
            if let Err(error) = parsed {
                cx.push(error);
            }
        }
        out
    }

    fn parse_key(&mut self, cx: &Ctxt, meta: ParseNestedMeta<'_>) -> syn::Result<()> {
        let Some(key) = meta.path.get_ident().map(Ident::to_string) else {
            let path = quote::ToTokens::to_token_stream(&meta.path)
                .to_string()
                .replace(' ', "");
            return Err(syn::Error::new_spanned(
                &meta.path,
                format!(
                    "`{path}` is not a pythia attribute: keys are single words, one of {}",
                    KEYS.join(", ")
                ),
            ));
        };
        if key == TOPIC || key == TOPICS {
            self.source_seen = true;
        }
        let span = meta
            .path
            .get_ident()
            .map_or_else(Span::call_site, Ident::span);
        match key.as_str() {
            NAME => set(
                cx,
                &mut self.name,
                span,
                NAME,
                string(&meta, NAME, "\"billing\"")?,
            ),
            TOPIC => set(
                cx,
                &mut self.topic,
                span,
                TOPIC,
                string(&meta, TOPIC, "\"orders\"")?,
            ),
            TOPICS => set(cx, &mut self.topics, span, TOPICS, string_list(&meta)?),
            GROUP => set(
                cx,
                &mut self.group,
                span,
                GROUP,
                string(&meta, GROUP, "\"billing\"")?,
            ),
            OUTPUT => set(
                cx,
                &mut self.output,
                span,
                OUTPUT,
                string(&meta, OUTPUT, "\"invoices\"")?,
            ),
            SINKS => set(cx, &mut self.sinks, span, SINKS, sinks(&meta)?),
            DEFAULT_SINK => {
                let value = string(&meta, DEFAULT_SINK, "\"billing\"")?;
                set(cx, &mut self.default_sink, span, DEFAULT_SINK, value)
            }
            CODEC => set(cx, &mut self.codec, span, CODEC, codec(&meta)?),
            MAX_IN_FLIGHT => set(
                cx,
                &mut self.max_in_flight,
                span,
                MAX_IN_FLIGHT,
                int(&meta, MAX_IN_FLIGHT, "256")?,
            ),
            PARTITION_BUFFER => {
                let value = int(&meta, PARTITION_BUFFER, "1000")?;
                set(
                    cx,
                    &mut self.partition_buffer,
                    span,
                    PARTITION_BUFFER,
                    value,
                )
            }
            ORDERING => {
                let value = string(&meta, ORDERING, "\"key\"")?;
                set(cx, &mut self.ordering, span, ORDERING, value)
            }
            CRATE => {
                let lit = string(&meta, CRATE, "\"pythia_kafka::core\"")?;
                // Spanned on the string, so that an unresolved path points at it.
                let path = LitStr::new(&lit.value, lit.span)
                    .parse::<syn::Path>()
                    .map_err(|_| {
                        syn::Error::new(
                            lit.span,
                            "expected a path, e.g. `crate = \"pythia_kafka::core\"`",
                        )
                    })?;
                set(cx, &mut self.krate, span, CRATE, path)
            }
            _ => {
                // Skip the value so that later keys are still read.
                if meta.input.peek(Token![=]) {
                    let _: syn::Expr = meta.value()?.parse()?;
                } else if meta.input.peek(syn::token::Paren) {
                    let content;
                    syn::parenthesized!(content in meta.input);
                    let _: TokenStream = content.parse()?;
                }
                cx.error_spanned_by(&meta.path, unknown_key(&format!("`{key}`")));
            }
        }
        Ok(())
    }
}

fn unknown_key(what: &str) -> String {
    format!(
        "unknown pythia attribute {what}: expected one of {}",
        KEYS.join(", ")
    )
}

fn set<T>(cx: &Ctxt, slot: &mut Option<Attr<T>>, key: Span, name: &str, value: T) {
    if slot.is_some() {
        cx.error(
            key,
            format!("duplicate pythia attribute `{name}`: set it once"),
        );
    } else {
        *slot = Some(Attr { key, value });
    }
}

fn string(meta: &ParseNestedMeta<'_>, key: &str, example: &str) -> syn::Result<Str> {
    let expr: syn::Expr = meta.value()?.parse()?;
    match expr {
        syn::Expr::Lit(syn::ExprLit {
            lit: syn::Lit::Str(lit),
            ..
        }) => Ok(lit.into()),
        other => Err(syn::Error::new_spanned(
            other,
            format!("expected a string, e.g. `{key} = {example}`"),
        )),
    }
}

fn int(meta: &ParseNestedMeta<'_>, key: &str, example: &str) -> syn::Result<LitInt> {
    let expr: syn::Expr = meta.value()?.parse()?;
    match expr {
        syn::Expr::Lit(syn::ExprLit {
            lit: syn::Lit::Int(lit),
            ..
        }) => Ok(lit),
        syn::Expr::Lit(syn::ExprLit {
            lit: syn::Lit::Str(lit),
            ..
        }) => Err(syn::Error::new_spanned(
            &lit,
            format!(
                "`{key}` takes a number: write `{key} = {}` (without quotes)",
                lit.value()
            ),
        )),
        other => Err(syn::Error::new_spanned(
            other,
            format!("expected a positive integer, e.g. `{key} = {example}`"),
        )),
    }
}

fn string_list(meta: &ParseNestedMeta<'_>) -> syn::Result<Vec<Str>> {
    const HINT: &str = "expected a list of topic names, e.g. `topics = [\"orders\", \"refunds\"]` (or `topic = \"orders\"` for one)";
    let value = meta.value()?;
    if !value.peek(syn::token::Bracket) {
        let wrong: syn::Expr = value.parse()?;
        if let syn::Expr::Lit(syn::ExprLit {
            lit: syn::Lit::Str(lit),
            ..
        }) = &wrong
        {
            let topic = lit.value();
            return Err(syn::Error::new_spanned(
                lit,
                format!(
                    "`topics` takes a list: write `topics = [\"{topic}\"]`, or `topic = \"{topic}\"`"
                ),
            ));
        }
        return Err(syn::Error::new_spanned(wrong, HINT));
    }
    let content;
    syn::bracketed!(content in value);
    let items = Punctuated::<syn::Expr, Token![,]>::parse_terminated(&content)?;
    items
        .into_iter()
        .map(|item| match item {
            syn::Expr::Lit(syn::ExprLit {
                lit: syn::Lit::Str(lit),
                ..
            }) => Ok(lit.into()),
            other => Err(syn::Error::new_spanned(other, HINT)),
        })
        .collect()
}

fn sinks(meta: &ParseNestedMeta<'_>) -> syn::Result<Vec<SinkDecl>> {
    if !meta.input.peek(syn::token::Paren) {
        return Err(meta.error(
            "expected a list of named sinks, e.g. `sinks(billing = \"billing.invoices\", audit = \"audit.log\")`",
        ));
    }
    let mut out = Vec::new();
    meta.parse_nested_meta(|sink| {
        let Some(name) = sink.path.get_ident().cloned() else {
            return Err(sink.error("expected a sink name, e.g. `billing = \"billing.invoices\"`"));
        };
        let topic = string(&sink, &name.to_string(), "\"topic.name\"")?;
        out.push(SinkDecl { name, topic });
        Ok(())
    })?;
    Ok(out)
}

fn codec(meta: &ParseNestedMeta<'_>) -> syn::Result<Codec> {
    let value = meta.value()?;
    if value.peek(LitStr) {
        let lit: LitStr = value.parse()?;
        return Ok(Codec::Builtin(lit.into()));
    }
    value.parse::<syn::Type>().map(Codec::Type).map_err(|error| {
        syn::Error::new(
            error.span(),
            "expected a codec: \"json\", \"raw\", \"utf8\", or a type implementing `Decode` and `Encode`",
        )
    })
}

#[cfg(test)]
mod tests {
    use super::KEYS;

    /// The derive's documentation and the guide list every key, so a new key
    /// cannot ship undocumented.
    #[test]
    fn every_key_is_documented() {
        let derive = include_str!("derive.md");
        let guide = include_str!("../../docs/guide.md");
        let readme = include_str!("../../README.md");
        for key in KEYS {
            assert!(
                derive.contains(&format!("| `{key}` |")),
                "derive.md lacks `{key}`"
            );
            assert!(
                guide.contains(&format!("`{key}`")),
                "docs/guide.md lacks `{key}`"
            );
            assert!(
                readme.contains(&format!("`{key}`")),
                "README.md lacks `{key}`"
            );
        }
    }
}
