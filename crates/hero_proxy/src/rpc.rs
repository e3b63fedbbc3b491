//! Admin OpenRPC API (JSON-RPC 2.0 over HTTP) on `$HERO_SOCKET_DIR/hero_proxy/rpc.sock`, 0600: whoever can open the
//! socket is an operator. `POST /` (JSON-RPC), `GET /openrpc.json`, `GET /health`, and `rpc.discover`.

use std::future::Future;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::PathBuf;
use std::sync::Arc;

use axum::extract::State;
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::{json, Value};
use tokio::net::UnixListener;
use tokio::sync::watch;

use crate::app::{client_secret_slot, App};
use crate::error::{ProxyError, Result};
use crate::store::ProviderRow;

/// (method, summary, params) — the single table both dispatch and the OpenRPC document are checked against.
const METHODS: &[(&str, &str, &[&str])] = &[
    ("users.list", "All users", &[]),
    (
        "users.get",
        "One user with groups and claims",
        &["username"],
    ),
    (
        "users.set_admin",
        "Set is_admin (keeps the admin group in sync)",
        &["username", "admin"],
    ),
    (
        "users.set_context",
        "Set the user's context id (X-Hero-Context; integer, or null to clear); applies on the next request",
        &["username", "context"],
    ),
    (
        "users.set_disabled",
        "Disable (revokes sessions) or enable a user",
        &["username", "disabled"],
    ),
    ("groups.list", "All groups", &[]),
    ("groups.create", "Create a group", &["name"]),
    ("groups.delete", "Delete a group", &["name"]),
    ("groups.members", "Members of a group", &["name"]),
    (
        "groups.add_user",
        "Add a user to a group",
        &["group", "username"],
    ),
    (
        "groups.remove_user",
        "Remove a user from a group",
        &["group", "username"],
    ),
    (
        "groups.add_group",
        "Nest a group in a group",
        &["group", "member"],
    ),
    (
        "groups.remove_group",
        "Un-nest a group",
        &["group", "member"],
    ),
    (
        "groups.grant_role",
        "Grant a role to a group",
        &["group", "role"],
    ),
    (
        "groups.revoke_role",
        "Revoke a role from a group",
        &["group", "role"],
    ),
    ("roles.list", "Roles with their claims", &[]),
    ("roles.create", "Create a role", &["name"]),
    ("roles.delete", "Delete a role", &["name"]),
    (
        "roles.add_claim",
        "Add a claim to a role (grammar and reserved prefixes validated)",
        &["role", "claim"],
    ),
    (
        "roles.remove_claim",
        "Remove a claim from a role",
        &["role", "claim"],
    ),
    ("routes.list", "Live routes (config seed + RPC edits)", &[]),
    (
        "routes.set",
        "Add or replace a route by id (persisted; wins over the config file; applies on the next request)",
        &["id", "host", "path", "upstream", "policy", "pass_token"],
    ),
    (
        "routes.remove",
        "Remove a route by id (persisted; false if none)",
        &["id"],
    ),
    (
        "oauth.list_providers",
        "Providers (never their secrets)",
        &[],
    ),
    (
        "oauth.set_provider",
        "Create or update a provider",
        &["id", "issuer", "client_id", "client_secret", "scope"],
    ),
    ("sessions.list", "Live sessions (hashed ids)", &[]),
    (
        "sessions.revoke",
        "Revoke one session by id hash",
        &["id_hash"],
    ),
    (
        "sessions.revoke_user",
        "Revoke every session of a user",
        &["username"],
    ),
];

/// The OpenRPC document.
pub fn openrpc_document() -> Value {
    let methods: Vec<Value> = METHODS
        .iter()
        .chain(std::iter::once(&("rpc.discover", "This document", &[][..])))
        .map(|(name, summary, params)| {
            json!({
                "name": name,
                "summary": summary,
                "paramStructure": "by-name",
                "params": params.iter().map(|p| json!({
                    "name": p,
                    "required": !matches!(*p, "client_secret" | "scope" | "host" | "pass_token"),
                    "schema": { "type": match *p {
                        "admin" | "disabled" | "pass_token" => json!("boolean"),
                        "context" => json!(["integer", "null"]),
                        _ => json!("string"),
                    } }
                })).collect::<Vec<_>>(),
                "result": { "name": "result", "schema": {} }
            })
        })
        .collect();
    json!({
        "openrpc": "1.2.6",
        "info": { "title": "hero_proxy admin API", "version": env!("CARGO_PKG_VERSION") },
        "methods": methods
    })
}

fn p_str<'a>(p: &'a Value, k: &str) -> Result<&'a str> {
    p.get(k)
        .and_then(Value::as_str)
        .ok_or_else(|| ProxyError::Invalid(format!("missing string param {k}")))
}

