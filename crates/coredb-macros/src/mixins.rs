//! The six mixins and the columns each adds (core.db's `UUIDMixin` and friends).

/// A column a mixin adds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MixinColumn {
    /// `id uuid` primary key.
    UuidKey,
    /// `id varchar(36)` primary key.
    UuidStringKey,
    /// `uuid uuid unique not null`.
    UuidField,
    /// `created_at timestamptz not null`.
    CreatedAt,
    /// `updated_at timestamptz not null`.
    UpdatedAt,
}

impl MixinColumn {
    pub fn name(self) -> &'static str {
        match self {
            MixinColumn::UuidKey | MixinColumn::UuidStringKey => "id",
            MixinColumn::UuidField => "uuid",
            MixinColumn::CreatedAt => "created_at",
            MixinColumn::UpdatedAt => "updated_at",
        }
    }

    /// Where the column goes: keys first, the rest after the model's own fields.
    pub fn leads(self) -> bool {
        matches!(self, MixinColumn::UuidKey | MixinColumn::UuidStringKey)
    }
}

pub struct Mixin {
    pub name: &'static str,
    pub columns: &'static [MixinColumn],
}

pub const MIXINS: &[Mixin] = &[
    Mixin {
        name: "UuidMixin",
        columns: &[MixinColumn::UuidKey],
    },
    Mixin {
        name: "UuidStringMixin",
        columns: &[MixinColumn::UuidStringKey],
    },
    Mixin {
        name: "UuidFieldMixin",
        columns: &[MixinColumn::UuidField],
    },
    Mixin {
        name: "TimestampMixin",
        columns: &[MixinColumn::CreatedAt, MixinColumn::UpdatedAt],
    },
    Mixin {
        name: "UuidTimestampMixin",
        columns: &[
            MixinColumn::UuidKey,
            MixinColumn::CreatedAt,
            MixinColumn::UpdatedAt,
        ],
    },
    Mixin {
        name: "UuidStringTimestampMixin",
        columns: &[
            MixinColumn::UuidStringKey,
            MixinColumn::CreatedAt,
            MixinColumn::UpdatedAt,
        ],
    },
];
