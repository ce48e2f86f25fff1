//! `#[derive(Event)]` for [trackway](https://docs.rs/trackway): a type that knows its event
//! name, whose fields are its properties. Use it through `trackway`'s `derive` feature, as
//! `trackway::Event`; this crate only generates the code.
//!
//! ```
//! #[derive(serde::Serialize, trackway::Event)]
//! #[event(name = "Order Completed")]
//! struct OrderCompleted {
//!     order_id: String,
//!     revenue: f64,
//! }
//!
//! use trackway::Event;
//! assert_eq!(OrderCompleted::NAME, "Order Completed");
//! ```
//!
//! The name is required and must not be empty:
//!
//! ```compile_fail
//! #[derive(serde::Serialize, trackway::Event)]
//! struct Unnamed {
//!     order_id: String,
//! }
//! ```
//!
//! ```compile_fail
//! #[derive(serde::Serialize, trackway::Event)]
//! #[event(name = "")]
//! struct Empty {
//!     order_id: String,
//! }
//! ```
//!
//! Properties are a JSON object, so the type is a struct with named fields (or a unit
//! struct, for an event without properties); a tuple struct or an enum is refused:
//!
//! ```compile_fail
//! #[derive(serde::Serialize, trackway::Event)]
//! #[event(name = "Pair")]
//! struct Pair(String, f64);
//! ```

use proc_macro::TokenStream;
use quote::quote;
use syn::{Data, DeriveInput, Fields, LitStr, parse_macro_input};

/// Implements `trackway::Event` for a struct with named fields (or a unit struct), its name
/// given by `#[event(name = "...")]`.
#[proc_macro_derive(Event, attributes(event))]
pub fn derive_event(input: TokenStream) -> TokenStream {
    let input = parse_macro_input!(input as DeriveInput);
    match expand(&input) {
        Ok(tokens) => tokens.into(),
        Err(error) => error.to_compile_error().into(),
    }
}

fn expand(input: &DeriveInput) -> syn::Result<proc_macro2::TokenStream> {
    match &input.data {
        Data::Struct(data) if matches!(data.fields, Fields::Named(_) | Fields::Unit) => {}
        _ => {
            return Err(syn::Error::new(
                input.ident.span(),
                "#[derive(Event)] needs a struct with named fields (its properties) or a unit \
                 struct: properties are a JSON object",
            ));
        }
    }
    let name = event_name(input)?;
    let ident = &input.ident;
    let (impl_generics, type_generics, where_clause) = input.generics.split_for_impl();
    Ok(quote! {
        impl #impl_generics ::trackway::Event for #ident #type_generics #where_clause {
            const NAME: &'static str = #name;
        }
    })
}

/// The `name` of the one `#[event(name = "...")]` attribute, checked.
fn event_name(input: &DeriveInput) -> syn::Result<LitStr> {
    let mut name: Option<LitStr> = None;
    for attribute in input.attrs.iter().filter(|a| a.path().is_ident("event")) {
        attribute.parse_nested_meta(|meta| {
            if meta.path.is_ident("name") {
                if name.is_some() {
                    return Err(meta.error("the event name is given twice"));
                }
                name = Some(meta.value()?.parse()?);
                Ok(())
            } else {
                Err(meta.error("unknown #[event] setting; the one setting is `name = \"...\"`"))
            }
        })?;
    }
    let Some(name) = name else {
        return Err(syn::Error::new(
            input.ident.span(),
            "#[derive(Event)] needs the event's name: add #[event(name = \"Order Completed\")]",
        ));
    };
    if name.value().trim().is_empty() {
        return Err(syn::Error::new(
            name.span(),
            "the event name must not be empty",
        ));
    }
    Ok(name)
}
