//! The HTTP surface of a Hero service socket: `POST /rpc`, `GET /openrpc.json`, `GET /health`,
//! `GET /.well-known/heroservice.json`. Thin: everything else is in the registry and the core.

use std::sync::Arc;

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use hero_os_tfgrid_deployer_sdk::jsonrpc;
use hero_os_tfgrid_deployer_sdk::{ErrorKind, RpcError};
use http_body_util::BodyExt;
use serde_json::{json, Value};

use crate::audit::Actor;
use crate::rpc::{Caller, Registry};

/// Header through which the SSO edge (or the trusted admin dashboard) names the acting person.
pub const ACTING_USER_HEADER: &str = "x-hero-user";

#[derive(Clone)]
struct AppState {
    registry: Registry,
    openrpc: Arc<Bytes>,
    local: bool,
    max_body: usize,
}

/// The router for one listener. `local` is true for the unix socket.
pub fn router(registry: Registry, openrpc: &Value, local: bool, max_body: usize) -> Router {
    let state = AppState {
        registry,
        openrpc: Arc::new(Bytes::from(openrpc.to_string())),
        local,
        max_body,
    };
    Router::new()
        .route("/rpc", post(rpc))
        .route("/openrpc.json", get(openrpc_doc))
        .route("/health", get(health))
        .route("/.well-known/heroservice.json", get(heroservice))
        .with_state(state)
}

/// Who is acting. Over the unix socket the caller is a local process the file permissions let
/// in (the operator's CLI, the dashboard behind the SSO edge), so its `X-Hero-User` is taken as
/// said. Over TCP nothing proves the header came from the SSO edge (the deployer does not verify
/// hero_proxy's signed assertion), so a name given there is recorded as `unverified:<name>` and
/// never grants anything: TCP serves only reads (`Method::READS`, enforced in `rpc::Registry`).
fn actor(headers: &HeaderMap, local: bool) -> Actor {
    let named = headers
        .get(ACTING_USER_HEADER)
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
        .filter(|v| !v.is_empty() && v.len() <= 128 && v.chars().all(|c| c.is_ascii_graphic()));
    match named {
        Some(user) if local => Actor(user.to_owned()),
        Some(user) => Actor(format!("unverified:{user}")),
        None if local => Actor::local("operator"),
        None => Actor("anonymous".into()),
    }
}

async fn rpc(State(state): State<AppState>, headers: HeaderMap, body: Body) -> Response {
    let limited = http_body_util::Limited::new(body, state.max_body);
    let bytes = match limited.collect().await {
        Ok(collected) => collected.to_bytes(),
        Err(e) => {
            let too_large = e
                .downcast_ref::<http_body_util::LengthLimitError>()
                .is_some();
            let (status, message) = if too_large {
                (
                    StatusCode::PAYLOAD_TOO_LARGE,
                    format!("request body exceeds {} bytes", state.max_body),
                )
            } else {
                (
                    StatusCode::BAD_REQUEST,
                    format!("cannot read request body: {e}"),
                )
            };
            let error = jsonrpc::Response::failure(
                Value::Null,
                RpcError::new(ErrorKind::InvalidRequest, message),
            );
            return (
                status,
                json_response(&serde_json::to_value(error).unwrap_or_default()),
            )
                .into_response();
        }
    };
    let caller = Caller {
        actor: actor(&headers, state.local),
        local: state.local,
    };
    match state.registry.handle_body(&caller, &bytes).await {
        Some(v) => json_response(&v).into_response(),
        None => StatusCode::NO_CONTENT.into_response(),
    }
}

fn json_response(v: &Value) -> Response {
    ([(header::CONTENT_TYPE, "application/json")], v.to_string()).into_response()
}

async fn openrpc_doc(State(state): State<AppState>) -> Response {
    (
        [(header::CONTENT_TYPE, "application/json")],
        (*state.openrpc).clone(),
    )
        .into_response()
}

async fn health() -> Response {
    json_response(&json!({
        "status": "ok",
        "service": crate::config::SERVICE,
        "version": env!("CARGO_PKG_VERSION"),
    }))
}

async fn heroservice() -> Response {
    json_response(&json!({
        "name": crate::config::SERVICE,
        "version": env!("CARGO_PKG_VERSION"),
        "protocol": "openrpc",
        "rpc": "/rpc",
        "openrpc": "/openrpc.json",
        "health": "/health",
        "description": "Hands out personal Hero OS demo VMs on the ThreeFold Grid",
    }))
}
