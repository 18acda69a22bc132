//! `#[coredb_testkit::test]`: an async test that gets a fresh database of its own.

use proc_macro2::TokenStream;
use quote::quote;
use syn::{FnArg, ItemFn, Pat, Type};

pub(crate) fn expand(args: TokenStream, item: TokenStream) -> syn::Result<TokenStream> {
    if !args.is_empty() {
        return Err(syn::Error::new_spanned(
            args,
            "#[coredb_testkit::test] takes no arguments",
        ));
    }
    let mut function: ItemFn = syn::parse2(item)?;
    if function.sig.asyncness.is_none() {
        return Err(syn::Error::new_spanned(
            function.sig.fn_token,
            "#[coredb_testkit::test] functions must be `async fn`",
        ));
    }
    let inputs = std::mem::take(&mut function.sig.inputs);
    if inputs.len() > 1 {
        return Err(syn::Error::new_spanned(
            inputs,
            "#[coredb_testkit::test] functions take at most one argument: a `TestDatabase` or a `DatabaseManager`",
        ));
    }
    let binding = match inputs.first() {
        None => quote! { let _ = &__coredb_test_database; },
        Some(FnArg::Typed(arg)) => {
            let Pat::Ident(ident) = &*arg.pat else {
                return Err(syn::Error::new_spanned(
                    &arg.pat,
                    "expected an argument name",
                ));
            };
            let name = &ident.ident;
            let mutability = &ident.mutability;
            let ty = &arg.ty;
            let last = match &*arg.ty {
                Type::Path(path) => path.path.segments.last().map(|s| s.ident.to_string()),
                _ => None,
            };
            match last.as_deref() {
                // The declared type is written out, so the test's own import of it is used.
                Some("TestDatabase") => {
                    quote! { let #mutability #name: #ty = __coredb_test_database; }
                }
                Some("DatabaseManager") => {
                    quote! { let #mutability #name: #ty = __coredb_test_database.manager().clone(); }
                }
                _ => {
                    return Err(syn::Error::new_spanned(
                        &arg.ty,
                        "the argument of a #[coredb_testkit::test] function must be a `TestDatabase` or a `DatabaseManager`",
                    ))
                }
            }
        }
        Some(FnArg::Receiver(r)) => {
            return Err(syn::Error::new_spanned(
                r,
                "#[coredb_testkit::test] functions cannot take self",
            ))
        }
    };
    function.sig.asyncness = None;
    let body = &function.block;
    let attrs = &function.attrs;
    let vis = &function.vis;
    let sig = &function.sig;
    Ok(quote! {
        #[::core::prelude::v1::test]
        #(#attrs)*
        #vis #sig {
            ::coredb_testkit::__private::block_on(async move {
                let __coredb_test_database = ::coredb_testkit::TestDatabase::new()
                    .await
                    .expect("#[coredb_testkit::test] could not create the test's database");
                // Process-wide calls (get_session_context(), ...) reach the test's database.
                let __coredb_test_scope = __coredb_test_database.manager().enter_test_scope();
                #binding
                #body
            })
        }
    })
}
