//! The HTTP handlers. Each one runs in the request's transaction (`Tx`): committed when the
//! response is 2xx, rolled back when it is anything else or the handler panics.

use axum::extract::rejection::{JsonRejection, PathRejection};
use axum::extract::Path;
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use coredb::axum::Tx;
use coredb::model::{Crud, Uuid};
use coredb::Executor;
use rust_decimal::Decimal;
use serde::Deserialize;

use super::error::AppError;
use super::ledger::{self, Posting};
use super::models::{deserialize_amount, Account, User};

/// The request header that makes a top-up (or purchase) safe to retry.
pub const IDEMPOTENCY_KEY: &str = "idempotency-key";
/// Set on a response that repeats an earlier one for the same `Idempotency-Key`.
pub const IDEMPOTENT_REPLAYED: HeaderName = HeaderName::from_static("idempotent-replayed");

type Body<T> = Result<Json<T>, JsonRejection>;
type Id = Result<Path<Uuid>, PathRejection>;

/// `POST /users`.
#[derive(Debug, Deserialize)]
pub struct NewUser {
    /// Shown name, 1 to 100 characters.
    pub name: String,
    /// Unique (case-insensitively: it is stored in lower case).
    pub email: String,
}

/// `POST /users/{id}/accounts`.
#[derive(Debug, Deserialize)]
pub struct NewAccount {
    /// ISO 4217 code, e.g. "EUR".
    pub currency: String,
}

/// `POST /accounts/{id}/topups` and `/purchases`: `{"amount": "10.50"}`.
#[derive(Debug, Deserialize)]
pub struct AmountRequest {
    /// A decimal string with at most two decimal places.
    #[serde(deserialize_with = "deserialize_amount")]
    pub amount: Decimal,
}

/// Creates a user: 201, 409 when the email is taken, 422 for bad fields.
pub async fn create_user(mut tx: Tx, body: Body<NewUser>) -> Result<Response, AppError> {
    let Json(new) = body?;
    let name = new.name.trim();
    if name.is_empty() || name.chars().count() > 100 {
        return Err(AppError::unprocessable(
            "invalid_name",
            "name must be 1 to 100 characters",
        ));
    }
    let email = new.email.trim().to_lowercase();
    if email.len() > 255 || !email.contains('@') || email.starts_with('@') || email.ends_with('@') {
        return Err(AppError::unprocessable(
            "invalid_email",
            format!("{:?} is not an email address", new.email),
        ));
    }
    let mut user = User::new(name, email);
    tx.insert(&mut user).await.map_err(|err| {
        if err.is_unique_violation() {
            AppError::Conflict {
                code: "email_taken",
                message: format!("a user with email {} already exists", user.email),
            }
        } else {
            err.into()
        }
    })?;
    Ok((StatusCode::CREATED, Json(user)).into_response())
}

/// Lists the users, oldest first.
pub async fn list_users(mut tx: Tx) -> Result<Json<Vec<User>>, AppError> {
    // Raw SQL, not `tx.select::<User>()`: the select builder's futures cannot be proven
    // `Send` yet, which an axum handler needs (reported to the coredb maintainers).
    let users = tx
        .fetch_all("SELECT * FROM users ORDER BY created_at, id", ())
        .await?;
    Ok(Json(users))
}

/// Opens an account for a user with a zero balance: 201, 404 for an unknown user.
pub async fn create_account(
    mut tx: Tx,
    id: Id,
    body: Body<NewAccount>,
) -> Result<Response, AppError> {
    let Path(user_id) = id?;
    let Json(new) = body?;
    let currency = new.currency.trim().to_ascii_uppercase();
    if currency.len() != 3 || !currency.bytes().all(|b| b.is_ascii_uppercase()) {
        return Err(AppError::unprocessable(
            "invalid_currency",
            format!(
                "{:?} is not a three-letter currency code such as \"EUR\"",
                new.currency
            ),
        ));
    }
    if tx.get::<User>(&user_id).await?.is_none() {
        return Err(AppError::NotFound(format!("no user {user_id}")));
    }
    let mut account = Account::new(user_id, currency, Decimal::ZERO);
    tx.insert(&mut account).await?;
    Ok((StatusCode::CREATED, Json(account)).into_response())
}

