//! Errors of page handlers, rendered as an HTML page with the right status.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use hero_os_tfgrid_deployer_sdk::{ClientError, ErrorKind};

use crate::pages::errors;

#[derive(Debug, thiserror::Error)]
pub enum PageError {
    /// The deployer server answered with an error or could not be reached.
    #[error(transparent)]
    Sdk(#[from] ClientError),
    /// A form was posted without a valid CSRF token.
    #[error(
        "this form has expired or did not come from this dashboard; reload the page and try again"
    )]
    Csrf,
    /// Malformed input that the page cannot show a form for.
    #[error("{0}")]
    BadRequest(String),
}

impl PageError {
    pub fn status(&self) -> StatusCode {
        match self {
            PageError::Sdk(e) => match e.kind() {
                Some(ErrorKind::NotFound) => StatusCode::NOT_FOUND,
                Some(ErrorKind::InvalidParams | ErrorKind::InvalidUsername) => {
                    StatusCode::UNPROCESSABLE_ENTITY
                }
                Some(
                    ErrorKind::FailedPrecondition
                    | ErrorKind::JobConflict
                    | ErrorKind::Refused
                    | ErrorKind::AlreadyExists
                    | ErrorKind::ForgeConflict,
                ) => StatusCode::CONFLICT,
                Some(ErrorKind::Forbidden) => StatusCode::FORBIDDEN,
                Some(ErrorKind::MethodNotFound) => StatusCode::NOT_IMPLEMENTED,
                Some(_) => StatusCode::BAD_GATEWAY,
                None => StatusCode::BAD_GATEWAY,
            },
            PageError::Csrf => StatusCode::FORBIDDEN,
            PageError::BadRequest(_) => StatusCode::BAD_REQUEST,
        }
    }
}

impl IntoResponse for PageError {
    fn into_response(self) -> Response {
        let status = self.status();
        if status.is_server_error() {
            tracing::warn!(error = %self, "page failed");
        }
        errors::page_error(status, &self.to_string()).into_response()
    }
}

pub type PageResult<T> = Result<T, PageError>;
