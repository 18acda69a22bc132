//! Reading the struct under `#[coredb::model]`: its arguments, `#[column(..)]` options and
//! mixins become a [`ModelSpec`], the plain description the statements and the code are built
//! from. A misused struct or `#[column(..)]` option is reported here, before any code is
//! written.

use proc_macro2::Span;
use syn::ext::IdentExt;
use syn::punctuated::Punctuated;
use syn::spanned::Spanned;
use syn::{
    Data, DeriveInput, Fields, FieldsNamed, Ident, LitInt, LitStr, Path, Token, Type, Visibility,
};

use crate::mixins::MixinColumn;
use crate::options::{is_column_attr, FieldOptions, ModelOptions};

/// How a column gets its value (mirrors `coredb::model::ColumnRole`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Plain,
    Identity,
    GeneratedUuid,
    GeneratedUuidString,
    CreatedAt,
    UpdatedAt,
}

impl Role {
    pub fn is_timestamp(self) -> bool {
        matches!(self, Role::CreatedAt | Role::UpdatedAt)
    }
}

/// Where a column's SQL type comes from.
pub enum ColumnType {
    /// The field's Rust type, through `coredb::model::SqlType`.
    Rust,
    /// `length = n`: `varchar(n)`, for a text type.
    Varchar(LitInt),
    /// `precision = p, scale = s`: `numeric(p, s)`, for a decimal type.
    Numeric {
        precision: LitInt,
        scale: Option<LitInt>,
    },
    /// `sql_type = ".."`: the field's type then needs only ToSql/FromSql, and the column is
    /// nullable exactly when the field is an `Option`.
    Custom { name: LitStr, nullable: bool },
    /// A mixin's column: its type is fixed and it is never NULL.
    Mixin(MixinColumn),
}

/// One column of the model: from a mixin or from one of the struct's own fields.
pub struct ColumnSpec {
    pub field: Ident,
    pub ty: Type,
    pub name: String,
    pub role: Role,
    pub primary_key: bool,
    pub unique: bool,
    pub index: bool,
    pub default: Option<LitStr>,
    pub sql_type: ColumnType,
    /// `references = Model` and its `on_delete` action.
    pub references: Option<(Path, Option<LitStr>)>,
    /// The mixin that adds the column.
    pub mixin: Option<&'static str>,
}

impl ColumnSpec {
    /// False with `sql_type = ".."`: the field's type then needs only ToSql/FromSql.
    pub fn typed(&self) -> bool {
        !matches!(self.sql_type, ColumnType::Custom { .. })
    }

    fn from_mixin(column: MixinColumn, mixin: &'static str) -> Self {
        let field = Ident::new(column.name(), Span::call_site());
        let (ty, role): (Type, Role) = match column {
            MixinColumn::UuidKey | MixinColumn::UuidField => (
                syn::parse_quote!(::coredb::model::Uuid),
                Role::GeneratedUuid,
            ),
            MixinColumn::UuidStringKey => (
                syn::parse_quote!(::std::string::String),
                Role::GeneratedUuidString,
            ),
            MixinColumn::CreatedAt | MixinColumn::UpdatedAt => (
                syn::parse_quote!(::coredb::model::DateTime<::coredb::model::Utc>),
                if column == MixinColumn::CreatedAt {
                    Role::CreatedAt
                } else {
                    Role::UpdatedAt
                },
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
            sql_type: ColumnType::Mixin(column),
            references: None,
            mixin: Some(mixin),
        }
    }
}

/// The model as read from the struct and its arguments.
pub struct ModelSpec {
    pub ident: Ident,
    pub vis: Visibility,
    /// In table order: the mixins' keys, the struct's own fields, the mixins' other columns.
    pub columns: Vec<ColumnSpec>,
    /// Where the primary key is in `columns`.
    key: usize,
    /// Fields that are no column: `Default::default()` when a row is read.
    pub skipped: Vec<Ident>,
}

impl ModelSpec {
    pub fn key(&self) -> &ColumnSpec {
        &self.columns[self.key]
    }
}

/// Reads the model, and takes the `#[column(..)]` attributes off the struct's fields (they are
/// not attributes the compiler knows).
pub fn read(options: &ModelOptions, input: &mut DeriveInput) -> syn::Result<ModelSpec> {
    reject_derived_from_row(input)?;
    if !input.generics.params.is_empty() {
        return Err(syn::Error::new(
            input.generics.span(),
            "a model cannot be generic: it maps one table",
        ));
    }
    let model = input.ident.clone();
    let vis = input.vis.clone();
    let named = named_fields(input)?;

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
    let keys: Vec<usize> = columns
        .iter()
        .enumerate()
        .filter(|(_, c)| c.primary_key)
        .map(|(i, _)| i)
        .collect();
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
            let (first, second) = (&columns[*first], &columns[*second]);
            let (first_what, second_what) = (describe_key(first), describe_key(second));
            return Err(syn::Error::new(
                second.field.span(),
                format!(
                    "model `{model}` has two primary keys ({first_what} and {second_what}); a model has exactly one (composite keys are not supported)"
                ),
            ));
        }
    };

    Ok(ModelSpec {
        ident: model,
        vis,
        columns,
        key,
        skipped,
    })
}

/// The struct's fields; a model is a struct with named fields, each a column.
pub fn named_fields(input: &mut DeriveInput) -> syn::Result<&mut FieldsNamed> {
    let model = &input.ident;
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
    Ok(named)
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

/// The last path segment of a type, e.g. `Option` for `std::option::Option<String>`.
fn type_name(ty: &Type) -> Option<String> {
    match ty {
        Type::Path(path) if path.qself.is_none() => {
            path.path.segments.last().map(|s| s.ident.to_string())
        }
        _ => None,
    }
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

    let sql_type = column_type(&field, &options, is_option)?;
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
        references: options.references.map(|path| (path, options.on_delete)),
        mixin: None,
    })
}

/// The column's SQL type from `sql_type`, `length` or `precision` and `scale`, at most one given.
fn column_type(field: &Ident, options: &FieldOptions, is_option: bool) -> syn::Result<ColumnType> {
    match (&options.sql_type, &options.length, &options.precision) {
        (Some(name), None, None) if options.scale.is_none() => Ok(ColumnType::Custom {
            name: name.clone(),
            nullable: is_option,
        }),
        (None, Some(length), None) if options.scale.is_none() => {
            Ok(ColumnType::Varchar(length.clone()))
        }
        (None, None, Some(precision)) => {
            let p: u32 = precision.base10_parse()?;
            let s: u32 = options.scale.as_ref().map_or(Ok(0), |s| s.base10_parse())?;
            if s > p {
                return Err(syn::Error::new(
                    precision.span(),
                    "`scale` cannot exceed `precision`",
                ));
            }
            Ok(ColumnType::Numeric {
                precision: precision.clone(),
                scale: options.scale.clone(),
            })
        }
        (None, None, None) if options.scale.is_none() => Ok(ColumnType::Rust),
        (None, None, None) => Err(syn::Error::new(
            field.span(),
            "`scale` needs `precision`: #[column(precision = 12, scale = 2)] is numeric(12, 2)",
        )),
        _ => Err(syn::Error::new(
            field.span(),
            "`sql_type`, `length` and `precision` each name the column's type; give one",
        )),
    }
}
