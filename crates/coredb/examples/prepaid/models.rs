//! The prepaid service's tables, declared once as coredb models: users, their accounts, and the
//! append-only ledger of every credit and debit.

use coredb::model::{DateTime, Utc, Uuid};
use coredb::types::{FromSql, ToSql};
use rust_decimal::Decimal;
use serde::{Deserialize, Deserializer, Serialize};

/// A customer (core.db's `User`, with `UUIDTimestampMixin`).
#[coredb::model(table = "users", mixin = UuidTimestampMixin)]
#[derive(Debug, Clone, Serialize)]
pub struct User {
    #[column(length = 100)]
    pub name: String,
    #[column(length = 255, unique)]
    pub email: String,
}

/// A prepaid account of a user. `balance` is `numeric(14, 2)`: exact money, never a float, and
/// a `CHECK (balance >= 0)` added by `setup` backs the application's own check.
#[coredb::model(table = "accounts", mixin = UuidTimestampMixin)]
#[derive(Debug, Clone, Serialize)]
pub struct Account {
    #[column(references = User, index)]
    pub user_id: Uuid,
    /// ISO 4217 code, e.g. "EUR".
    #[column(length = 3)]
    pub currency: String,
    #[column(precision = 14, scale = 2)]
    pub balance: Decimal,
}

/// What a ledger entry records.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ToSql, FromSql, coredb::SqlEnum, Serialize)]
#[postgres(name = "ledger_kind", rename_all = "snake_case")]
#[serde(rename_all = "snake_case")]
pub enum EntryKind {
    /// Money in: a positive amount.
    Topup,
    /// Money out: a negative amount.
    Purchase,
}

/// One movement of money, never updated or deleted (a trigger refuses both). The amounts of an
/// account's entries sum to its balance, and `balance_after` is the balance right after it.
///
/// The key is an identity number rather than a UUID: entries of one account are written one
/// at a time under the account's row lock, so ordering by `id` is the order they happened in.
#[coredb::model(table = "ledger_entries", constructor = false)]
#[derive(Debug, Clone, Serialize)]
pub struct LedgerEntry {
    #[column(primary_key)]
    pub id: i64,
    #[column(references = Account, index)]
    pub account_id: Uuid,
    pub kind: EntryKind,
    /// Signed: positive for a top-up, negative for a purchase.
    #[column(precision = 14, scale = 2)]
    pub amount: Decimal,
    #[column(precision = 14, scale = 2)]
    pub balance_after: Decimal,
    /// The client's `Idempotency-Key`; unique per account (a partial unique index from `setup`).
    #[column(length = 255)]
    pub idempotency_key: Option<String>,
    /// The database clock when the entry was written.
    #[column(default = "statement_timestamp()")]
    pub created_at: DateTime<Utc>,
}

/// The largest amount a `numeric(14, 2)` column holds.
pub fn max_amount() -> Decimal {
    Decimal::new(99_999_999_999_999, 2)
}

/// Reads a money amount from a JSON string such as `"10.50"`. Numbers are refused: JSON
/// numbers are floats to most clients, and money must not pass through a float.
pub fn deserialize_amount<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Decimal, D::Error> {
    let text = String::deserialize(deserializer)
        .map_err(|_| serde::de::Error::custom("expected a decimal string such as \"10.50\""))?;
    text.trim().parse::<Decimal>().map_err(|_| {
        serde::de::Error::custom(format!(
            "{text:?} is not a decimal amount; write it like \"10.50\""
        ))
    })
}
