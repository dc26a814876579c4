//! Generating the `Worker` impl and the sink constants from a checked model.

use proc_macro2::TokenStream;
use quote::quote;

use crate::check::Model;

/// The path of the runtime crate as the user's crate sees it: `::pythia_core`
/// when it depends on `pythia-core`, else `::pythia_kafka::core`.
pub(crate) fn default_crate_path() -> syn::Path {
    use proc_macro_crate::{FoundCrate, crate_name};
    let path = match crate_name("pythia-core") {
        Ok(FoundCrate::Name(name)) => format!("::{name}"),
        // Inside pythia-core's own tests, `extern crate self as pythia_core` applies.
        Ok(FoundCrate::Itself) | Err(_) => match crate_name("pythia-kafka") {
            Ok(FoundCrate::Name(name)) => format!("::{name}::core"),
            Ok(FoundCrate::Itself) => "::pythia_kafka::core".to_owned(),
            Err(_) => "::pythia_core".to_owned(),
        },
    };
    syn::parse_str(&path).expect("a crate path parses")
}

/// The generated items.
pub(crate) fn emit(model: &Model<'_>) -> TokenStream {
    let krate = &model.krate;
    let ident = &model.input.ident;
    let vis = &model.input.vis;
    let (impl_generics, ty_generics, where_clause) = model.input.generics.split_for_impl();
    let codec = &model.codec;

    let name = &model.name;
    let topics = &model.topics;
    let mut spec = quote! {
        #krate::WorkerSpec::new(#name).with_topics(&[#(#topics),*])
    };
    if let Some(group) = &model.group {
        spec.extend(quote!(.with_group(#group)));
    }
    if let Some(output) = &model.output {
        spec.extend(quote!(.with_output(#output)));
    }
    if !model.sinks.is_empty() {
        let pairs = model
            .sinks
            .iter()
            .map(|(name, _, topic)| quote!((#name, #topic)));
        spec.extend(quote!(.with_sinks(&[#(#pairs),*])));
    }
    if let Some(sink) = &model.default_sink {
        spec.extend(quote!(.with_default_sink(#sink)));
    }
    if let Some(n) = model.max_in_flight {
        spec.extend(quote!(.with_max_in_flight(#n)));
    }
    if let Some(n) = model.partition_buffer {
        spec.extend(quote!(.with_partition_buffer(#n)));
    }
    if let Some(variant) = &model.ordering {
        spec.extend(quote!(.with_ordering(#krate::Ordering::#variant)));
    }

    let constants = (!model.sinks.is_empty()).then(|| {
        let consts = model.sinks.iter().map(|(name, constant, topic)| {
            let doc = format!("The sink `{name}` (default topic `{topic}`), for `Output::to`.");
            quote! {
                #[doc = #doc]
                #vis const #constant: &'static str = #name;
            }
        });
        quote! {
            #[automatically_derived]
            impl #impl_generics #ident #ty_generics #where_clause {
                #(#consts)*
            }
        }
    });

    quote! {
        #[doc(hidden)]
        #[allow(non_upper_case_globals, unused_qualifications)]
        const _: () = {
            #[automatically_derived]
            impl #impl_generics #krate::Worker for #ident #ty_generics #where_clause {
                type Codec = #codec;
                const SPEC: #krate::WorkerSpec = #spec;
            }

            #constants
        };
    }
}
