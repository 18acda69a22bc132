//! `#[derive(FromRow)]`: columns to fields by name (found by name in a result's first row, by
//! position in the rest).

use proc_macro2::TokenStream;
use quote::{quote, quote_spanned};
use syn::ext::IdentExt;
use syn::spanned::Spanned;
use syn::{Data, DeriveInput, Fields};

use crate::options::FieldOptions;

pub fn expand(input: &DeriveInput) -> syn::Result<TokenStream> {
    let fields = match &input.data {
        Data::Struct(data) => match &data.fields {
            Fields::Named(fields) => &fields.named,
            _ => {
                return Err(syn::Error::new(
                    input.ident.span(),
                    "#[derive(FromRow)] maps columns to fields by name, so it needs a struct with named fields; a tuple type such as (i32, String) is already FromRow",
                ))
            }
        },
        _ => {
            return Err(syn::Error::new(
                input.ident.span(),
                "#[derive(FromRow)] applies to structs with named fields",
            ))
        }
    };
    let mut inits = Vec::new();
    let mut reads_row = false;
    for field in fields {
        let options = FieldOptions::parse(&field.attrs)?;
        if let Some((key, span)) = options.model_only.first() {
            return Err(syn::Error::new(
                *span,
                format!("`{key}` is a column option of #[coredb::model]; #[derive(FromRow)] takes rename, skip and flatten"),
            ));
        }
        let ident = field.ident.as_ref().expect("named fields");
        let ty = &field.ty;
        let init = match (options.skip, options.flatten, &options.rename) {
            (Some(_), None, None) => quote!(::core::default::Default::default()),
            (None, Some(_), None) => {
                reads_row = true;
                quote_spanned!(ty.span()=> <#ty as ::coredb::FromRow>::from_row_at(row, positions)?)
            }
            (None, None, rename) => {
                reads_row = true;
                let name = rename
                    .as_ref()
                    .map_or_else(|| ident.unraw().to_string(), |r| r.value());
                quote_spanned!(ty.span()=> positions.get::<#ty>(row, #name)?)
            }
            _ => {
                return Err(syn::Error::new(
                    ident.span(),
                    "`skip`, `flatten` and `rename` exclude each other: a skipped field reads no column, a flattened one reads its own struct's columns",
                ))
            }
        };
        inits.push(quote!(#ident: #init));
    }
    let name = &input.ident;
    let (impl_generics, ty_generics, where_clause) = input.generics.split_for_impl();
    let unused = (!reads_row).then(|| quote!(let _ = (row, positions);));
    Ok(quote! {
        impl #impl_generics ::coredb::FromRow for #name #ty_generics #where_clause {
            fn from_row(row: &::coredb::Row) -> ::coredb::Result<Self> {
                Self::from_row_at(row, &mut ::coredb::ColumnPositions::new())
            }

            fn from_row_at(
                row: &::coredb::Row,
                positions: &mut ::coredb::ColumnPositions,
            ) -> ::coredb::Result<Self> {
                #unused
                ::core::result::Result::Ok(Self { #(#inits,)* })
            }
        }
    })
}
