//! `#[coredb::model]`: the struct's table, row mapping, statements and constructor.

use proc_macro2::{Span, TokenStream};
use quote::{format_ident, quote, quote_spanned};
use syn::ext::IdentExt;
use syn::parse::Parser;
use syn::punctuated::Punctuated;
use syn::spanned::Spanned;
use syn::{Data, DeriveInput, Field, Fields, Ident, LitStr, Path, Token, Type};

use crate::mixins::MixinColumn;
use crate::options::{is_column_attr, FieldOptions, ModelOptions};

/// How a column gets its value (mirrors `coredb::model::ColumnRole`).
#[derive(Clone, Copy, PartialEq, Eq)]
enum Role {
    Plain,
    Identity,
    GeneratedUuid,
    GeneratedUuidString,
    CreatedAt,
    UpdatedAt,
}

impl Role {
    fn runtime(self) -> TokenStream {
        match self {
            Role::Plain => quote!(::coredb::model::ColumnRole::Plain),
            Role::Identity => quote!(::coredb::model::ColumnRole::Identity),
            Role::GeneratedUuid | Role::GeneratedUuidString => {
                quote!(::coredb::model::ColumnRole::GeneratedUuid)
            }
            Role::CreatedAt => quote!(::coredb::model::ColumnRole::CreatedAt),
            Role::UpdatedAt => quote!(::coredb::model::ColumnRole::UpdatedAt),
        }
    }

    fn is_timestamp(self) -> bool {
        matches!(self, Role::CreatedAt | Role::UpdatedAt)
    }
}

struct ColumnSpec {
    field: Ident,
    ty: Type,
    name: String,
    role: Role,
    primary_key: bool,
    unique: bool,
    index: bool,
    default: Option<LitStr>,
    sql_type: TokenStream,
    nullable: TokenStream,
    /// False with `sql_type = ".."`: the field's type then needs only ToSql/FromSql.
    typed: bool,
    references: Option<(Path, Option<LitStr>)>,
    mixin: Option<&'static str>,
    checks: Vec<TokenStream>,
}

impl ColumnSpec {
    fn from_mixin(column: MixinColumn, mixin: &'static str) -> Self {
        let field = Ident::new(column.name(), Span::call_site());
        let (ty, role, sql_type): (Type, Role, TokenStream) = match column {
            MixinColumn::UuidKey | MixinColumn::UuidField => (
                syn::parse_quote!(::coredb::model::Uuid),
                Role::GeneratedUuid,
                quote!(::coredb::model::SqlTypeName::Uuid),
            ),
            MixinColumn::UuidStringKey => (
                syn::parse_quote!(::std::string::String),
                Role::GeneratedUuidString,
                quote!(::coredb::model::SqlTypeName::Varchar(36)),
            ),
            MixinColumn::CreatedAt | MixinColumn::UpdatedAt => (
                syn::parse_quote!(::coredb::model::DateTime<::coredb::model::Utc>),
                if column == MixinColumn::CreatedAt {
                    Role::CreatedAt
                } else {
                    Role::UpdatedAt
                },
                quote!(::coredb::model::SqlTypeName::Timestamptz),
            ),
        };
        ColumnSpec {
            field,
            ty,
            name: column.name().to_owned(),
            role,
            primary_key: matches!(column, MixinColumn::UuidKey | MixinColumn::UuidStringKey),
            unique: column == MixinColumn::UuidField,
            index: false,
            default: None,
            sql_type,
            nullable: quote!(false),
            typed: true,
            references: None,
            mixin: Some(mixin),
            checks: Vec::new(),
        }
    }

