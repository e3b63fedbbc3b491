//! The Forge client against a misbehaving Forge: a STAND-IN HTTP server (in this test) that
//! answers 500, hangs, or rejects the token, with the status codes and bodies Forgejo uses. Checks
//! retries only on 5xx/connection errors, timeouts, and errors that say what to do.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Json, Router};
use hero_os_tfgrid_deployer_server::clock::OsRandom;
use hero_os_tfgrid_deployer_server::forge::http::{AdminTokenSource, HttpForge, RetryPolicy};
use hero_os_tfgrid_deployer_server::forge::{ForgeApi, ForgeError, NewForgeUser};
use hero_secrets::{MemorySecretStore, SecretStore, SecretValue};
use serde_json::json;

async fn serve(app: Router) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    url
}

async fn client(url: &str, timeout: Duration) -> HttpForge {
    let store = Arc::new(MemorySecretStore::new());
    store
        .set("deployer/forge_admin_token", "admin-token")
        .await
        .unwrap();
    HttpForge::new(
        url,
        timeout,
        AdminTokenSource::Slot(store),
        RetryPolicy {
            attempts: 3,
            base_delay: Duration::from_millis(10),
            max_delay: Duration::from_millis(50),
        },
        Arc::new(OsRandom),
    )
    .unwrap()
}

/// A Forge whose user lookup always answers `status` with `message`; counts the calls.
async fn user_lookup_answering(
    status: StatusCode,
    message: &'static str,
) -> (String, Arc<AtomicUsize>) {
    let hits = Arc::new(AtomicUsize::new(0));
    let h = hits.clone();
    let url = serve(Router::new().route(
        "/api/v1/users/{name}",
        get(move || {
            let h = h.clone();
            async move {
                h.fetch_add(1, Ordering::SeqCst);
                (status, Json(json!({"message": message, "url": ""})))
            }
        }),
    ))
    .await;
    (url, hits)
}

#[tokio::test]
async fn server_errors_are_retried_then_reported() {
    let (url, hits) = user_lookup_answering(StatusCode::INTERNAL_SERVER_ERROR, "boom").await;
    let forge = client(&url, Duration::from_secs(5)).await;
    let err = forge.user_exists("alice").await.unwrap_err();
    assert!(
        matches!(
            err,
            ForgeError::ServerError {
                status: 500,
                attempts: 3,
                ..
            }
        ),
        "{err}"
    );
    assert_eq!(hits.load(Ordering::SeqCst), 3);
    assert!(err.to_string().contains("try again later"));
}

#[tokio::test]
async fn client_errors_are_not_retried() {
    let (url, hits) = user_lookup_answering(StatusCode::UNAUTHORIZED, "token is required").await;
    let forge = client(&url, Duration::from_secs(5)).await;
    let err = forge.user_exists("alice").await.unwrap_err();
    assert!(
        matches!(err, ForgeError::AdminTokenRejected { status: 401, .. }),
        "{err}"
    );
    assert_eq!(hits.load(Ordering::SeqCst), 1);
    assert!(
        err.to_string()
            .contains("secret set deployer/forge_admin_token"),
        "{err}"
    );
}

#[tokio::test]
async fn a_hanging_forge_times_out() {
    let url = serve(Router::new().route(
        "/api/v1/users/{name}",
        get(|| async {
            std::future::pending::<()>().await;
            "never"
        }),
    ))
    .await;
    let forge = client(&url, Duration::from_millis(300)).await;
    let err = forge.user_exists("alice").await.unwrap_err();
    match &err {
        ForgeError::Unreachable { reason, .. } => assert!(reason.contains("timed out"), "{err}"),
        other => panic!("expected a timeout, got {other}"),
    }
}

#[tokio::test]
async fn a_closed_port_is_unreachable() {
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", closed.local_addr().unwrap());
    drop(closed);
    let forge = client(&url, Duration::from_secs(2)).await;
    let err = forge.version().await.unwrap_err();
    assert!(matches!(err, ForgeError::Unreachable { .. }), "{err}");
    assert!(err.to_string().contains("forge.url"));
}

#[tokio::test]
async fn forgejo_422_messages_map_to_conflict_reasons_and_secrets_stay_out_of_errors() {
    let url = serve(Router::new().route(
        "/api/v1/admin/users",
        post(|Json(body): Json<serde_json::Value>| async move {
            let message = match body["username"].as_str() {
                Some("taken") => "user already exists [name: taken]",
                Some("mailtaken") => "e-mail already in use [email: x@y.z]",
                _ => "name is reserved [name: admin]",
            };
            (
                StatusCode::UNPROCESSABLE_ENTITY,
                Json(json!({"message": message, "url": ""})),
            )
        }),
    ))
    .await;
    let forge = client(&url, Duration::from_secs(2)).await;
    let password = SecretValue::new("Sup3rSecretPassw0rdValue1234567X");
    for (name, reason) in [
        ("taken", "NameTaken"),
        ("mailtaken", "EmailTaken"),
        ("admin", "NameReserved"),
    ] {
        let err = forge
            .create_user(&NewForgeUser {
                username: name,
                full_name: None,
                email: "x@y.z",
                password: &password,
            })
            .await
            .unwrap_err();
        assert!(format!("{err:?}").contains(reason), "{err:?}");
        assert!(!format!("{err} {err:?}").contains(password.expose()));
    }
}
