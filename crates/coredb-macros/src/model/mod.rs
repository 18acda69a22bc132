//! `#[coredb::model]`: the struct's table, row mapping, statements and constructor.
//!
//! `parse` reads the struct and its options into a plain description, `sql` writes the
//! statements' text from it, and the `expand` module writes the code.

use proc_macro2::TokenStream;
use quote::quote;
use syn::DeriveInput;

use crate::options::ModelOptions;

mod expand;
mod parse;
mod sql;

/// `#[coredb::model(args)]` on `item`: the struct, with its mixins' fields, and the code for it.
pub fn expand(args: TokenStream, item: TokenStream) -> syn::Result<TokenStream> {
    let options = ModelOptions::parse(args)?;
    let mut input: DeriveInput = syn::parse2(item)?;
    let model = parse::read(&options, &mut input)?;
    expand::add_mixin_fields(parse::named_fields(&mut input)?, &model, options.uuid_v4)?;
    let generated = expand::items(&options, &model);
    Ok(quote! {
        #input
        #generated
    })
}