    /// The field as the mixin adds it to the struct.
    fn mixin_field(&self, uuid_v4: bool) -> syn::Result<Field> {
        let version = if uuid_v4 { "v4" } else { "v7" };
        let mixin = self.mixin.unwrap_or_default();
        let doc = match self.role {
            Role::GeneratedUuid if self.primary_key => format!(
                "Primary key (`uuid`, from `{mixin}`): a UUID{version} made when the struct is built."
            ),
            Role::GeneratedUuidString => format!(
                "Primary key (`varchar(36)`, from `{mixin}`): a UUID{version} as text, made when the struct is built."
            ),
            Role::GeneratedUuid => format!(
                "A unique UUID beside the primary key (`uuid`, from `{mixin}`): a UUID{version} made when the struct is built."
            ),
            Role::CreatedAt => format!(
                "When the row was inserted (`timestamptz`, from `{mixin}`): the database clock, read back by insert."
            ),
            _ => format!(
                "When the row was last written (`timestamptz`, from `{mixin}`): the database clock, moved by every update."
            ),
        };
        let ident = &self.field;
        let ty = &self.ty;
        // A model may never read its timestamps itself; that is no reason to warn.
        Field::parse_named.parse2(quote!(#[doc = #doc] #[allow(dead_code)] pub #ident: #ty))
    }

    /// `const` description for `coredb::model::Column`.
    fn runtime(&self) -> TokenStream {
        let name = &self.name;
        let field = self.field.unraw().to_string();
        let sql_type = &self.sql_type;
        let nullable = &self.nullable;
        let primary_key = self.primary_key;
        let unique = self.unique;
        let index = self.index;
        let default = option_tokens(self.default.as_ref().map(|d| quote!(#d)));
        let role = self.role.runtime();
        let references = option_tokens(self.references.as_ref().map(|(path, on_delete)| {
            let on_delete = option_tokens(on_delete.as_ref().map(|a| quote!(#a)));
            quote_spanned! {path.span()=>
                ::coredb::model::ForeignKey {
                    table: <#path as ::coredb::model::Model>::table,
                    on_delete: #on_delete,
                }
            }
        }));
        let mixin = option_tokens(self.mixin.map(|m| quote!(#m)));
        quote! {
            ::coredb::model::Column {
                name: #name,
                field: #field,
                sql_type: #sql_type,
                nullable: #nullable,
                primary_key: #primary_key,
                unique: #unique,
                index: #index,
                default: #default,
                role: #role,
                references: #references,
                mixin: #mixin,
            }
        }
    }

    /// Reads the column from `row`.
    fn read(&self) -> TokenStream {
        let ty = &self.ty;
        let name = &self.name;
        if self.typed {
            quote_spanned!(ty.span()=> ::coredb::model::__private::read::<#ty>(row, #name))
        } else {
            quote_spanned!(ty.span()=> ::coredb::named_column::<#ty>(row, #name))
        }
    }

    /// The field as a statement parameter.
    fn param(&self) -> TokenStream {
        let ty = &self.ty;
        let field = &self.field;
        if self.typed {
            quote_spanned!(ty.span()=> ::coredb::model::__private::param::<#ty>(&self.#field))
        } else {
            quote_spanned!(ty.span()=> &self.#field as ::coredb::SqlParam<'_>)
        }
    }
}

fn option_tokens(value: Option<TokenStream>) -> TokenStream {
    match value {
        Some(v) => quote!(::core::option::Option::Some(#v)),
        None => quote!(::core::option::Option::None),
    }
}

/// The last path segment of a type, e.g. `Option` for `std::option::Option<String>`.
fn type_name(ty: &Type) -> Option<String> {
    match ty {
        Type::Path(path) if path.qself.is_none() => {
            path.path.segments.last().map(|s| s.ident.to_string())
        }
        _ => None,
    }
}

fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

pub fn expand(args: TokenStream, item: TokenStream) -> syn::Result<TokenStream> {
    let options = ModelOptions::parse(args)?;
    let mut input: DeriveInput = syn::parse2(item)?;
    reject_derived_from_row(&input)?;
    if !input.generics.params.is_empty() {
        return Err(syn::Error::new(
            input.generics.span(),
            "a model cannot be generic: it maps one table",
        ));
    }
    let model = input.ident.clone();
    let Data::Struct(data) = &mut input.data else {
        return Err(syn::Error::new(
            model.span(),
            "#[coredb::model] applies to structs with named fields",
        ));
    };
    let Fields::Named(named) = &mut data.fields else {
        return Err(syn::Error::new(
            model.span(),
            "#[coredb::model] applies to structs with named fields: each field is a column",
        ));
    };

    // The mixins' columns, each added once.
    let mut leading = Vec::new();
    let mut trailing = Vec::new();
    let mut added: Vec<(&'static str, &'static str)> = Vec::new();
    for (mixin, span) in &options.mixins {
        for column in mixin.columns {
            if let Some((_, other)) = added.iter().find(|(name, _)| *name == column.name()) {
                return Err(syn::Error::new(
                    *span,
                    format!(
                        "mixins {other} and {} both add the column `{}`; use one of them (UuidTimestampMixin and UuidStringTimestampMixin already include TimestampMixin)",
                        mixin.name,
                        column.name()
                    ),
                ));
            }
            added.push((column.name(), mixin.name));
            let spec = ColumnSpec::from_mixin(*column, mixin.name);
            if column.leads() {
                leading.push(spec);
            } else {
                trailing.push(spec);
            }
        }
    }

    let mut own = Vec::new();
    let mut skipped: Vec<Ident> = Vec::new();
    for field in named.named.iter_mut() {
        let field_options = FieldOptions::parse(&field.attrs)?;
        field.attrs.retain(|a| !is_column_attr(a));
        let ident = field.ident.clone().expect("named fields");
        if let Some((column, mixin)) = added.iter().find(|(name, _)| ident.unraw() == *name) {
            return Err(syn::Error::new(
                ident.span(),
                format!("the field `{column}` clashes with the column {mixin} adds; remove the field (the mixin declares it) or rename it"),
            ));
        }
        if let Some(span) = field_options.flatten {
            return Err(syn::Error::new(
                span,
                "`flatten` is for #[derive(FromRow)] structs; a model maps each field to one column of its table",
            ));
        }
        if field_options.skip.is_some() {
            if let Some((key, span)) = field_options.model_only.first() {
                return Err(syn::Error::new(
                    *span,
                    format!("a skipped field is not a column; `{key}` has no meaning on it"),
                ));
            }
            skipped.push(ident);
            continue;
        }
        own.push(user_column(ident, field.ty.clone(), field_options)?);
    }

    let columns: Vec<ColumnSpec> = leading.into_iter().chain(own).chain(trailing).collect();
    for (i, column) in columns.iter().enumerate() {
        if let Some(first) = columns[..i].iter().find(|c| c.name == column.name) {
            return Err(syn::Error::new(
                column.field.span(),
                format!(
                    "fields `{}` and `{}` both map to column `{}`",
                    first.field, column.field, column.name
                ),
            ));
        }
    }
    let keys: Vec<&ColumnSpec> = columns.iter().filter(|c| c.primary_key).collect();
    let key = match keys.as_slice() {
        [key] => *key,
        [] => {
            return Err(syn::Error::new(
                model.span(),
                format!(
                    "model `{model}` has no primary key: add a mixin that provides one (UuidMixin, UuidStringMixin, UuidTimestampMixin, UuidStringTimestampMixin) or mark a field #[column(primary_key)]"
                ),
            ))
        }
        [first, second, ..] => {
            let (first_what, second_what) = (describe_key(first), describe_key(second));
            return Err(syn::Error::new(
                second.field.span(),
                format!(
                    "model `{model}` has two primary keys ({first_what} and {second_what}); a model has exactly one (composite keys are not supported)"
                ),
            ));
        }
    };

    // Lead the new fields in, keep the user's in the middle.
    let mut fields: Punctuated<Field, Token![,]> = Punctuated::new();
    let user_fields = std::mem::take(&mut named.named);
    for column in columns
        .iter()
        .filter(|c| c.mixin.is_some() && c.primary_key)
    {
        fields.push(column.mixin_field(options.uuid_v4)?);
    }
    fields.extend(user_fields);
    for column in columns
        .iter()
        .filter(|c| c.mixin.is_some() && !c.primary_key)
    {
        fields.push(column.mixin_field(options.uuid_v4)?);
    }
    named.named = fields;

    let generated = generate(&model, &options, &columns, key, &skipped, &input.vis);
    Ok(quote! {
        #input
        #generated
    })
}

fn describe_key(column: &ColumnSpec) -> String {
    match column.mixin {
        Some(mixin) => format!("`{}` from {mixin}", column.name),
        None => format!("field `{}`", column.field),
    }
}

/// `#[derive(FromRow)]` on a model would implement the trait a second time.
fn reject_derived_from_row(input: &DeriveInput) -> syn::Result<()> {
    for attr in input.attrs.iter().filter(|a| a.path().is_ident("derive")) {
        let derived = attr.parse_args_with(Punctuated::<Path, Token![,]>::parse_terminated)?;
        if let Some(path) = derived
            .iter()
            .find(|p| p.segments.last().is_some_and(|s| s.ident == "FromRow"))
        {
            return Err(syn::Error::new(
                path.span(),
                "#[coredb::model] implements FromRow itself; remove FromRow from the derive list",
            ));
        }
    }
    Ok(())
}

fn user_column(field: Ident, ty: Type, options: FieldOptions) -> syn::Result<ColumnSpec> {
    let name = options
        .rename
        .as_ref()
        .map_or_else(|| field.unraw().to_string(), LitStr::value);
    let type_name = type_name(&ty);
    let is_option = type_name.as_deref() == Some("Option");
    let is_integer = matches!(type_name.as_deref(), Some("i16" | "i32" | "i64"));
    let primary_key = options.primary_key.is_some();
    if primary_key && is_option {
        return Err(syn::Error::new(
            ty.span(),
            "a primary key cannot be an Option: it is never NULL",
        ));
    }
    let identity_wanted = options.identity.as_ref().map(|b| b.value);
    let role = match (primary_key && is_integer, identity_wanted) {
        (true, None | Some(true)) => Role::Identity,
        (false, Some(true)) => {
            return Err(syn::Error::new(
                options.identity.as_ref().map_or(field.span(), |b| b.span),
                "`identity` applies to an integer (i16, i32, i64) primary key",
            ))
        }
        _ => Role::Plain,
    };
    if role == Role::Identity && options.default.is_some() {
        return Err(syn::Error::new(
            field.span(),
            "an identity key is numbered by the database; it takes no `default` (or say identity = false)",
        ));
    }

    let mut checks = Vec::new();
    let typed = options.sql_type.is_none();
    let (sql_type, nullable) = match (&options.sql_type, &options.length, &options.precision) {
        (Some(custom), None, None) if options.scale.is_none() => (
            quote!(::coredb::model::SqlTypeName::Custom(#custom)),
            quote!(#is_option),
        ),
        (None, Some(length), None) if options.scale.is_none() => {
            checks.push(quote_spanned! {ty.span()=>
                const _: () = {
                    fn length_applies<T: ::coredb::model::TextColumn>() {}
                    let _ = length_applies::<#ty>;
                };
            });
            (
                quote!(::coredb::model::SqlTypeName::Varchar(#length)),
                quote_spanned!(ty.span()=> <#ty as ::coredb::model::SqlType>::NULLABLE),
            )
        }
        (None, None, Some(precision)) => {
            let scale = options
                .scale
                .as_ref()
                .map_or_else(|| quote!(0), |s| quote!(#s));
            let p: u32 = precision.base10_parse()?;
            let s: u32 = options.scale.as_ref().map_or(Ok(0), |s| s.base10_parse())?;
            if s > p {
                return Err(syn::Error::new(
                    precision.span(),
                    "`scale` cannot exceed `precision`",
                ));
            }
            checks.push(quote_spanned! {ty.span()=>
                const _: () = {
                    fn precision_applies<T: ::coredb::model::DecimalColumn>() {}
                    let _ = precision_applies::<#ty>;
                };
            });
            (
                quote!(::coredb::model::SqlTypeName::NumericOf { precision: #precision, scale: #scale }),
                quote_spanned!(ty.span()=> <#ty as ::coredb::model::SqlType>::NULLABLE),
            )
        }
        (None, None, None) if options.scale.is_none() => (
            quote_spanned!(ty.span()=> <#ty as ::coredb::model::SqlType>::TYPE),
            quote_spanned!(ty.span()=> <#ty as ::coredb::model::SqlType>::NULLABLE),
        ),
        (None, None, None) => {
            return Err(syn::Error::new(
                field.span(),
                "`scale` needs `precision`: #[column(precision = 12, scale = 2)] is numeric(12, 2)",
            ))
        }
        _ => {
            return Err(syn::Error::new(
                field.span(),
                "`sql_type`, `length` and `precision` each name the column's type; give one",
            ))
        }
    };
    if options.on_delete.is_some() && options.references.is_none() {
        return Err(syn::Error::new(
            field.span(),
            "`on_delete` belongs to a foreign key: add `references = OtherModel`",
        ));
    }
    Ok(ColumnSpec {
        field,
        ty,
        name,
        role,
        primary_key,
        unique: options.unique,
        index: options.index,
        default: options.default,
        sql_type,
        nullable,
        typed,
        references: options.references.map(|path| (path, options.on_delete)),
        mixin: None,
        checks,
    })
}

fn generate(
    model: &Ident,
    options: &ModelOptions,
    columns: &[ColumnSpec],
    key: &ColumnSpec,
    skipped: &[Ident],
    vis: &syn::Visibility,
) -> TokenStream {
    let table_name = options.table.value();
    let qualified = match &options.schema {
        Some(schema) => format!(
            "{}.{}",
            quote_ident(&schema.value()),
            quote_ident(&table_name)
        ),
        None => quote_ident(&table_name),
    };
    let select_list = columns
        .iter()
        .map(|c| quote_ident(&c.name))
        .collect::<Vec<_>>()
        .join(", ");
    let key_column = quote_ident(&key.name);

    // INSERT: every column but an identity key; timestamps from the database clock.
    let inserted: Vec<&ColumnSpec> = columns
        .iter()
        .filter(|c| c.role != Role::Identity)
        .collect();
    let insert_params: Vec<&ColumnSpec> = inserted
        .iter()
        .copied()
        .filter(|c| !c.role.is_timestamp())
        .collect();
    let mut placeholder = 0;
    let mut insert_row = Vec::new();
    let mut insert_values_sql = Vec::new();
    for column in &inserted {
        if column.role.is_timestamp() {
            insert_row.push(quote!(::coredb::model::InsertValue::Sql(
                "statement_timestamp()"
            )));
            insert_values_sql.push("statement_timestamp()".to_owned());
        } else {
            placeholder += 1;
            insert_row.push(quote!(::coredb::model::InsertValue::Param));
            insert_values_sql.push(format!("${placeholder}"));
        }
    }
    let insert_columns = inserted
        .iter()
        .map(|c| quote_ident(&c.name))
        .collect::<Vec<_>>()
        .join(", ");
    let insert_head = format!("INSERT INTO {qualified} ({insert_columns}) VALUES ");
    let insert_sql = format!(
        "{insert_head}({}) RETURNING {select_list}",
        insert_values_sql.join(", ")
    );
    let copy_sql = format!(
        "COPY {qualified} ({}) FROM STDIN BINARY",
        insert_params
            .iter()
            .map(|c| quote_ident(&c.name))
            .collect::<Vec<_>>()
            .join(", ")
    );

    // UPDATE: the plain columns; keys, mixin UUIDs and created_at never change.
    let updated: Vec<&ColumnSpec> = columns
        .iter()
        .filter(|c| c.role == Role::Plain && !c.primary_key)
        .collect();
    let mut assignments: Vec<String> = updated
        .iter()
        .enumerate()
        .map(|(i, c)| format!("{} = ${}", quote_ident(&c.name), i + 1))
        .collect();
    if let Some(stamp) = columns.iter().find(|c| c.role == Role::UpdatedAt) {
        assignments.push(format!(
            "{} = statement_timestamp()",
            quote_ident(&stamp.name)
        ));
    }
    if assignments.is_empty() {
        // Nothing to write: still report whether the row exists, and return it.
        assignments.push(format!("{key_column} = {key_column}"));
    }
    let update_sql = format!(
        "UPDATE {qualified} SET {} WHERE {key_column} = ${} RETURNING {select_list}",
        assignments.join(", "),
        updated.len() + 1
    );
    let get_sql = format!("SELECT {select_list} FROM {qualified} WHERE {key_column} = $1");
    let delete_sql = format!("DELETE FROM {qualified} WHERE {key_column} = $1");

    let schema = option_tokens(options.schema.as_ref().map(|s| quote!(#s)));
    let model_name = model.to_string();
    let column_consts = columns.iter().map(ColumnSpec::runtime);
    let mixin_names = options.mixins.iter().map(|(m, _)| m.name);
    let key_ty = &key.ty;
    let key_field = &key.field;
    let insert_values = insert_params.iter().map(|c| c.param());
    let update_values = updated
        .iter()
        .map(|c| c.param())
        .chain(std::iter::once(key.param()));
    let checks = columns.iter().flat_map(|c| c.checks.iter());

    let reads: Vec<TokenStream> = columns.iter().map(ColumnSpec::read).collect();
    let fields: Vec<&Ident> = columns.iter().map(|c| &c.field).collect();
    let locals: Vec<Ident> = (0..columns.len())
        .map(|i| format_ident!("column_{}", i))
        .collect();

    let constructor = options
        .constructor
        .then(|| constructor(model, options, columns, skipped, vis));

    quote! {
        #(#checks)*

        #[automatically_derived]
        impl ::coredb::FromRow for #model {
            fn from_row(row: &::coredb::Row) -> ::coredb::Result<Self> {
                ::core::result::Result::Ok(Self {
                    #(#fields: #reads?,)*
                    #(#skipped: ::core::default::Default::default(),)*
                })
            }
        }

        #[automatically_derived]
        impl ::coredb::model::Model for #model {
            type Key = #key_ty;

            const TABLE: &'static ::coredb::model::Table = &::coredb::model::Table {
                schema: #schema,
                name: #table_name,
                model: #model_name,
                columns: &[#(#column_consts),*],
                mixins: &[#(#mixin_names),*],
            };

            const STATEMENTS: &'static ::coredb::model::Statements = &::coredb::model::Statements {
                table: #qualified,
                columns: #select_list,
                insert: #insert_sql,
                insert_head: #insert_head,
                insert_row: &[#(#insert_row),*],
                get: #get_sql,
                update: #update_sql,
                delete: #delete_sql,
                copy: #copy_sql,
            };

            fn key(&self) -> &Self::Key {
                &self.#key_field
            }

            fn insert_values(&self) -> ::std::vec::Vec<::coredb::SqlParam<'_>> {
                ::std::vec![#(#insert_values),*]
            }

            fn update_values(&self) -> ::std::vec::Vec<::coredb::SqlParam<'_>> {
                ::std::vec![#(#update_values),*]
            }

            fn apply_row(&mut self, row: &::coredb::Row) -> ::coredb::Result<()> {
                // Every column is read before any field changes, so a failure leaves the struct as it was.
                #(let #locals = #reads?;)*
                #(self.#fields = #locals;)*
                ::core::result::Result::Ok(())
            }
        }

        ::coredb::model::__private::inventory::submit! {
            ::coredb::model::Registration::new(<#model as ::coredb::model::Model>::TABLE)
        }

        #constructor
    }
}

/// `Model::new(own fields..)`: keys made here, timestamps left for the insert.
fn constructor(
    model: &Ident,
    options: &ModelOptions,
    columns: &[ColumnSpec],
    skipped: &[Ident],
    vis: &syn::Visibility,
) -> TokenStream {
    let version = if options.uuid_v4 {
        quote!(::coredb::model::UuidVersion::V4)
    } else {
        quote!(::coredb::model::UuidVersion::V7)
    };
    let mut params = Vec::new();
    let mut inits = Vec::new();
    for column in columns {
        let field = &column.field;
        let ty = &column.ty;
        let init = match column.role {
            Role::Plain => {
                params.push(quote!(#field: impl ::core::convert::Into<#ty>));
                quote!(::core::convert::Into::into(#field))
            }
            Role::GeneratedUuid => quote!(::coredb::model::new_uuid(#version)),
            Role::GeneratedUuidString => quote!(::coredb::model::new_uuid_string(#version)),
            Role::Identity | Role::CreatedAt | Role::UpdatedAt => {
                quote!(::core::default::Default::default())
            }
        };
        inits.push(quote!(#field: #init));
    }
    let generated: Vec<String> = columns
        .iter()
        .filter(|c| c.role != Role::Plain)
        .map(|c| format!("`{}`", c.field))
        .collect();
    let version_name = if options.uuid_v4 { "v4" } else { "v7" };
    let doc = if generated.is_empty() {
        format!("A new `{model}` from its fields.")
    } else {
        format!(
            "A new `{model}` from its own fields; {} are filled in (UUIDs: a new {version_name}; identity keys and timestamps: placeholders until insert reads the stored values back).",
            generated.join(", ")
        )
    };
    quote! {
        impl #model {
            #[doc = #doc]
            #[allow(clippy::too_many_arguments, dead_code)]
            #vis fn new(#(#params),*) -> Self {
                Self {
                    #(#inits,)*
                    #(#skipped: ::core::default::Default::default(),)*
                }
            }
        }
    }
}
