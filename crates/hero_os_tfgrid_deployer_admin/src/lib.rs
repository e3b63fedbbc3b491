//! The deployer's admin dashboard: server-rendered pages over the SDK, behind the SSO edge.
//!
//! * [`auth`]: identity from the edge's headers, the admin allowlist (re-read on every request).
//! * [`csrf`]: the token every state-changing form carries.
//! * [`pages`]: one module per page; [`sse`]: live job progress.
//! * [`assets`]: CSS and JS embedded in the binary.

pub mod assets;
pub mod auth;
pub mod csrf;
pub mod error;
pub mod layout;
pub mod once;
pub mod pages;
pub mod serve;
pub mod sse;
pub mod state;
pub mod time;

use axum::middleware;
use axum::routing::{get, post};
use axum::Router;

pub use state::AppState;

/// Every route of the dashboard.
pub fn router(state: AppState) -> Router {
    let protected = Router::new()
        .route("/", get(pages::users::redirect_home))
        .route(
            "/users",
            get(pages::users::list).post(pages::create_user::submit),
        )
        .route("/users/new", get(pages::create_user::form))
        .route("/users/batch", post(pages::batch::submit))
        .route("/batches", get(pages::batch::progress))
        .route("/users/{id}", get(pages::user_detail::show))
        .route("/users/{id}/deploy", post(pages::actions::deploy))
        .route("/users/{id}/repair", post(pages::actions::repair))
        .route("/users/{id}/redeploy", post(pages::actions::redeploy))
        .route("/users/{id}/extend", post(pages::actions::extend))
        .route(
            "/users/{id}/decommission",
            post(pages::actions::decommission),
        )
        .route(
            "/users/{id}/reveal-password",
            post(pages::actions::reveal_password),
        )
        .route("/users/{id}/delete", post(pages::actions::delete_user))
        .route("/users/{id}/forget-vm", post(pages::actions::forget_vm))
        .route(
            "/users/{id}/reset-password",
            post(pages::actions::reset_password),
        )
        .route("/jobs", get(pages::jobs::list))
        .route("/jobs/{id}", get(pages::jobs::show))
        .route("/jobs/{id}/cancel", post(pages::actions::cancel_job))
        .route("/jobs/{id}/retry", post(pages::actions::retry_job))
        .route("/jobs/{id}/events", get(sse::job_events))
        .route("/audit", get(pages::audit::list))
        .layer(middleware::map_response(pages::errors::rejection_page))
        .layer(middleware::from_fn_with_state(
            state.clone(),
            auth::require_admin,
        ));
    Router::new()
        .merge(protected)
        .route("/health", get(serve::health))
        .route("/.well-known/heroservice.json", get(serve::heroservice))
        .route("/assets/{name}", get(assets::serve))
        .fallback(pages::errors::not_found)
        .layer(middleware::from_fn_with_state(
            state.clone(),
            pages::errors::mode_scope,
        ))
        .layer(middleware::from_fn(serve::security_headers))
        .with_state(state)
}
