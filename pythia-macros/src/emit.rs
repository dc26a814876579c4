//! Generating the `Worker` impl and the sink constants from a checked model,
//! and what stands in for them when the derive reported errors.

use proc_macro2::TokenStream;
use quote::quote;

use crate::check::Model;

/// The path of the runtime crate as the user's crate sees it: `::pythia_core`
/// when it depends on `pythia-core`, else `::pythia_kafka::core` or
/// `::pythia_rabbitmq::core`.
pub(crate) fn default_crate_path() -> syn::Path {
    use proc_macro_crate::{FoundCrate, crate_name};
    let path = match crate_name("pythia-core") {
        Ok(FoundCrate::Name(name)) => format!("::{name}"),
        // Inside pythia-core's own tests, `extern crate self as pythia_core` applies.
        Ok(FoundCrate::Itself) | Err(_) => match crate_name("pythia-kafka") {
            Ok(FoundCrate::Name(name)) => format!("::{name}::core"),
            Ok(FoundCrate::Itself) => "::pythia_kafka::core".to_owned(),
            Err(_) => match crate_name("pythia-rabbitmq") {
                Ok(FoundCrate::Name(name)) => format!("::{name}::core"),
                Ok(FoundCrate::Itself) | Err(_) => "::pythia_core".to_owned(),
            },
        },
    };
    syn::parse_str(&path).expect("a crate path parses")
}

/// The generated items.
pub(crate) fn emit(model: &Model<'_>) -> TokenStream {
    let krate = &model.krate;
    let ident = &model.input.ident;
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
        spec.extend(quote!(.with_ordering(#krate::MessageOrder::#variant)));
    }

    let constants = constants(model);

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

/// What stands in for the items when the derive reported errors, next to
/// them: a `Worker` impl and the sink constants, so that uses of the worker
/// (`Billing.run()`, `Self::BILLING`) add no errors of their own.
///
/// The impl applies only where the type's `Process` impl and the codec
/// allow it: a missing `Process` impl or a codec that does not fit is
/// reported where the worker is used, not as more errors at the derive.
pub(crate) fn fallback(model: &Model<'_>) -> TokenStream {
    let krate = &model.krate;
    let ident = &model.input.ident;
    let (impl_generics, ty_generics, where_clause) = model.input.generics.split_for_impl();
    let codec = &model.codec;
    let this = quote!(#ident #ty_generics);
    let process = quote!(<#this as #krate::Process>);
    // `for<'__pythia>` keeps a bound that names no generic parameter from
    // being an error when it does not hold (`trivial_bounds` is unstable):
    // the impl then just does not apply.
    let mut predicates = where_clause
        .map(|w| w.predicates.iter().map(|p| quote!(#p,)).collect())
        .unwrap_or_else(TokenStream::new);
    predicates.extend(quote! {
        for<'__pythia> #this: #krate::Process,
        for<'__pythia> #codec: #krate::codec::Decode<#process::Input>
            + #krate::codec::Encode<#process::Output>,
    });
    let constants = constants(model);

    quote! {
        #[doc(hidden)]
        #[allow(non_upper_case_globals, unused_qualifications)]
        const _: () = {
            #[automatically_derived]
            impl #impl_generics #krate::Worker for #this where #predicates {
                type Codec = #codec;
            }

            #constants
        };
    }
}

/// One constant per sink, holding its name (`Self::BILLING`); a name
/// declared twice (an error) gets one.
fn constants(model: &Model<'_>) -> Option<TokenStream> {
    if model.sinks.is_empty() {
        return None;
    }
    let ident = &model.input.ident;
    let vis = &model.input.vis;
    let (impl_generics, ty_generics, where_clause) = model.input.generics.split_for_impl();
    let mut seen = Vec::new();
    let consts = model.sinks.iter().filter_map(|(name, constant, topic)| {
        if seen.contains(&constant) {
            return None;
        }
        seen.push(constant);
        let doc = format!("The sink `{name}` (default topic `{topic}`), for `Output::to`.");
        Some(quote! {
            #[doc = #doc]
            #vis const #constant: &'static str = #name;
        })
    });
    let consts: Vec<TokenStream> = consts.collect();
    Some(quote! {
        #[automatically_derived]
        impl #impl_generics #ident #ty_generics #where_clause {
            #(#consts)*
        }
    })
}
