//! Error types. `ApiError` renders Forgejo's API error body (`{"message","url"}`, plus `"errors"` for
//! 404s) so that clients written against the real forge see the same shapes here.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;

/// Failures of the storage layer. Conflicts are their own variants because Forgejo reports them as
/// 422 (user, e-mail) or 400 (token name) with fixed texts that clients match on.
#[derive(Debug, thiserror::Error)]
pub enum DbError {
    #[error("sqlite: {0}")]
    Sqlite(#[from] rusqlite::Error),
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
    #[error("user already exists [name: {0}]")]
    UserExists(String),
    #[error("e-mail already in use [email: {0}]")]
    EmailInUse(String),
    #[error("access token name has been used already")]
    TokenNameUsed,
    /// Forgejo: 409 `The repository with the same name already exists.`
    #[error("repository already exists [name: {0}]")]
    RepoExists(String),
    #[error("stored data is corrupt: {0}")]
    Corrupt(String),
    #[error("database mutex poisoned by an earlier panic")]
    Poisoned,
}

/// Marker put in the response extensions so the `fill_error_url` middleware can add Forgejo's `url`
/// field (the swagger URL), which depends on the configured external URL that `ApiError` does not know.
#[derive(Clone, Debug)]
pub struct ApiErrorMarker {
    pub message: String,
    pub errors: Option<Vec<String>>,
    /// Forgejo's global auth 403s are written with a bare `{"message"}` map, without `url`.
    pub bare: bool,
}

/// An error as the Forgejo API reports it.
#[derive(Debug, Clone)]
pub struct ApiError {
    pub status: StatusCode,
    pub message: String,
    pub errors: Option<Vec<String>>,
    pub bare: bool,
}

impl ApiError {
    pub fn new(status: StatusCode, message: impl Into<String>) -> Self {
        Self {
            status,
            message: message.into(),
            errors: None,
            bare: false,
        }
    }
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, message)
    }
    pub fn unauthorized(message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, message)
    }
    pub fn forbidden(message: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, message)
    }
    pub fn unprocessable(message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNPROCESSABLE_ENTITY, message)
    }
    /// Forgejo's `ctx.NotFound(title, err)`: the title becomes `message`, the error text goes to `errors`.
    pub fn not_found(title: &str, errors: Vec<String>) -> Self {
        Self {
            status: StatusCode::NOT_FOUND,
            message: title.to_string(),
            errors: Some(errors),
            bare: false,
        }
    }
    /// The `{"message"}`-only body of Forgejo's global auth checks.
    pub fn bare(status: StatusCode, message: impl Into<String>) -> Self {
        Self {
            status,
            message: message.into(),
            errors: None,
            bare: true,
        }
    }
    pub fn internal(err: impl std::fmt::Display) -> Self {
        tracing::error!(error = %err, "internal error");
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, "internal server error")
    }
}

impl From<DbError> for ApiError {
    fn from(err: DbError) -> Self {
        match err {
            DbError::UserExists(_) | DbError::EmailInUse(_) => {
                ApiError::unprocessable(err.to_string())
            }
            DbError::TokenNameUsed => ApiError::bad_request(err.to_string()),
            DbError::RepoExists(_) => ApiError::new(
                StatusCode::CONFLICT,
                "The repository with the same name already exists.",
            ),
            other => ApiError::internal(other),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut body = serde_json::Map::new();
        body.insert("message".into(), self.message.clone().into());
        if let Some(errors) = &self.errors {
            body.insert("errors".into(), errors.clone().into());
        }
        let mut resp = (self.status, Json(serde_json::Value::Object(body))).into_response();
        resp.extensions_mut().insert(ApiErrorMarker {
            message: self.message,
            errors: self.errors,
            bare: self.bare,
        });
        resp
    }
}