fn p_bool(p: &Value, k: &str) -> Result<bool> {
    p.get(k)
        .and_then(Value::as_bool)
        .ok_or_else(|| ProxyError::Invalid(format!("missing boolean param {k}")))
}

fn user(app: &App, p: &Value) -> Result<crate::store::User> {
    let name = p_str(p, "username")?;
    app.store
        .user_by_name(name)?
        .ok_or_else(|| ProxyError::NotFound(format!("user {name}")))
}

/// Executes one method.
pub async fn call(app: &App, method: &str, p: &Value) -> Result<Value> {
    let s = &app.store;
    let changed = |v: Value| {
        app.sessions.bump_generation();
        Ok(v)
    };
    match method {
        "rpc.discover" => Ok(openrpc_document()),
        "users.list" => Ok(json!(s.users()?)),
        "users.get" => {
            let u = user(app, p)?;
            let (groups, claims) = s.claims_for(&u)?;
            Ok(json!({ "user": u, "groups": groups, "claims": claims }))
        }
        "users.set_admin" => {
            let u = user(app, p)?;
            let admin = p_bool(p, "admin")?;
            s.set_admin(u.id, admin)?;
            changed(json!(true))
        }
        "users.set_context" => {
            let u = user(app, p)?;
            let context = match p.get("context") {
                Some(Value::Null) => None,
                Some(v) => Some(v.as_i64().ok_or_else(|| {
                    ProxyError::Invalid("param context must be an integer or null".into())
                })?),
                None => return Err(ProxyError::Invalid("missing param context".into())),
            };
            s.set_context(u.id, context)?;
            changed(json!(true))
        }
        "users.set_disabled" => {
            let u = user(app, p)?;
            let disabled = p_bool(p, "disabled")?;
            s.set_disabled(u.id, disabled)?;
            if disabled {
                app.sessions.revoke_user(u.id, false)?;
            }
            changed(json!(true))
        }
        "groups.list" => Ok(json!(s.groups()?)),
        "groups.create" => {
            s.create_group(p_str(p, "name")?)?;
            changed(json!(true))
        }
        "groups.delete" => {
            let r = s.delete_group(p_str(p, "name")?)?;
            changed(json!(r))
        }
        "groups.members" => Ok(json!(s
            .group_members(p_str(p, "name")?)?
            .into_iter()
            .map(|(k, m)| json!({ "kind": k, "name": m }))
            .collect::<Vec<_>>())),
        "groups.add_user" => {
            let u = user(app, p)?;
            s.add_user_to_group(p_str(p, "group")?, u.id)?;
            changed(json!(true))
        }
        "groups.remove_user" => {
            let u = user(app, p)?;
            let r = s.remove_user_from_group(p_str(p, "group")?, u.id)?;
            changed(json!(r))
        }
        "groups.add_group" => {
            s.add_group_to_group(p_str(p, "group")?, p_str(p, "member")?)?;
            changed(json!(true))
        }
        "groups.remove_group" => {
            let r = s.remove_group_from_group(p_str(p, "group")?, p_str(p, "member")?)?;
            changed(json!(r))
        }
        "groups.grant_role" => {
            s.grant_role(p_str(p, "group")?, p_str(p, "role")?)?;
            changed(json!(true))
        }
        "groups.revoke_role" => {
            let r = s.revoke_role(p_str(p, "group")?, p_str(p, "role")?)?;
            changed(json!(r))
        }
        "roles.list" => Ok(json!(s
            .roles()?
            .into_iter()
            .map(|(n, c)| json!({ "name": n, "claims": c }))
            .collect::<Vec<_>>())),
        "roles.create" => {
            s.create_role(p_str(p, "name")?)?;
            changed(json!(true))
        }
        "roles.delete" => {
            let r = s.delete_role(p_str(p, "name")?)?;
            changed(json!(r))
        }
        "roles.add_claim" => {
            s.add_role_claim(p_str(p, "role")?, p_str(p, "claim")?)?;
            changed(json!(true))
        }
        "roles.remove_claim" => {
            let r = s.remove_role_claim(p_str(p, "role")?, p_str(p, "claim")?)?;
            changed(json!(r))
        }
        "routes.list" => {
            let routes = app.routes.read().unwrap_or_else(|e| e.into_inner()).clone();
            Ok(json!(routes
                .all()
                .iter()
                .map(|r| json!({
                    "id": r.id, "host": r.host, "path": r.path, "upstream": r.upstream.describe(),
                    "policy": r.policy.to_string(), "pass_token": r.pass_token
                }))
                .collect::<Vec<_>>()))
        }
        "routes.set" => {
            let opt_str = |k: &str| -> Result<Option<String>> {
                match p.get(k) {
                    None | Some(Value::Null) => Ok(None),
                    Some(Value::String(v)) => Ok(Some(v.clone())),
                    Some(_) => Err(ProxyError::Invalid(format!("param {k} must be a string"))),
                }
            };
            let pass_token = match p.get("pass_token") {
                None | Some(Value::Null) => false,
                Some(v) => v.as_bool().ok_or_else(|| {
                    ProxyError::Invalid("param pass_token must be a boolean".into())
                })?,
            };
            let r = app.set_route(&crate::config::RouteConfig {
                id: Some(p_str(p, "id")?.to_owned()),
                host: opt_str("host")?,
                path: p_str(p, "path")?.to_owned(),
                upstream: p_str(p, "upstream")?.to_owned(),
                policy: p_str(p, "policy")?.to_owned(),
                context: opt_str("context")?, // refused by Route::from_config with the reason
                pass_token,
            })?;
            Ok(json!({ "id": r.id }))
        }
        "routes.remove" => Ok(json!(app.remove_route(p_str(p, "id")?)?)),
        "oauth.list_providers" => Ok(json!(s.providers()?)),
        "oauth.set_provider" => {
            let id = p_str(p, "id")?;
            let row = ProviderRow {
                id: id.to_owned(),
                issuer: p_str(p, "issuer")?.to_owned(),
                client_id: p_str(p, "client_id")?.to_owned(),
                scope: p
                    .get("scope")
                    .and_then(Value::as_str)
                    .unwrap_or(crate::oidc::FORGE_SCOPE)
                    .to_owned(),
            };
            // Validate the id before anything is written.
            crate::oidc::Provider::new(&row.id, &row.issuer, &row.client_id, None, &row.scope)?;
            if let Some(sec) = p.get("client_secret").and_then(Value::as_str) {
                app.secrets.set(&client_secret_slot(id), sec).await?;
            }
            s.upsert_provider(&row)?;
            app.reload_providers().await?;
            Ok(json!(true))
        }
        "sessions.list" => Ok(json!(s.sessions()?)),
        "sessions.revoke" => Ok(json!(app.sessions.revoke(p_str(p, "id_hash")?)?)),
        "sessions.revoke_user" => {
            let u = user(app, p)?;
            Ok(json!(app.sessions.revoke_user(u.id, false)?))
        }
        other => Err(ProxyError::NotFound(format!("method {other}"))),
    }
}

