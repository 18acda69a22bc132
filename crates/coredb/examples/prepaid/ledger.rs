//! Moving money: top-ups and purchases, each one balance update and one ledger entry in the
//! caller's transaction.
//!
//! Concurrency is the database's job, not the process's: every posting first locks the
//! account's row (`SELECT .. FOR UPDATE`), so postings to one account run one after another
//! however many requests and service instances there are, and the balance a posting checks is
//! the balance it changes. The lock is held until the request's transaction ends, which is
//! after the handler returns (TxLayer commits then), so the next posting sees this one.
//!
//! The functions take a `Session`, not any executor: a row lock only means something inside a
//! transaction. (Also, an `async fn` generic over `impl Executor` cannot be awaited in an axum
//! handler today: rustc fails to prove its future `Send`, rust-lang/rust#100013.)

use coredb::model::{Crud, Uuid};
use coredb::{Executor, Session};
use rust_decimal::Decimal;

use super::error::AppError;
use super::models::{max_amount, Account, EntryKind, LedgerEntry};

/// The outcome of a posting.
#[derive(Debug)]
pub enum Posting {
    /// A new entry was written.
    Created(LedgerEntry),
    /// The idempotency key was used before for the same request: its entry, unchanged.
    Replayed(LedgerEntry),
}

/// Locks and reads the account, or 404.
async fn lock_account(session: &mut Session, id: Uuid) -> Result<Account, AppError> {
    session
        .fetch_optional("SELECT * FROM accounts WHERE id = $1 FOR UPDATE", (id,))
        .await?
        .ok_or_else(|| AppError::NotFound(format!("no account {id}")))
}

/// Checks an amount from a request: positive, whole cents, and storable.
pub fn check_amount(amount: Decimal) -> Result<Decimal, AppError> {
    if amount <= Decimal::ZERO {
        return Err(AppError::unprocessable(
            "invalid_amount",
            format!("amount must be greater than zero, not {amount}"),
        ));
    }
    if amount.normalize().scale() > 2 {
        return Err(AppError::unprocessable(
            "invalid_amount",
            format!("amount {amount} has more than two decimal places"),
        ));
    }
    if amount > max_amount() {
        return Err(AppError::unprocessable(
            "invalid_amount",
            format!("amount {amount} is larger than {}", max_amount()),
        ));
    }
    Ok(amount.round_dp(2))
}

/// Credits `amount` to the account, once per `key`.
///
/// A request replayed with the same key (also while the first is still running: it waits for
/// the account's lock, then finds the first one's entry) gets the first entry back and credits
/// nothing. A key reused for a different request is refused with 422.
pub async fn top_up(
    session: &mut Session,
    account_id: Uuid,
    amount: Decimal,
    key: &str,
) -> Result<Posting, AppError> {
    post(session, account_id, EntryKind::Topup, amount, Some(key)).await
}

/// Debits `amount` from the account; 409 when the balance does not cover it. With a key, a
/// replay gets the first entry back and debits nothing.
pub async fn purchase(
    session: &mut Session,
    account_id: Uuid,
    amount: Decimal,
    key: Option<&str>,
) -> Result<Posting, AppError> {
    post(session, account_id, EntryKind::Purchase, amount, key).await
}

async fn post(
    session: &mut Session,
    account_id: Uuid,
    kind: EntryKind,
    amount: Decimal,
    key: Option<&str>,
) -> Result<Posting, AppError> {
    let amount = check_amount(amount)?;
    let account = lock_account(session, account_id).await?;
    let signed = match kind {
        EntryKind::Topup => amount,
        EntryKind::Purchase => -amount,
    };

    if let Some(key) = key {
        // Under the account's lock, and in READ COMMITTED each statement sees everything
        // committed before it began: an earlier request with this key has either committed
        // (its entry is found here) or rolled back (the key is free).
        let earlier: Option<LedgerEntry> = session
            .fetch_optional(
                "SELECT * FROM ledger_entries WHERE account_id = $1 AND idempotency_key = $2",
                (account_id, key.to_owned()),
            )
            .await?;
        if let Some(entry) = earlier {
            if entry.kind != kind || entry.amount != signed {
                return Err(AppError::unprocessable(
                    "idempotency_key_reused",
                    format!(
                        "Idempotency-Key {key:?} was already used on this account for a {} of {}; use a new key for a new request",
                        kind_name(entry.kind),
                        entry.amount.abs()
                    ),
                ));
            }
            return Ok(Posting::Replayed(entry));
        }
    }

    let balance_after = account.balance + signed;
    if balance_after < Decimal::ZERO {
        return Err(AppError::Conflict {
            code: "insufficient_funds",
            message: format!(
                "insufficient funds: the balance is {} {}, the purchase needs {amount}",
                account.balance, account.currency
            ),
        });
    }
    if balance_after > max_amount() {
        return Err(AppError::unprocessable(
            "balance_too_large",
            format!(
                "a top-up of {amount} would take the balance above {}",
                max_amount()
            ),
        ));
    }

    session
        .execute(
            "UPDATE accounts SET balance = $1, updated_at = statement_timestamp() WHERE id = $2",
            (balance_after, account_id),
        )
        .await?;
    let entry: LedgerEntry = session
        .fetch_one(
            "INSERT INTO ledger_entries (account_id, kind, amount, balance_after, idempotency_key) \
             VALUES ($1, $2, $3, $4, $5) RETURNING *",
            (account_id, kind, signed, balance_after, key.map(str::to_owned)),
        )
        .await?;
    Ok(Posting::Created(entry))
}

fn kind_name(kind: EntryKind) -> &'static str {
    match kind {
        EntryKind::Topup => "top-up",
        EntryKind::Purchase => "purchase",
    }
}

/// The account's entries, oldest first, or 404.
pub async fn entries(
    session: &mut Session,
    account_id: Uuid,
) -> Result<Vec<LedgerEntry>, AppError> {
    if session.get::<Account>(&account_id).await?.is_none() {
        return Err(AppError::NotFound(format!("no account {account_id}")));
    }
    Ok(session
        .fetch_all(
            "SELECT * FROM ledger_entries WHERE account_id = $1 ORDER BY id",
            (account_id,),
        )
        .await?)
}
