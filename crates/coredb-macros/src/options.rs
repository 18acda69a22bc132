//! Parsing of `#[column(..)]` field options and `#[coredb::model(..)]` arguments.

use proc_macro2::{Span, TokenStream};
use syn::parse::Parser;
use syn::spanned::Spanned;
use syn::{Attribute, Ident, LitBool, LitInt, LitStr, Path};

use crate::mixins::{Mixin, MIXINS};

/// The options of one field, from its `#[column(..)]` attributes.
#[derive(Default)]
pub struct FieldOptions {
    pub rename: Option<LitStr>,
    pub skip: Option<Span>,
    pub flatten: Option<Span>,
    pub primary_key: Option<Span>,
    pub unique: bool,
    pub index: bool,
    pub length: Option<LitInt>,
    pub precision: Option<LitInt>,
    pub scale: Option<LitInt>,
    pub default: Option<LitStr>,
    pub sql_type: Option<LitStr>,
    pub identity: Option<LitBool>,
    pub references: Option<Path>,
    pub on_delete: Option<LitStr>,
    /// Model-only options that were given, for #[derive(FromRow)]'s message.
    pub model_only: Vec<(&'static str, Span)>,
}

const FIELD_KEYS: &str = "rename, skip, flatten, primary_key, unique, index, length, precision, scale, default, sql_type, identity, references, on_delete";

pub fn is_column_attr(attr: &Attribute) -> bool {
    attr.path().is_ident("column")
}

impl FieldOptions {
    pub fn parse(attrs: &[Attribute]) -> syn::Result<Self> {
        let mut options = FieldOptions::default();
        for attr in attrs.iter().filter(|a| is_column_attr(a)) {
            attr.parse_nested_meta(|meta| {
                let key = meta
                    .path
                    .get_ident()
                    .map(Ident::to_string)
                    .unwrap_or_default();
                let span = meta.path.span();
                match key.as_str() {
                    "rename" => options.rename = Some(meta.value()?.parse()?),
                    "skip" => options.skip = Some(span),
                    "flatten" => options.flatten = Some(span),
                    "primary_key" => {
                        options.primary_key = Some(span);
                        options.model_only.push(("primary_key", span));
                    }
                    "unique" => {
                        options.unique = true;
                        options.model_only.push(("unique", span));
                    }
                    "index" => {
                        options.index = true;
                        options.model_only.push(("index", span));
                    }
                    "length" => {
                        let length: LitInt = meta.value()?.parse()?;
                        let n: u32 = length.base10_parse()?;
                        if n == 0 || n > 10_485_760 {
                            return Err(syn::Error::new(
                                length.span(),
                                "`length` must be between 1 and 10485760 (PostgreSQL's varchar limit)",
                            ));
                        }
                        options.length = Some(length);
                        options.model_only.push(("length", span));
                    }
                    "precision" => {
                        let precision: LitInt = meta.value()?.parse()?;
                        let n: u32 = precision.base10_parse()?;
                        if n == 0 || n > 1000 {
                            return Err(syn::Error::new(
                                precision.span(),
                                "`precision` must be between 1 and 1000",
                            ));
                        }
                        options.precision = Some(precision);
                        options.model_only.push(("precision", span));
                    }
                    "scale" => {
                        let scale: LitInt = meta.value()?.parse()?;
                        scale.base10_parse::<u32>()?;
                        options.scale = Some(scale);
                        options.model_only.push(("scale", span));
                    }
                    "default" => {
                        options.default = Some(meta.value()?.parse()?);
                        options.model_only.push(("default", span));
                    }
                    "sql_type" => {
                        options.sql_type = Some(meta.value()?.parse()?);
                        options.model_only.push(("sql_type", span));
                    }
                    "identity" => {
                        options.identity = Some(if meta.input.peek(syn::Token![=]) {
                            meta.value()?.parse()?
                        } else {
                            LitBool::new(true, span)
                        });
                        options.model_only.push(("identity", span));
                    }
                    "references" => {
                        options.references = Some(meta.value()?.parse()?);
                        options.model_only.push(("references", span));
                    }
                    "on_delete" => {
                        let action: LitStr = meta.value()?.parse()?;
                        let normalized = action.value().to_ascii_uppercase();
                        if !["CASCADE", "RESTRICT", "SET NULL", "SET DEFAULT", "NO ACTION"]
                            .contains(&normalized.as_str())
                        {
                            return Err(syn::Error::new(
                                action.span(),
                                "`on_delete` is one of \"cascade\", \"restrict\", \"set null\", \"set default\", \"no action\"",
                            ));
                        }
                        options.on_delete = Some(LitStr::new(&normalized, action.span()));
                        options.model_only.push(("on_delete", span));
                    }
                    _ => {
                        return Err(meta.error(format!(
                            "unknown column option; the options are {FIELD_KEYS}"
                        )))
                    }
                }
                Ok(())
            })?;
        }
        Ok(options)
    }
}

/// The arguments of `#[coredb::model(..)]`.
pub struct ModelOptions {
    pub table: LitStr,
    pub schema: Option<LitStr>,
    pub mixins: Vec<(&'static Mixin, Span)>,
    pub uuid_v4: bool,
    pub constructor: bool,
}

const MODEL_KEYS: &str = "table, schema, mixin, mixins, uuid, constructor";

impl ModelOptions {
    pub fn parse(args: TokenStream) -> syn::Result<Self> {
        let mut table: Option<LitStr> = None;
        let mut schema = None;
        let mut mixins = Vec::new();
        let mut uuid_v4 = false;
        let mut constructor = true;
        let parser = syn::meta::parser(|meta| {
            let key = meta
                .path
                .get_ident()
                .map(Ident::to_string)
                .unwrap_or_default();
            match key.as_str() {
                "table" => {
                    let name: LitStr = meta.value()?.parse()?;
                    check_identifier(&name, "table")?;
                    table = Some(name);
                }
                "schema" => {
                    let name: LitStr = meta.value()?.parse()?;
                    check_identifier(&name, "schema")?;
                    schema = Some(name);
                }
                "mixin" => {
                    let path: Path = meta.value()?.parse()?;
                    mixins.push(find_mixin(&path)?);
                }
                "mixins" => meta.parse_nested_meta(|inner| {
                    mixins.push(find_mixin(&inner.path)?);
                    Ok(())
                })?,
                "uuid" => {
                    let version: LitStr = meta.value()?.parse()?;
                    uuid_v4 = match version.value().as_str() {
                        "v4" => true,
                        "v7" => false,
                        _ => {
                            return Err(syn::Error::new(
                                version.span(),
                                "`uuid` is \"v7\" (the default: time-ordered, for index locality) or \"v4\" (random)",
                            ))
                        }
                    };
                }
                "constructor" => {
                    let value: LitBool = meta.value()?.parse()?;
                    constructor = value.value;
                }
                _ => {
                    return Err(meta.error(format!(
                        "unknown model option; the options are {MODEL_KEYS}"
                    )))
                }
            }
            Ok(())
        });
        parser.parse2(args)?;
        let table = table.ok_or_else(|| {
            syn::Error::new(
                Span::call_site(),
                "a model needs its table name: #[coredb::model(table = \"users\")]",
            )
        })?;
        Ok(ModelOptions {
            table,
            schema,
            mixins,
            uuid_v4,
            constructor,
        })
    }
}

fn check_identifier(name: &LitStr, what: &str) -> syn::Result<()> {
    let value = name.value();
    if value.is_empty() || value.len() > 63 {
        return Err(syn::Error::new(
            name.span(),
            format!("the {what} name must be 1 to 63 bytes long (PostgreSQL's identifier limit)"),
        ));
    }
    Ok(())
}

fn find_mixin(path: &Path) -> syn::Result<(&'static Mixin, Span)> {
    let name = path
        .segments
        .last()
        .map(|s| s.ident.to_string())
        .unwrap_or_default();
    if let Some(mixin) = MIXINS.iter().find(|m| m.name == name) {
        return Ok((mixin, path.span()));
    }
    let known = MIXINS.iter().map(|m| m.name).collect::<Vec<_>>().join(", ");
    // core.db spells them UUIDMixin, UUIDStringMixin, ...
    let message = match MIXINS.iter().find(|m| m.name.eq_ignore_ascii_case(&name)) {
        Some(close) => format!(
            "unknown mixin `{name}`; did you mean `{}`? The mixins are {known}",
            close.name
        ),
        None => format!("unknown mixin `{name}`; the mixins are {known}"),
    };
    Err(syn::Error::new(path.span(), message))
}
