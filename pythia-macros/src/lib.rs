//! The `#[derive(Worker)]` macro of Pythia. Use it through `pythia_core::Worker`
//! or `pythia_kafka::Worker`, which re-export it.
//!
//! The derive runs in three steps, one module each: `attr` parses
//! `#[pythia(...)]` into a model, `check` validates it (collecting every
//! error, each spanned on its token), `emit` generates the code.

#![forbid(unsafe_code)]

use proc_macro::TokenStream;
use syn::{DeriveInput, parse_macro_input};

mod attr;
mod check;
mod ctxt;
mod emit;

#[doc = include_str!("derive.md")]
#[proc_macro_derive(Worker, attributes(pythia))]
pub fn derive_worker(input: TokenStream) -> TokenStream {
    let input = parse_macro_input!(input as DeriveInput);
    expand(&input).into()
}

fn expand(input: &DeriveInput) -> proc_macro2::TokenStream {
    let cx = ctxt::Ctxt::default();
    let attrs = attr::Attrs::parse(&cx, &input.attrs);
    let model = check::check(&cx, input, attrs);
    match cx.check() {
        Ok(()) => emit::emit(&model),
        // The errors, and items standing in for the real ones so that the
        // worker's uses report nothing more (and the IDE keeps working).
        Err(errors) => {
            let mut out = errors.to_compile_error();
            out.extend(emit::fallback(&model));
            out
        }
    }
}

#[cfg(test)]
mod tests {
    use quote::quote;

    use super::*;

    fn expand_str(input: proc_macro2::TokenStream) -> String {
        expand(&syn::parse2(input).unwrap()).to_string()
    }

    #[test]
    fn errors_come_with_the_impl_and_the_sink_constants() {
        let out = expand_str(quote! {
            #[pythia(topic = "new orders", sinks(billing = "billing.invoices", billing = "b2"))]
            struct Billing;
        });
        assert_eq!(out.matches("compile_error").count(), 2, "{out}");
        assert!(out.contains("Worker for Billing where"), "{out}");
        assert!(out.contains("Process"), "{out}");
        assert_eq!(out.matches("const BILLING").count(), 1, "{out}");
        assert!(!out.contains("SPEC"), "{out}");
    }

    #[test]
    fn without_errors_the_impl_has_no_extra_bounds() {
        let out = expand_str(quote! {
            #[pythia(topic = "orders", sinks(billing = "billing.invoices"))]
            struct Billing;
        });
        assert!(!out.contains("compile_error"), "{out}");
        assert!(!out.contains("where"), "{out}");
        assert!(out.contains("const SPEC"), "{out}");
        assert!(out.contains("const BILLING"), "{out}");
    }

    #[test]
    fn a_raw_sink_name_is_an_error_not_a_panic() {
        let out = expand_str(quote! {
            #[pythia(topic = "orders", sinks(r#type = "types"))]
            struct Billing;
        });
        assert!(out.contains("compile_error"), "{out}");
        assert!(out.contains("const TYPE"), "{out}");
    }
}
