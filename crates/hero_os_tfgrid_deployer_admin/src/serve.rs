//! Service endpoints, security headers, and the listeners (unix socket and optional TCP).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use axum::extract::Request;
use axum::http::{header, HeaderValue};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json, Router};
use serde_json::json;

use crate::auth::UnixPeer;

/// Name of the service (socket directory).
pub const SERVICE: &str = "hero_os_tfgrid_deployer";

pub async fn health() -> Response {
    Json(json!({
        "status": "ok",
        "service": "hero_os_tfgrid_deployer_admin",
        "version": env!("CARGO_PKG_VERSION"),
    }))
    .into_response()
}

pub async fn heroservice() -> Response {
    Json(json!({
        "name": "hero_os_tfgrid_deployer_admin",
        "version": env!("CARGO_PKG_VERSION"),
        "protocol": "ui",
        "ui": "/",
        "health": "/health",
        "description": "Admin dashboard of the Hero OS ThreeFold Grid deployer",
    }))
    .into_response()
}

/// Conservative headers on every response. Scripts and styles come only from this origin.
pub async fn security_headers(req: Request, next: Next) -> Response {
    let mut resp = next.run(req).await;
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; \
             connect-src 'self'; frame-ancestors 'none'; form-action 'self'; base-uri 'none'",
        ),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    resp
}

/// `<socket_dir>/hero_os_tfgrid_deployer/admin.sock`.
pub fn admin_socket(socket_dir: &Path) -> PathBuf {
    socket_dir.join(SERVICE).join("admin.sock")
}

/// Errors of the listeners.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("cannot prepare the socket {path}: {source}")]
    Socket {
        path: String,
        source: std::io::Error,
    },
    #[error("another dashboard is already listening on {0}")]
    InUse(String),
    #[error("cannot listen on {addr}: {source}")]
    Tcp {
        addr: SocketAddr,
        source: std::io::Error,
    },
}

/// Binds the unix socket (0660, stale socket of a crashed run replaced).
pub async fn bind_unix(path: &Path) -> Result<tokio::net::UnixListener, ServeError> {
    use std::os::unix::fs::PermissionsExt;
    let err = |source| ServeError::Socket {
        path: path.display().to_string(),
        source,
    };
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(err)?;
    }
    if path.exists() {
        if tokio::net::UnixStream::connect(path).await.is_ok() {
            return Err(ServeError::InUse(path.display().to_string()));
        }
        std::fs::remove_file(path).map_err(err)?;
    }
    let listener = tokio::net::UnixListener::bind(path).map_err(err)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o660)).map_err(err)?;
    Ok(listener)
}

/// Serves `app` on the unix socket and, if given, a TCP listener, until `shutdown` resolves.
pub async fn run(
    app: Router,
    unix: Option<tokio::net::UnixListener>,
    tcp: Option<tokio::net::TcpListener>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let (tx, rx) = tokio::sync::watch::channel(false);
    let wait = move |mut rx: tokio::sync::watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|v| *v).await;
    };
    let mut tasks = tokio::task::JoinSet::new();
    if let Some(l) = unix {
        let app = app.clone().layer(Extension(UnixPeer));
        let stop = wait(rx.clone());
        tasks.spawn(async move { axum::serve(l, app).with_graceful_shutdown(stop).await });
    }
    if let Some(l) = tcp {
        let svc = app.into_make_service_with_connect_info::<SocketAddr>();
        let stop = wait(rx.clone());
        tasks.spawn(async move { axum::serve(l, svc).with_graceful_shutdown(stop).await });
    }
    tokio::spawn(async move {
        shutdown.await;
        let _ = tx.send(true);
    });
    let mut result = Ok(());
    while let Some(r) = tasks.join_next().await {
        if let Ok(Err(e)) = r {
            result = Err(e);
        }
    }
    result
}
