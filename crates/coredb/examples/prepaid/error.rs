//! The service's errors and the HTTP responses they become.

use axum::extract::rejection::{JsonRejection, PathRejection};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use coredb::axum::DbError;

/// Everything a handler can fail with. Database errors keep coredb's mapping (see
/// `coredb::axum::ErrorResponses`: 409 for conflicts such as a unique violation, 422 for a
/// refused value, 503 with `Retry-After` when the database is unreachable or busy, 500
/// otherwise, never leaking SQL or values); domain errors get their own status and a stable
/// `code`.
///
/// Any of them makes the response non-2xx, so `TxLayer` rolls the request's transaction back:
/// a handler may write first and fail later without leaving half of its work behind.
#[derive(Debug)]
pub enum AppError {
    /// A database error.
    Db(DbError),
    /// 400: the request is malformed (bad id, missing header, unreadable JSON).
    BadRequest {
        /// Machine-readable reason.
        code: &'static str,
        /// For people.
        message: String,
    },
    /// 404: no such user or account.
    NotFound(String),
    /// 409: the request is valid but the current state refuses it.
    Conflict {
        /// Machine-readable reason.
        code: &'static str,
        /// For people.
        message: String,
    },
    /// 422: a field's value is not acceptable.
    Unprocessable {
        /// Machine-readable reason.
        code: &'static str,
        /// For people.
        message: String,
    },
}

impl AppError {
    /// A 400 with `code` and `message`.
    pub fn bad_request(code: &'static str, message: impl Into<String>) -> Self {
        AppError::BadRequest {
            code,
            message: message.into(),
        }
    }

    /// A 422 with `code` and `message`.
    pub fn unprocessable(code: &'static str, message: impl Into<String>) -> Self {
        AppError::Unprocessable {
            code,
            message: message.into(),
        }
    }
}

impl From<coredb::Error> for AppError {
    fn from(err: coredb::Error) -> Self {
        AppError::Db(DbError(err))
    }
}

impl From<DbError> for AppError {
    fn from(err: DbError) -> Self {
        AppError::Db(err)
    }
}

impl From<JsonRejection> for AppError {
    fn from(rejection: JsonRejection) -> Self {
        // axum's own statuses: 400 for syntax, 415 for a missing content type, 422 for a body
        // of the wrong shape; only the body becomes JSON like every other error here.
        let message = rejection.body_text();
        match rejection.status() {
            StatusCode::UNPROCESSABLE_ENTITY => AppError::unprocessable("invalid_body", message),
            _ => AppError::bad_request("invalid_body", message),
        }
    }
}

impl From<PathRejection> for AppError {
    fn from(rejection: PathRejection) -> Self {
        AppError::bad_request("invalid_id", rejection.body_text())
    }
}

impl IntoResponse for AppError {
    fn into_response(self) -> Response {
        let (status, code, message) = match self {
            AppError::Db(err) => return err.into_response(),
            AppError::BadRequest { code, message } => (StatusCode::BAD_REQUEST, code, message),
            AppError::NotFound(message) => (StatusCode::NOT_FOUND, "not_found", message),
            AppError::Conflict { code, message } => (StatusCode::CONFLICT, code, message),
            AppError::Unprocessable { code, message } => {
                (StatusCode::UNPROCESSABLE_ENTITY, code, message)
            }
        };
        (
            status,
            Json(serde_json::json!({ "error": message, "code": code })),
        )
            .into_response()
    }
}
