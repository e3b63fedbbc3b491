//! The `/api/v1` REST subset, with Forgejo's status codes and error bodies.

pub mod admin;
pub mod oauth_apps;
pub mod repos;
pub mod tokens;
pub mod users;
pub mod version;

use axum::body::Body;
use axum::extract::State;
use axum::http::header;
use axum::response::Response;
use axum::routing::{delete, get, patch, post};
use axum::Router;
use serde::de::DeserializeOwned;

use crate::error::{ApiError, ApiErrorMarker};
use crate::AppState;

/// Routes under `/api/v1`.
pub fn router() -> Router<AppState> {
    Router::new()
        .route("/api/v1/version", get(version::get_version))
        .route("/api/v1/user", get(users::get_current))
        .route("/api/v1/users/{username}", get(users::get_user))
        .route(
            "/api/v1/users/{username}/tokens",
            get(tokens::list_tokens).post(tokens::create_token),
        )
        .route(
            "/api/v1/users/{username}/tokens/{token}",
            delete(tokens::delete_token),
        )
        .route("/api/v1/admin/users", post(admin::create_user))
        .route(
            "/api/v1/admin/users/{username}",
            patch(admin::edit_user).delete(admin::delete_user),
        )
        .route(
            "/api/v1/user/applications/oauth2",
            get(oauth_apps::list_apps).post(oauth_apps::create_app),
        )
        .route(
            "/api/v1/user/applications/oauth2/{id}",
            get(oauth_apps::get_app)
                .patch(oauth_apps::update_app)
                .delete(oauth_apps::delete_app),
        )
        .route(
            "/api/v1/user/repos",
            get(repos::list_my_repos).post(repos::create_my_repo),
        )
        .route("/api/v1/{*rest}", axum::routing::any(not_found))
        .route("/api/v1", axum::routing::any(not_found))
}

async fn not_found() -> ApiError {
    ApiError::not_found("The target couldn't be found.", vec![])
}

/// Adds Forgejo's `url` (the swagger URL) to API error bodies; see `ApiErrorMarker`.
pub async fn fill_error_url(State(state): State<AppState>, mut resp: Response) -> Response {
    let Some(marker) = resp.extensions().get::<ApiErrorMarker>().cloned() else {
        return resp;
    };
    if marker.bare {
        return resp;
    }
    let mut body = serde_json::Map::new();
    if let Some(errors) = marker.errors {
        body.insert("errors".into(), errors.into());
    }
    body.insert("message".into(), marker.message.into());
    body.insert("url".into(), state.config.swagger_url().into());
    let bytes = serde_json::Value::Object(body).to_string();
    resp.headers_mut().remove(header::CONTENT_LENGTH);
    *resp.body_mut() = Body::from(bytes);
    resp
}

/// Decodes a JSON request body like Forgejo's `bind`: any decoding failure is a 422 binding error.
/// An empty body binds as `{}` so that missing required fields are reported as such.
pub fn bind<T: DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    let body = if body.iter().all(u8::is_ascii_whitespace) {
        b"{}".as_slice()
    } else {
        body
    };
    serde_json::from_slice(body).map_err(|e| ApiError::unprocessable(format!("[]: Json: {e}")))
}

/// `page`/`limit` query parameters (1-based page; Forgejo's default page size is 30, max 50).
#[derive(Debug, Default, serde::Deserialize)]
pub struct Paging {
    pub page: Option<i64>,
    pub limit: Option<i64>,
}

impl Paging {
    pub fn limit_offset(&self) -> (i64, i64) {
        let limit = match self.limit {
            Some(l) if l > 0 => l.min(50),
            _ => 30,
        };
        let page = self.page.filter(|p| *p > 0).unwrap_or(1);
        (limit, (page - 1) * limit)
    }
}
