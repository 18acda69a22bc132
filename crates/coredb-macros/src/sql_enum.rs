//! `#[derive(SqlEnum)]`: a postgres-types enum as a model column type (`CREATE TYPE .. AS ENUM`).

use proc_macro2::TokenStream;
use quote::quote;
use syn::{Attribute, Data, DeriveInput, Fields, LitStr};

/// The `name` and `rename_all` of `#[postgres(..)]` attributes (postgres-types' own).
#[derive(Default)]
struct PostgresOptions {
    name: Option<LitStr>,
    rename_all: Option<LitStr>,
}

fn postgres_options(attrs: &[Attribute]) -> syn::Result<PostgresOptions> {
    let mut options = PostgresOptions::default();
    for attr in attrs.iter().filter(|a| a.path().is_ident("postgres")) {
        attr.parse_nested_meta(|meta| {
            if meta.path.is_ident("name") {
                options.name = Some(meta.value()?.parse()?);
            } else if meta.path.is_ident("rename_all") {
                options.rename_all = Some(meta.value()?.parse()?);
            } else if meta.input.peek(syn::Token![=]) {
                // Other postgres-types options (e.g. allow_mismatch) do not change the labels.
                let _: syn::Expr = meta.value()?.parse()?;
            }
            Ok(())
        })?;
    }
    Ok(options)
}

pub fn expand(input: &DeriveInput) -> syn::Result<TokenStream> {
    let Data::Enum(data) = &input.data else {
        return Err(syn::Error::new(
            input.ident.span(),
            "#[derive(SqlEnum)] applies to enums whose variants have no fields",
        ));
    };
    let options = postgres_options(&input.attrs)?;
    let rename_all = options.rename_all.as_ref().map(|r| (r.value(), r.span()));
    if let Some((rule, span)) = &rename_all {
        if rename(rule, "Probe").is_none() {
            return Err(syn::Error::new(
                *span,
                "rename_all is one of lowercase, UPPERCASE, PascalCase, camelCase, snake_case, SCREAMING_SNAKE_CASE, kebab-case, SCREAMING-KEBAB-CASE, Train-Case",
            ));
        }
    }
    let mut labels = Vec::new();
    for variant in &data.variants {
        if !matches!(variant.fields, Fields::Unit) {
            return Err(syn::Error::new(
                variant.ident.span(),
                "an SQL enum's variants have no fields",
            ));
        }
        let own = postgres_options(&variant.attrs)?;
        let label = match (own.name, &rename_all) {
            (Some(name), _) => name.value(),
            (None, Some((rule, _))) => {
                rename(rule, &variant.ident.to_string()).expect("checked above")
            }
            (None, None) => variant.ident.to_string(),
        };
        labels.push(label);
    }
    let ident = &input.ident;
    // postgres-types matches the type by this exact name; so is the type created.
    let type_name = options
        .name
        .map_or_else(|| ident.to_string(), |n| n.value());
    let (impl_generics, ty_generics, where_clause) = input.generics.split_for_impl();
    Ok(quote! {
        #[automatically_derived]
        impl #impl_generics ::coredb::model::SqlType for #ident #ty_generics #where_clause {
            const TYPE: ::coredb::model::SqlTypeName = ::coredb::model::SqlTypeName::Enum(&::coredb::model::EnumType {
                schema: ::core::option::Option::None,
                name: #type_name,
                variants: &[#(#labels),*],
            });
        }
    })
}

/// Applies a postgres-types `rename_all` rule to a variant name.
fn rename(rule: &str, variant: &str) -> Option<String> {
    let words = split_words(variant);
    let lower: Vec<String> = words.iter().map(|w| w.to_lowercase()).collect();
    let capitalized = || {
        lower
            .iter()
            .map(|w| {
                let mut chars = w.chars();
                chars.next().map_or_else(String::new, |first| {
                    first.to_uppercase().chain(chars).collect()
                })
            })
            .collect::<Vec<_>>()
    };
    Some(match rule {
        "lowercase" => variant.to_lowercase(),
        "UPPERCASE" => variant.to_uppercase(),
        "PascalCase" => capitalized().concat(),
        "camelCase" => {
            let mut words = capitalized();
            if let Some(first) = words.first_mut() {
                *first = first.to_lowercase();
            }
            words.concat()
        }
        "snake_case" => lower.join("_"),
        "SCREAMING_SNAKE_CASE" => lower.join("_").to_uppercase(),
        "kebab-case" => lower.join("-"),
        "SCREAMING-KEBAB-CASE" => lower.join("-").to_uppercase(),
        "Train-Case" => capitalized().join("-"),
        _ => return None,
    })
}

/// `HttpServerError` -> `Http`, `Server`, `Error`; `HTTPServer` -> `HTTP`, `Server`.
fn split_words(name: &str) -> Vec<String> {
    let chars: Vec<char> = name.chars().collect();
    let mut words = Vec::new();
    let mut current = String::new();
    for (i, &c) in chars.iter().enumerate() {
        if c == '_' || c == '-' {
            if !current.is_empty() {
                words.push(std::mem::take(&mut current));
            }
            continue;
        }
        let boundary = c.is_uppercase()
            && !current.is_empty()
            && (i > 0 && (chars[i - 1].is_lowercase() || chars[i - 1].is_ascii_digit())
                || chars.get(i + 1).is_some_and(|n| n.is_lowercase())
                    && chars[i - 1].is_uppercase());
        if boundary {
            words.push(std::mem::take(&mut current));
        }
        current.push(c);
    }
    if !current.is_empty() {
        words.push(current);
    }
    words
}

#[cfg(test)]
mod tests {
    use super::rename;

    #[test]
    fn rename_all_rules_match_postgres_types() {
        let cases = [
            ("lowercase", "SoSo", "soso"),
            ("UPPERCASE", "SoSo", "SOSO"),
            ("PascalCase", "so_so", "SoSo"),
            ("camelCase", "SoSo", "soSo"),
            ("snake_case", "HttpServerError", "http_server_error"),
            ("snake_case", "HTTPServer", "http_server"),
            ("snake_case", "Error404", "error404"),
            ("SCREAMING_SNAKE_CASE", "SoSo", "SO_SO"),
            ("kebab-case", "SoSo", "so-so"),
            ("SCREAMING-KEBAB-CASE", "SoSo", "SO-SO"),
            ("Train-Case", "SoSo", "So-So"),
        ];
        for (rule, variant, label) in cases {
            assert_eq!(
                rename(rule, variant).as_deref(),
                Some(label),
                "{rule} {variant}"
            );
        }
        assert_eq!(rename("Title Case", "SoSo"), None);
    }
}
