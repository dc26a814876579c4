//! The `#[derive(Worker)]` macro of Pythia. Use it through `pythia_core::Worker`
//! or `pythia_kafka::Worker`, which re-export it.
//!
//! The derive runs in three steps, one module each: `attr` parses
//! `#[pythia(...)]` into a model, `check` validates it (collecting every
//! error, each spanned on its token), `emit` generates the code.

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
        Err(errors) => errors.to_compile_error(),
    }
}