async fn handle(State(app): State<Arc<App>>, Json(req): Json<Value>) -> Json<Value> {
    let id = req.get("id").cloned().unwrap_or(Value::Null);
    let Some(method) = req.get("method").and_then(Value::as_str) else {
        return Json(
            json!({"jsonrpc":"2.0","id":id,"error":{"code":-32600,"message":"invalid request"}}),
        );
    };
    let params = req.get("params").cloned().unwrap_or(json!({}));
    let known = method == "rpc.discover" || METHODS.iter().any(|(m, _, _)| *m == method);
    if !known {
        return Json(
            json!({"jsonrpc":"2.0","id":id,"error":{"code":-32601,"message":"method not found"}}),
        );
    }
    match call(&app, method, &params).await {
        Ok(result) => Json(json!({"jsonrpc":"2.0","id":id,"result":result})),
        Err(e) => {
            let code = match e {
                ProxyError::Invalid(_) => -32602,
                _ => -32000,
            };
            Json(
                json!({"jsonrpc":"2.0","id":id,"error":{"code":code,"message":e.to_string(),"data":{"code":e.code()}}}),
            )
        }
    }
}

/// The RPC router (tests drive it with `oneshot`).
pub fn router(app: Arc<App>) -> Router {
    Router::new()
        .route("/", post(handle))
        .route("/rpc", post(handle))
        .route("/openrpc.json", get(|| async { Json(openrpc_document()) }))
        .route("/health", get(|| async { Json(json!({"status":"ok"})) }))
        .with_state(app)
}

/// Binds the socket (replacing a stale one) and returns the serving future.
pub fn serve(
    app: Arc<App>,
    path: PathBuf,
    mut stop: watch::Receiver<bool>,
) -> Result<impl Future<Output = ()> + Send> {
    if let Some(dir) = path.parent() {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)?;
    }
    match std::fs::remove_file(&path) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e.into()),
    }
    let listener = UnixListener::bind(&path)?;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))?;
    let router = router(app);
    Ok(async move {
        let _ = axum::serve(listener, router)
            .with_graceful_shutdown(async move {
                let _ = stop.changed().await;
            })
            .await;
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn document_lists_every_method() {
        let d = openrpc_document();
        let names: Vec<&str> = d["methods"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["name"].as_str().unwrap())
            .collect();
        for (m, _, _) in METHODS {
            assert!(names.contains(m));
        }
        assert!(names.contains(&"rpc.discover"));
        assert!(names.contains(&"roles.add_claim"));
        assert!(names.contains(&"oauth.set_provider"));
        assert!(names.contains(&"routes.set"));
        assert!(names.contains(&"routes.remove"));
    }
}
