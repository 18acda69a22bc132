//! The code `#[coredb::model]` writes from a [`ModelSpec`]: the mixins' fields, `FromRow`,
//! `Model` (its `Table` and `Statements`), the registration for `create_all`, and `new`.

use proc_macro2::TokenStream;
use quote::{format_ident, quote, quote_spanned};
use syn::ext::IdentExt;
use syn::parse::Parser;
use syn::punctuated::Punctuated;
use syn::spanned::Spanned;
use syn::{Field, FieldsNamed, Ident, LitStr, Token};

use super::parse::{ColumnSpec, ColumnType, ModelSpec, Role};
use super::sql;
use crate::mixins::MixinColumn;
use crate::options::ModelOptions;

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
}

impl ColumnSpec {
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

    /// The column's `coredb::model::SqlTypeName`.
    fn sql_type_name(&self) -> TokenStream {
        let ty = &self.ty;
        match &self.sql_type {
            ColumnType::Rust => {
                quote_spanned!(ty.span()=> <#ty as ::coredb::model::SqlType>::TYPE)
            }
            ColumnType::Varchar(length) => quote!(::coredb::model::SqlTypeName::Varchar(#length)),
            ColumnType::Numeric { precision, scale } => {
                let scale = scale.as_ref().map_or_else(|| quote!(0), |s| quote!(#s));
                quote!(::coredb::model::SqlTypeName::NumericOf { precision: #precision, scale: #scale })
            }
            ColumnType::Custom { name, .. } => quote!(::coredb::model::SqlTypeName::Custom(#name)),
            ColumnType::Mixin(MixinColumn::UuidKey | MixinColumn::UuidField) => {
                quote!(::coredb::model::SqlTypeName::Uuid)
            }
            ColumnType::Mixin(MixinColumn::UuidStringKey) => {
                quote!(::coredb::model::SqlTypeName::Varchar(36))
            }
            ColumnType::Mixin(MixinColumn::CreatedAt | MixinColumn::UpdatedAt) => {
                quote!(::coredb::model::SqlTypeName::Timestamptz)
            }
        }
    }

    /// Whether the column takes NULL: the field's type says so, unless its SQL type is custom or
    /// a mixin's.
    fn nullable(&self) -> TokenStream {
        let ty = &self.ty;
        match &self.sql_type {
            ColumnType::Rust | ColumnType::Varchar(_) | ColumnType::Numeric { .. } => {
                quote_spanned!(ty.span()=> <#ty as ::coredb::model::SqlType>::NULLABLE)
            }
            ColumnType::Custom { nullable, .. } => quote!(#nullable),
            ColumnType::Mixin(_) => quote!(false),
        }
    }

    /// A compile-time check that `length` or `precision` suits the field's type, pointing at it.
    fn type_check(&self) -> Option<TokenStream> {
        let ty = &self.ty;
        match &self.sql_type {
            ColumnType::Varchar(_) => Some(quote_spanned! {ty.span()=>
                const _: () = {
                    fn length_applies<T: ::coredb::model::TextColumn>() {}
                    let _ = length_applies::<#ty>;
                };
            }),
            ColumnType::Numeric { .. } => Some(quote_spanned! {ty.span()=>
                const _: () = {
                    fn precision_applies<T: ::coredb::model::DecimalColumn>() {}
                    let _ = precision_applies::<#ty>;
                };
            }),
            ColumnType::Rust | ColumnType::Custom { .. } | ColumnType::Mixin(_) => None,
        }
    }

    /// `const` description for `coredb::model::Column`.
    fn runtime(&self) -> TokenStream {
        let name = &self.name;
        let field = self.field.unraw().to_string();
        let sql_type = self.sql_type_name();
        let nullable = self.nullable();
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
        if self.typed() {
            quote_spanned!(ty.span()=> ::coredb::model::__private::read::<#ty>(row, positions, #name))
        } else {
            quote_spanned!(ty.span()=> positions.get::<#ty>(row, #name))
        }
    }

    /// The field as a statement parameter.
    fn param(&self) -> TokenStream {
        let ty = &self.ty;
        let field = &self.field;
        if self.typed() {
            quote_spanned!(ty.span()=> ::coredb::model::__private::param::<#ty>(&self.#field))
        } else {
            quote_spanned!(ty.span()=> &self.#field as ::coredb::SqlParam<'_>)
        }
    }

    /// The column as the statements see it.
    fn sql(&self) -> sql::Column<'_> {
        sql::Column {
            name: &self.name,
            role: self.role,
            primary_key: self.primary_key,
        }
    }
}

fn option_tokens(value: Option<TokenStream>) -> TokenStream {
    match value {
        Some(v) => quote!(::core::option::Option::Some(#v)),
        None => quote!(::core::option::Option::None),
    }
}

/// Leads the mixins' keys in before the struct's own fields and puts their other columns after.
pub fn add_mixin_fields(
    named: &mut FieldsNamed,
    model: &ModelSpec,
    uuid_v4: bool,
) -> syn::Result<()> {
    let mut fields: Punctuated<Field, Token![,]> = Punctuated::new();
    let user_fields = std::mem::take(&mut named.named);
    for column in model
        .columns
        .iter()
        .filter(|c| c.mixin.is_some() && c.primary_key)
    {
        fields.push(column.mixin_field(uuid_v4)?);
    }
    fields.extend(user_fields);
    for column in model
        .columns
        .iter()
        .filter(|c| c.mixin.is_some() && !c.primary_key)
    {
        fields.push(column.mixin_field(uuid_v4)?);
    }
    named.named = fields;
    Ok(())
}

/// Everything written after the struct: the trait impls, the registration and `new`.
pub fn items(options: &ModelOptions, model: &ModelSpec) -> TokenStream {
    let ModelSpec {
        ident,
        columns,
        skipped,
        ..
    } = model;
    let key = model.key();
    let table_name = options.table.value();
    let schema_name = options.schema.as_ref().map(LitStr::value);
    let table = sql::Table {
        schema: schema_name.as_deref(),
        name: &table_name,
        columns: columns.iter().map(ColumnSpec::sql).collect(),
        key: &key.name,
    };
    let qualified = sql::qualified_name(&table);
    let select_list = sql::column_list(&table.columns);
    let insert_sql = sql::insert(&table);
    let insert_head = sql::insert_head(&table);
    let get_sql = sql::select_by_key(&table);
    let update_sql = sql::update(&table);
    let delete_sql = sql::delete_by_key(&table);
    let copy_sql = sql::copy_from_stdin(&table);

    // What INSERT writes for each column it names: the same as `insert_sql`, for multi-row inserts.
    let insert_row =
        table
            .columns
            .iter()
            .filter(|c| c.inserted())
            .map(|c| match c.insert_expression() {
                Some(expression) => quote!(::coredb::model::InsertValue::Sql(#expression)),
                None => quote!(::coredb::model::InsertValue::Param),
            });
    let insert_values = columns
        .iter()
        .filter(|c| c.sql().insert_param())
        .map(ColumnSpec::param);
    let update_values = columns
        .iter()
        .filter(|c| c.sql().updated())
        .map(ColumnSpec::param)
        .chain(std::iter::once(key.param()));

    let schema = option_tokens(options.schema.as_ref().map(|s| quote!(#s)));
    let model_name = ident.to_string();
    let column_consts = columns.iter().map(ColumnSpec::runtime);
    let mixin_names = options.mixins.iter().map(|(m, _)| m.name);
    let key_ty = &key.ty;
    let key_field = &key.field;
    let checks = columns.iter().filter_map(ColumnSpec::type_check);

    let reads: Vec<TokenStream> = columns.iter().map(ColumnSpec::read).collect();
    let fields: Vec<&Ident> = columns.iter().map(|c| &c.field).collect();
    let locals: Vec<Ident> = (0..columns.len())
        .map(|i| format_ident!("column_{}", i))
        .collect();

    let constructor = options.constructor.then(|| constructor(options, model));

    quote! {
        #(#checks)*

        #[automatically_derived]
        impl ::coredb::FromRow for #ident {
            fn from_row(row: &::coredb::Row) -> ::coredb::Result<Self> {
                Self::from_row_at(row, &mut ::coredb::ColumnPositions::new())
            }

            fn from_row_at(
                row: &::coredb::Row,
                positions: &mut ::coredb::ColumnPositions,
            ) -> ::coredb::Result<Self> {
                ::core::result::Result::Ok(Self {
                    #(#fields: #reads?,)*
                    #(#skipped: ::core::default::Default::default(),)*
                })
            }
        }

        #[automatically_derived]
        impl ::coredb::model::Model for #ident {
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

            fn insert_values<'a>(&'a self, out: &mut ::std::vec::Vec<::coredb::SqlParam<'a>>) {
                out.extend([#(#insert_values),*]);
            }

            fn update_values(&self) -> ::std::vec::Vec<::coredb::SqlParam<'_>> {
                ::std::vec![#(#update_values),*]
            }

            fn apply_row(&mut self, row: &::coredb::Row) -> ::coredb::Result<()> {
                // Every column is read before any field changes, so a failure leaves the struct as it was.
                let positions = &mut ::coredb::ColumnPositions::new();
                #(let #locals = #reads?;)*
                #(self.#fields = #locals;)*
                ::core::result::Result::Ok(())
            }
        }

        ::coredb::model::__private::inventory::submit! {
            ::coredb::model::Registration::new(<#ident as ::coredb::model::Model>::TABLE)
        }

        #constructor
    }
}

/// `Model::new(own fields..)`: keys made here, timestamps left for the insert.
fn constructor(options: &ModelOptions, model: &ModelSpec) -> TokenStream {
    let ModelSpec {
        ident,
        vis,
        columns,
        skipped,
        ..
    } = model;
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
        format!("A new `{ident}` from its fields.")
    } else {
        format!(
            "A new `{ident}` from its own fields; {} are filled in (UUIDs: a new {version_name}; identity keys and timestamps: placeholders until insert reads the stored values back).",
            generated.join(", ")
        )
    };
    quote! {
        impl #ident {
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