/// Lists a user's accounts, oldest first; 404 for an unknown user.
pub async fn list_accounts(mut tx: Tx, id: Id) -> Result<Json<Vec<Account>>, AppError> {
    let Path(user_id) = id?;
    if tx.get::<User>(&user_id).await?.is_none() {
        return Err(AppError::NotFound(format!("no user {user_id}")));
    }
    let accounts = tx
        .fetch_all(
            "SELECT * FROM accounts WHERE user_id = $1 ORDER BY created_at, id",
            (user_id,),
        )
        .await?;
    Ok(Json(accounts))
}

/// One account with its balance; 404 when there is none.
pub async fn get_account(mut tx: Tx, id: Id) -> Result<Json<Account>, AppError> {
    let Path(account_id) = id?;
    match tx.get::<Account>(&account_id).await? {
        Some(account) => Ok(Json(account)),
        None => Err(AppError::NotFound(format!("no account {account_id}"))),
    }
}

/// The account's ledger, oldest entry first.
pub async fn get_ledger(mut tx: Tx, id: Id) -> Result<Response, AppError> {
    let Path(account_id) = id?;
    Ok(Json(ledger::entries(tx.session().await?, account_id).await?).into_response())
}

/// Credits the account. `Idempotency-Key` is required: the same key again returns the first
/// response (status and body) and credits nothing.
pub async fn top_up(
    mut tx: Tx,
    id: Id,
    headers: HeaderMap,
    body: Body<AmountRequest>,
) -> Result<Response, AppError> {
    let Path(account_id) = id?;
    let key = idempotency_key(&headers)?.ok_or_else(|| {
        AppError::bad_request(
            "idempotency_key_required",
            "a top-up needs an Idempotency-Key header (e.g. a UUID) so that a retry cannot credit twice",
        )
    })?;
    let Json(request) = body?;
    let posting = ledger::top_up(tx.session().await?, account_id, request.amount, &key).await?;
    Ok(posting_response(posting))
}

/// Debits the account; 409 when the balance does not cover the amount. An `Idempotency-Key`
/// is optional and works as for top-ups.
pub async fn purchase(
    mut tx: Tx,
    id: Id,
    headers: HeaderMap,
    body: Body<AmountRequest>,
) -> Result<Response, AppError> {
    let Path(account_id) = id?;
    let key = idempotency_key(&headers)?;
    let Json(request) = body?;
    let posting = ledger::purchase(
        tx.session().await?,
        account_id,
        request.amount,
        key.as_deref(),
    )
    .await?;
    Ok(posting_response(posting))
}

/// 201 with the entry; a replay repeats it and says so in a header.
fn posting_response(posting: Posting) -> Response {
    match posting {
        Posting::Created(entry) => (StatusCode::CREATED, Json(entry)).into_response(),
        Posting::Replayed(entry) => (
            StatusCode::CREATED,
            [(IDEMPOTENT_REPLAYED, HeaderValue::from_static("true"))],
            Json(entry),
        )
            .into_response(),
    }
}

/// The `Idempotency-Key` header: absent, or 1 to 255 visible ASCII characters.
fn idempotency_key(headers: &HeaderMap) -> Result<Option<String>, AppError> {
    let Some(value) = headers.get(IDEMPOTENCY_KEY) else {
        return Ok(None);
    };
    match value.to_str() {
        Ok(key)
            if !key.is_empty() && key.len() <= 255 && key.bytes().all(|b| b.is_ascii_graphic()) =>
        {
            Ok(Some(key.to_owned()))
        }
        _ => Err(AppError::bad_request(
            "invalid_idempotency_key",
            "Idempotency-Key must be 1 to 255 visible ASCII characters",
        )),
    }
}
